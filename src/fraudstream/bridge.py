"""``fraudstream bridge``: transactions -> scorer ``POST /score_batch`` -> scoring (+ DLQ).

One consumer group on ``transactions``. For each batch (``BRIDGE_BATCH_SIZE`` records or
``BRIDGE_BATCH_MAX_WAIT_MS`` after the first) the step:

1. parses and validates every record with :class:`fraudstream.schema.Transaction`; records that
   can never succeed (not JSON, failing validation, or rejected one by one by the scorer with a
   4xx) go to the DLQ with their original bytes, the reason and the source offset;
2. scores the rest in one HTTP call (pooled connections, timeouts); while the scorer is down or
   answers 5xx it waits with exponential backoff and tries again, for as long as it takes;
3. produces one result per transaction to ``scoring`` (key = transaction_id) and waits until
   every record is acknowledged (acks=all, idempotent producer).

Only then are the batch's offsets marked done; :mod:`fraudstream.kafka_runner` commits them.
A crash between 3 and the commit re-scores the batch: the scorer is idempotent on
``transaction_id`` and the writer's insert ignores ids it already has, so nothing is doubled.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fraudstream.kafka_runner import ShutdownRequestedError, backoff_delays

log = logging.getLogger(__name__)

# Namespace for ids derived from (topic, partition, offset) when a record carries none: the same
# record always gets the same id, so a re-read does not create a second row.
_ID_NAMESPACE = uuid.UUID("6f1c4e2a-9b7d-4c53-8e1f-2a7b9c0d4e51")


def iso_utc(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


class ScorerRejectedError(Exception):
    """The scorer answered 4xx: the input itself is bad and retrying it cannot help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"scorer answered {status}: {detail}")
        self.status = status
        self.detail = detail


class ScorerClient:
    """``POST /score_batch`` with pooled connections, timeouts and unlimited patient retries."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float,
        backoff_max_s: float,
        stop: threading.Event,
        max_connections: int = 4,
        metrics: BridgeMetrics | None = None,
    ) -> None:
        import httpx

        self._httpx = httpx
        self.client = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 3.0)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"content-type": "application/json"},
        )
        self.backoff_max_s = backoff_max_s
        self.stop = stop
        self.metrics = metrics

    def close(self) -> None:
        self.client.close()

    def score_batch(self, bodies: list[bytes]) -> list[dict]:
        """Scores for the transaction JSON documents ``bodies``; retries until it gets them.

        Raises :class:`ScorerRejectedError` on a 4xx (other than 408/429) and
        :class:`ShutdownRequestedError` when shutdown is requested while waiting.
        """
        payload = b'{"transactions":[' + b",".join(bodies) + b"]}"
        delays = backoff_delays(0.1, self.backoff_max_s)
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                response = self.client.post("/score_batch", content=payload)
            except self._httpx.TransportError as err:  # refused, reset, timeout
                problem = f"{type(err).__name__}: {err}"
                kind = "scorer_unreachable"
            else:
                if self.metrics:
                    self.metrics.http_latency.observe(time.perf_counter() - started)
                status = response.status_code
                if status == 200:
                    results = response.json()
                    if not isinstance(results, list) or len(results) != len(bodies):
                        raise RuntimeError(
                            f"scorer returned {type(results).__name__} of "
                            f"{len(results) if isinstance(results, list) else '?'} "
                            f"results for {len(bodies)} transactions"
                        )
                    if attempt > 1:
                        log.info("scorer answered again after %d attempts", attempt)
                    return results
                if 400 <= status < 500 and status not in (408, 429):
                    raise ScorerRejectedError(status, response.text[:1000])
                problem = f"HTTP {status}: {response.text[:200]}"
                kind = f"scorer_http_{status}"
            if self.metrics:
                self.metrics.errors.labels(kind).inc()
                self.metrics.retries.inc()
            delay = next(delays)
            if attempt == 1 or attempt % 10 == 0:
                log.warning(
                    "scorer call failed (%s); retrying in %.1fs",
                    problem,
                    delay,
                    extra={"attempt": attempt},
                )
            if self.stop.wait(delay):
                raise ShutdownRequestedError("shutdown while waiting for the scorer")


@dataclass
class BridgeMetrics:
    errors: Any
    retries: Any
    http_latency: Any


@dataclass
class _Valid:
    record: Any
    body: bytes
    tx: Any  # Transaction
    transaction_id: str


class BridgeStep:
    """The business step of the bridge: ``step(records)`` scores and publishes one batch."""

    def __init__(
        self,
        scorer: ScorerClient,
        producer: Any,
        scoring_topic: str,
        dead_letters: Any,  # kafka_runner.DeadLetters
        metrics: Any = None,  # kafka_runner.ConsumerMetrics
    ) -> None:
        from fraudstream.schema import TIME_FORMAT, Transaction

        self.Transaction = Transaction
        self.time_format = TIME_FORMAT
        self.scorer = scorer
        self.producer = producer
        self.scoring_topic = scoring_topic
        self.dlq = dead_letters
        self.metrics = metrics

    def parse(self, record: Any) -> _Valid | tuple[str, str]:
        """A valid transaction, or (error_type, error) for a poison record."""
        from pydantic import ValidationError

        value = record.value
        if value is None:
            return ("empty", "record has no value")
        try:
            tx = self.Transaction.model_validate_json(value)
        except ValidationError as err:
            errors = err.errors(include_url=False, include_input=False)
            if errors and errors[0].get("type") == "json_invalid":
                return ("not_json", f"not JSON: {errors[0].get('msg')}")
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
            return ("invalid", detail)
        body = value
        if not tx.transaction_id:
            tx_id = str(
                uuid.uuid5(_ID_NAMESPACE, f"{record.topic}:{record.partition}:{record.offset}")
            )
            tx.transaction_id = tx_id
            doc = json.loads(value)
            doc["transaction_id"] = tx_id
            body = json.dumps(doc).encode()
        return _Valid(record, body, tx, tx.transaction_id)

    def __call__(self, records: list[Any]) -> None:
        valid: list[_Valid] = []
        poison: list[tuple[Any, str, str]] = []
        for record in records:
            parsed = self.parse(record)
            if isinstance(parsed, _Valid):
                valid.append(parsed)
            else:
                poison.append((record, *parsed))
        # Guard before any side effect: a batch that trips it stays uncommitted.
        self.dlq.check(len(records), len(poison))

        results, rejected = self._score(valid)
        if rejected:
            self.dlq.check(0, len(rejected))
        futures = [self.dlq.send(r, kind, err) for r, kind, err in poison]
        futures += [self.dlq.send(v.record, "scorer_rejected", err) for v, err in rejected]

        scored_at = iso_utc(time.time())
        # Keys are unique ids, so any stable hash spreads them; crc32 is C, murmur2 here is not.
        partitions = sorted(self.producer.partitions_for(self.scoring_topic))
        for item, result in results:
            key = item.transaction_id.encode()
            futures.append(
                self.producer.send(
                    self.scoring_topic,
                    key=key,
                    value=self._result_value(item, result, scored_at),
                    partition=partitions[zlib.crc32(key) % len(partitions)],
                )
            )
        from fraudstream.kafka_runner import wait_delivered

        wait_delivered(self.producer, futures)
        if self.metrics:
            self.metrics.messages_out.inc(len(results))

    def _result_value(self, item: _Valid, result: dict, scored_at: str) -> bytes:
        tx = item.tx
        return json.dumps(
            {
                "transaction_id": item.transaction_id,
                "score": result["score"],
                "fraud_flag": result["fraud_flag"],
                "threshold": result["threshold"],
                "model_version": result["model_version"],
                "reasons": result.get("reasons") or [],
                "amount": tx.amount,
                "category": tx.cat_id,
                "merchant": tx.merch,
                "event_time": tx.transaction_time.strftime(self.time_format),
                "produced_at": iso_utc(item.record.timestamp / 1000),
                "scored_at": scored_at,
            },
            separators=(",", ":"),
        ).encode()

    def _score(self, items: list[_Valid]) -> tuple[list[tuple[_Valid, dict]], list[tuple]]:
        """(item, result) pairs, and (item, reason) for items the scorer rejects one by one.

        A 4xx for a batch is narrowed down by halving until the rejected items are found, so
        one bad record never takes its batch-mates to the DLQ.
        """
        if not items:
            return [], []
        try:
            results = self.scorer.score_batch([i.body for i in items])
        except ScorerRejectedError as err:
            if len(items) == 1:
                return [], [(items[0], f"scorer {err.status}: {err.detail}")]
            mid = len(items) // 2
            left_ok, left_bad = self._score(items[:mid])
            right_ok, right_bad = self._score(items[mid:])
            return left_ok + right_ok, left_bad + right_bad
        by_id = {r.get("transaction_id"): r for r in results}
        if len(by_id) == len(items) or all(i.transaction_id in by_id for i in items):
            try:
                return [(i, by_id[i.transaction_id]) for i in items], []
            except KeyError:
                pass
        # Ids don't match (a scorer that rewrites ids): fall back to input order.
        log.warning("scorer results do not carry the input ids; using input order")
        return list(zip(items, results, strict=True)), []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scorer-url", help="default: $SCORER_URL")
    parser.add_argument("--metrics-port", type=int, help="default: $METRICS_PORT (9101)")


def run(args: argparse.Namespace) -> int:
    from fraudstream.kafka_runner import (
        BatchRunner,
        ConsumerMetrics,
        DeadLetters,
        install_signal_handlers,
        make_consumer,
        make_producer,
        run_to_exit_code,
        start_metrics_server,
    )
    from fraudstream.logs import setup_logging
    from fraudstream.settings import BridgeSettings, KafkaSettings, LogSettings

    logs = LogSettings()
    setup_logging(logs.log_level, logs.log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    kafka = KafkaSettings()
    settings = BridgeSettings()
    scorer_url = args.scorer_url or settings.scorer_url
    metrics_port = args.metrics_port if args.metrics_port is not None else settings.metrics_port

    from prometheus_client import Counter, Histogram

    metrics = ConsumerMetrics.create("bridge")
    bridge_metrics = BridgeMetrics(
        errors=metrics.errors,
        retries=Counter("fraudstream_bridge_scorer_retries", "scorer calls retried"),
        http_latency=Histogram(
            "fraudstream_bridge_scorer_request_seconds",
            "HTTP latency of POST /score_batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        ),
    )
    start_metrics_server(metrics_port)

    stop = threading.Event()
    install_signal_handlers(stop)
    producer = make_producer(kafka.kafka_bootstrap_servers)
    scorer = ScorerClient(
        scorer_url,
        timeout_s=settings.scorer_timeout_s,
        backoff_max_s=settings.scorer_backoff_max_s,
        stop=stop,
        max_connections=settings.scorer_max_connections,
        metrics=bridge_metrics,
    )
    dead_letters = DeadLetters(
        producer, kafka.topic_dlq, settings.dlq_max_ratio, settings.dlq_window, metrics
    )
    step = BridgeStep(scorer, producer, kafka.topic_scoring, dead_letters, metrics)
    consumer = make_consumer(
        kafka.kafka_bootstrap_servers,
        settings.bridge_group_id,
        group_instance_id=settings.bridge_group_instance_id or None,
    )
    runner = BatchRunner(
        consumer,
        kafka.topic_transactions,
        step,
        batch_size=settings.bridge_batch_size,
        max_wait_ms=settings.bridge_batch_max_wait_ms,
        commit_interval_ms=settings.bridge_commit_interval_ms,
        stop=stop,
        metrics=metrics,
    )
    log.info(
        "bridge starting",
        extra={
            "topic_in": kafka.topic_transactions,
            "topic_out": kafka.topic_scoring,
            "scorer_url": scorer_url,
            "group_id": settings.bridge_group_id,
        },
    )
    return run_to_exit_code(runner, "bridge", [scorer, producer])
