"""A consumer's /healthz over real HTTP, fed by the real runner on the session's Kafka broker:
green while the loop polls (idle polls included), 503 while a step hangs, green again after."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from fraudstream import health
from fraudstream.kafka_runner import BatchRunner, make_consumer, make_producer, wait_delivered
from fraudstream.local.paths import free_port
from fraudstream.topics import create_topics

from .conftest import wait_until

pytestmark = pytest.mark.integration

MAX_AGE_S = 3.0  # well above an idle poll (0.2 s), even on a loaded 2-core machine


def test_healthz_goes_503_while_the_loop_is_stuck_and_recovers(
    kafka_bootstrap: str, topics: dict[str, str]
) -> None:
    topic = topics["transactions"]
    create_topics(kafka_bootstrap, [topic], partitions=1, retention_ms=3600_000)
    port = free_port()
    server = health.serve(port, max_age_s=MAX_AGE_S, addr="127.0.0.1")
    url = f"http://127.0.0.1:{port}/healthz"

    entered, release = threading.Event(), threading.Event()

    def hanging_step(records: list) -> None:
        entered.set()
        release.wait(60)  # a hung scorer call, a deadlock: no progress, no beat

    stop = threading.Event()
    runner = BatchRunner(
        make_consumer(kafka_bootstrap, f"liveness-{uuid.uuid4().hex[:8]}"),
        topic,
        hanging_step,
        batch_size=10,
        max_wait_ms=50,
        commit_interval_ms=1000,
        stop=stop,
        idle_poll_ms=200,
    )
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        # joining the group blocks the first poll: judge the loop once it has its partition
        wait_until(lambda: runner.consumer.assignment(), timeout=30, what="the partition")
        # idle: nothing to consume, but every empty poll is progress
        end = time.monotonic() + 2 * MAX_AGE_S
        while time.monotonic() < end:
            assert httpx.get(url, timeout=5).status_code == 200
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200

        producer = make_producer(kafka_bootstrap)
        wait_delivered(producer, [producer.send(topic, key=b"k", value=b"{}")])
        producer.close()
        assert entered.wait(30), "the runner never picked the record up"
        wait_until(
            lambda: httpx.get(url, timeout=5).status_code == 503,
            timeout=MAX_AGE_S + 5,
            what="/healthz to report the stuck loop",
        )
        assert "stuck" in httpx.get(url, timeout=5).text

        release.set()
        wait_until(
            lambda: httpx.get(url, timeout=5).status_code == 200,
            timeout=10,
            what="/healthz to recover once the loop moves again",
        )
    finally:
        release.set()
        stop.set()
        thread.join(30)
        server.shutdown()
        server.server_close()
