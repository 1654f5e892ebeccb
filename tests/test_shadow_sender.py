"""The bridge's shadow sender (:class:`fraudstream.shadow.ShadowScorer`) in-process, against the
stub scorer in a thread and a fake producer: ``submit`` never waits, whatever the challenger does,
and what it loses is counted by reason."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import pytest
from streaming.stub_scorer import serve

from fraudstream.scored_transaction import ScoredTransaction
from fraudstream.shadow import ShadowScorer


class FakeFuture:
    def add_errback(self, *_args: Any) -> None:
        pass


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []

    def partitions_for(self, _topic: str) -> set[int]:
        return {0, 1, 2}

    def send(self, topic: str, key: bytes, value: bytes, partition: int) -> FakeFuture:
        self.sent.append((topic, value, partition))
        return FakeFuture()

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def items(n: int, start: int = 0) -> list:
    def finish(tx_id: str):
        def build(result: dict, scored_at: datetime) -> ScoredTransaction:
            return ScoredTransaction(
                **result,
                amount=10.0,
                category="c",
                merchant="m",
                event_time=datetime(2020, 1, 1),
                scored_at=scored_at,
            )

        return build

    out = []
    for i in range(start, start + n):
        tx_id = f"tx-{i}"
        body = json.dumps({"transaction_id": tx_id, "amount": 100.0 * (i % 20)}).encode()
        out.append((body, tx_id, finish(tx_id)))
    return out


def run(
    config: dict, batches: int, wait_s: float, paced: bool = False
) -> tuple[ShadowScorer, FakeProducer, float]:
    """Submit ``batches`` of 10 (``paced``: each once the queue is empty), wait up to
    ``wait_s`` for the queue to empty, close; the slowest ``submit``."""
    server = serve(**config)
    producer = FakeProducer()
    shadow = ShadowScorer(
        f"http://127.0.0.1:{server.server_address[1]}", producer, "shadow", 0.3, queue_size=2
    )
    slowest = 0.0
    try:
        for b in range(batches):
            while paced and not shadow.queue.empty():
                time.sleep(0.01)
            started = time.perf_counter()
            shadow.submit(items(10, b * 10))
            slowest = max(slowest, time.perf_counter() - started)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not shadow.queue.empty():
            time.sleep(0.02)
        time.sleep(0.05)
    finally:
        shadow.close(timeout_s=2)
        server.shutdown()
    return shadow, producer, slowest


def test_results_go_to_the_shadow_topic() -> None:
    shadow, producer, slowest = run({}, 5, 5, paced=True)
    assert shadow.scored == 50 and sum(shadow.dropped.values()) == 0
    values = [json.loads(v) for _, v, _ in producer.sent]
    assert sorted(v["transaction_id"] for v in values) == sorted(f"tx-{i}" for i in range(50))
    assert {t for t, _, _ in producer.sent} == {"shadow"}
    assert slowest < 0.05


@pytest.mark.parametrize(
    ("config", "reasons"),
    [
        ({"delay_s": 5.0}, {"timeout", "queue_full"}),
        ({"status": 500}, {"http_error"}),
        ({"status": 200, "body": b"[]"}, {"bad_answer"}),
    ],
    ids=["hanging", "http-500", "wrong-answer"],
)
def test_a_broken_challenger_loses_batches_never_time(config: dict, reasons: set[str]) -> None:
    batches = 20
    shadow, producer, slowest = run(config, batches, 1.5)
    assert slowest < 0.05, f"submit waited {slowest:.3f}s"
    assert producer.sent == [] and shadow.scored == 0
    lost = {reason for reason, count in shadow.dropped.items() if count}
    assert reasons <= lost <= reasons | {"queue_full", "shutdown"}, shadow.dropped
    assert sum(shadow.dropped.values()) == batches * 10, shadow.dropped
