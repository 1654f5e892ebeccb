"""The shared consumer loop: poll, batch, run a step, commit last; plus metrics and clients.

The runner owns everything Kafka-specific about consuming (polling, batching by size and wait,
rebalances, throttled offset commits, lag, shutdown); the business step (score a batch, write a
batch) is a plain callable ``step(records) -> None`` that performs its side effect completely
or raises. Offsets (``offset + 1``) are marked done only after the step returns and committed
at most every ``commit_interval_ms``, on every revocation and once more on shutdown. A lost
commit only means a batch is processed again, so every side effect downstream is idempotent.
The lag gauge has a series per partition this consumer owns: a revoked or lost partition's
series goes at once, so the lag summed over a group's members counts each partition once.

SIGTERM / SIGINT set a flag: the loop finishes the batch in hand, commits and closes. A step
that is waiting (e.g. for a scorer that is down) raises :class:`ShutdownRequestedError` when
the flag is set; that batch is then not committed and is processed again by the next owner.
Any other exception stops the runner (the process exits non-zero and is restarted) instead of
skipping data; a :class:`ConsumerHaltError` chooses its exit code. Dead letters (poison records
and the guard against draining a topic into them) are :mod:`fraudstream.dlq`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fraudstream import health

log = logging.getLogger(__name__)

Step = Callable[[list[Any]], None]


class ShutdownRequestedError(Exception):
    """A step gave up waiting because shutdown was requested; its batch is not committed."""


class ConsumerHaltError(RuntimeError):
    """The step met something no retry and no DLQ can fix (a broken deployment, a topic that is
    mostly poison): the runner stops with the batch uncommitted and the process exits with
    ``exit_code``, counted in ``errors_total{type=error_type}``."""

    exit_code = 1
    error_type = "halt"


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT only set ``stop``; the loop notices it between steps."""

    def _handler(signum: int, _frame: object) -> None:
        log.info("signal %s received; finishing the current batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


def backoff_delays(initial: float = 0.1, cap: float = 10.0) -> Any:
    """0.1, 0.2, 0.4, ... seconds, capped; with +-20 % jitter so restarts don't synchronise."""
    import random

    delay = initial
    while True:
        health.beat()  # waiting for a dependency on purpose is progress, not a stuck loop
        yield delay * random.uniform(0.8, 1.2)
        delay = min(delay * 2, cap)


# --------------------------------------------------------------------------- metrics


@dataclass
class ConsumerMetrics:
    """Prometheus metrics every consumer exposes, named ``fraudstream_<component>_...``."""

    messages_in: Any
    messages_out: Any
    batch_size: Any
    batch_latency: Any
    errors: Any
    dlq: Any
    lag: Any
    commits: Any

    @classmethod
    def create(cls, component: str, registry: Any = None) -> ConsumerMetrics:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        reg = registry if registry is not None else REGISTRY
        p = f"fraudstream_{component}"
        metrics = cls(
            messages_in=Counter(f"{p}_messages_in", "records consumed", registry=reg),
            messages_out=Counter(f"{p}_messages_out", "results delivered", registry=reg),
            batch_size=Histogram(
                f"{p}_batch_size",
                "records per batch",
                buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000),
                registry=reg,
            ),
            batch_latency=Histogram(
                f"{p}_batch_latency_seconds",
                "time to process one batch (step + delivery)",
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                registry=reg,
            ),
            errors=Counter(f"{p}_errors", "errors by type", ["type"], registry=reg),
            dlq=Counter(f"{p}_dlq_messages", "records sent to the DLQ", ["reason"], registry=reg),
            lag=Gauge(
                f"{p}_consumer_lag",
                "records behind the end of the partition",
                ["topic", "partition"],
                registry=reg,
            ),
            commits=Counter(f"{p}_offset_commits", "offset commits", registry=reg),
        )
        metrics.errors.labels("commit")  # a series at 0 from the start, so dashboards see 0
        return metrics

    def forget_lag(self, partitions: Any) -> None:
        """Drop the lag series of ``partitions`` (TopicPartitions this consumer no longer owns):
        their new owner reports them, and a stale value would be summed with its."""
        for tp in partitions:
            self.lag.remove(tp.topic, str(tp.partition))


def start_metrics_server(port: int) -> None:
    """Serve ``/metrics`` and the liveness ``/healthz`` (:mod:`fraudstream.health`) on ``port``
    (0 = off)."""
    if port:
        health.serve(port)
        log.info("metrics on :%d/metrics, liveness on :%d/healthz", port, port)


# --------------------------------------------------------------------------- clients


def make_consumer(bootstrap: str, group_id: str, **overrides: Any) -> Any:
    from kafka import KafkaConsumer

    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": 2000,
        "fetch_max_wait_ms": 100,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "session_timeout_ms": 10000,  # a dead member's partitions move on after 10 s
        "heartbeat_interval_ms": 2000,
        "max_poll_interval_ms": 600000,
        "client_id": f"fraudstream-{group_id}",
        "reconnect_backoff_max_ms": 2000,  # back within 2 s of a broker restart (default 30 s)
    }
    config.update(overrides)
    return KafkaConsumer(**config)


def _cached_partitioner() -> Any:
    """Kafka's default key -> partition mapping (murmur2), memoised for repeated keys.

    kafka-python's murmur2 is pure Python; card-holder keys repeat, so the cache saves most of
    the cost on ``transactions``. Unique keys (transaction ids) are not cached past a bound.
    """
    from kafka.partitioner.default import murmur2
    from kafka.partitioner.sticky import StickyPartitioner

    class CachedKeyPartitioner(StickyPartitioner):
        def __init__(self, max_keys: int = 100_000) -> None:
            super().__init__()
            self.hashes: dict[bytes, int] = {}
            self.max_keys = max_keys

        def partition(self, topic, key, serialized_key, value, serialized_value, cluster):  # type: ignore[no-untyped-def]  # noqa: E501
            if serialized_key is None:
                return super().partition(
                    topic, key, serialized_key, value, serialized_value, cluster
                )
            digest = self.hashes.get(serialized_key)
            if digest is None:
                digest = murmur2(serialized_key) & 0x7FFFFFFF
                if len(self.hashes) < self.max_keys:
                    self.hashes[serialized_key] = digest
            partitions = cluster.partitions_for_topic(topic)
            if not partitions:
                raise ValueError(f"no partitions known for topic {topic}")
            return sorted(partitions)[digest % len(partitions)]

    return CachedKeyPartitioner()


def make_producer(bootstrap: str, **overrides: Any) -> Any:
    """acks=all, idempotent, short linger: every record is either delivered once or raises."""
    from kafka import KafkaProducer

    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "partitioner": _cached_partitioner(),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_request_size": 8 * 1024 * 1024,
        "delivery_timeout_ms": 300000,
        "request_timeout_ms": 30000,
        "reconnect_backoff_max_ms": 2000,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def wait_delivered(producer: Any, futures: Sequence[Any]) -> None:
    """Flush and raise if any record was not acknowledged (``flush`` alone never raises)."""
    producer.flush()
    for future in futures:
        if future.exception is not None:
            raise RuntimeError(f"record not delivered: {future.exception!r}")


# --------------------------------------------------------------------------- runner


class BatchRunner:
    """Poll ``topic`` as part of a consumer group, hand batches to ``step``, commit last."""

    def __init__(
        self,
        consumer: Any,
        topic: str,
        step: Step,
        *,
        batch_size: int,
        max_wait_ms: int,
        commit_interval_ms: int,
        stop: threading.Event,
        metrics: ConsumerMetrics | None = None,
        lag_interval_s: float = 5.0,
        idle_poll_ms: int = 500,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.step = step
        self.batch_size = batch_size
        self.max_wait = max_wait_ms / 1000
        self.commit_interval = commit_interval_ms / 1000
        self.stop = stop
        self.metrics = metrics
        self.lag_interval = lag_interval_s
        self.idle_poll_ms = idle_poll_ms
        self._lock = threading.Lock()
        self._buffer: list[Any] = []
        self._done: dict[Any, int] = {}  # TopicPartition -> next offset to read (processed)
        self._committed: dict[Any, int] = {}
        self._resume: dict[Any, int] = {}  # partition -> first dropped offset (see the listener)
        self._owned: set[Any] = set()  # partitions assigned and not revoked since (lag is theirs)
        self._last_commit = time.monotonic()
        self._last_lag = 0.0
        self.processed = 0

    # -- rebalance listener (runs on the consumer's IO thread, inside poll)
    def _listener(self) -> Any:
        from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener

        runner = self

        class Listener(AsyncConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                runner._disown(set(revoked))
                offsets = runner._take_offsets(set(revoked), discard=True)
                if offsets:
                    try:
                        await runner.consumer.commit_async(offsets)
                        runner._mark_committed(offsets)
                        log.info("committed %d partition(s) on revocation", len(offsets))
                    except Exception as err:  # noqa: BLE001 - a lost commit means a re-read
                        log.warning("commit on revocation failed: %r", err)
                log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

            async def on_partitions_assigned(self, assigned: Any) -> None:
                # A partition we keep across the rebalance: its fetch position is past the
                # records we dropped from the buffer, so go back to the first of them.
                with runner._lock:
                    resume, runner._resume = runner._resume, {}
                    runner._owned |= set(assigned)
                for tp in assigned:
                    if tp in resume:
                        runner.consumer.seek(tp, resume[tp])
                runner._last_lag = 0.0  # report the new partitions' lag at the next chance
                log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))

            async def on_partitions_lost(self, lost: Any) -> None:
                runner._disown(set(lost))
                runner._take_offsets(set(lost), discard=True)
                log.warning("partitions lost: %s", sorted(tp.partition for tp in lost))

        return Listener()

    def _disown(self, partitions: set[Any]) -> None:
        """Revoked or lost: stop reporting their lag (under the lock, so a lag update that
        started before the rebalance cannot bring a series back, see ``_housekeeping``)."""
        with self._lock:
            self._owned -= partitions
            if self.metrics is not None:
                self.metrics.forget_lag(partitions)

    def _take_offsets(self, partitions: set[Any], discard: bool) -> dict[Any, Any]:
        """Done-but-uncommitted offsets of ``partitions``; drop their buffered records."""
        from kafka.structs import OffsetAndMetadata

        with self._lock:
            if discard:
                kept = []
                for record in self._buffer:
                    tp = _tp(record)
                    if tp in partitions:  # not processed: re-read by whoever owns it next
                        first = self._resume.get(tp)
                        self._resume[tp] = (
                            record.offset if first is None else min(first, record.offset)
                        )
                    else:
                        kept.append(record)
                self._buffer = kept
            out = {
                tp: OffsetAndMetadata(off, "", -1)
                for tp, off in self._done.items()
                if tp in partitions and self._committed.get(tp) != off
            }
            for tp in partitions:
                self._done.pop(tp, None)
                self._committed.pop(tp, None)
        return out

    def _mark_committed(self, offsets: dict[Any, Any]) -> None:
        with self._lock:
            for tp, meta in offsets.items():
                self._committed[tp] = meta.offset
        if self.metrics:
            self.metrics.commits.inc()

    def commit(self, force: bool = False) -> None:
        """Commit done offsets if the interval passed (or ``force``); a failure is retried later."""
        from kafka.structs import OffsetAndMetadata

        now = time.monotonic()
        if not force and now - self._last_commit < self.commit_interval:
            return
        self._last_commit = now
        with self._lock:
            offsets = {
                tp: OffsetAndMetadata(off, "", -1)
                for tp, off in self._done.items()
                if self._committed.get(tp) != off
            }
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except Exception as err:  # noqa: BLE001 - the offsets stay pending; a re-read is safe
            log.warning("offset commit failed (will retry): %r", err)
            if self.metrics:
                self.metrics.errors.labels("commit").inc()
            return
        self._mark_committed(offsets)

    def _collect(self) -> list[Any]:
        """Up to ``batch_size`` records; returns when full or ``max_wait`` after the first."""
        deadline: float | None = None
        while not self.stop.is_set():
            with self._lock:
                have = len(self._buffer)
            if have >= self.batch_size:
                break
            if deadline is None:
                timeout_ms = self.idle_poll_ms
            else:
                timeout_ms = max(0, int((deadline - time.monotonic()) * 1000))
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.batch_size - have)
            if polled:
                with self._lock:
                    for records in polled.values():
                        self._buffer.extend(records)
                    have = len(self._buffer)
            if have and deadline is None:
                deadline = time.monotonic() + self.max_wait
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not have:
                self._housekeeping()
        with self._lock:
            batch, self._buffer = self._buffer, []
        return batch

    def _housekeeping(self) -> None:
        health.beat()  # after every batch and every idle poll: the loop is alive (/healthz)
        self.commit()
        now = time.monotonic()
        if self.metrics is None or now - self._last_lag < self.lag_interval:
            return
        self._last_lag = now
        try:
            for tp in self.consumer.assignment():
                high = self.consumer.highwater(tp)
                if high is None:
                    continue
                with self._lock:
                    position = self._done.get(tp)
                if position is None:
                    position = self.consumer.position(tp, timeout_ms=1000)
                if position is None:
                    continue
                with self._lock:
                    # the listener (on the consumer's IO thread) may have revoked it meanwhile
                    if tp in self._owned:
                        self.metrics.lag.labels(tp.topic, str(tp.partition)).set(
                            max(0, high - position)
                        )
        except Exception as err:  # noqa: BLE001 - lag is best effort
            log.debug("lag update failed: %r", err)

    def run(self) -> int:
        """Consume until stopped; 0 on a clean shutdown. Step errors propagate."""
        self.consumer.subscribe([self.topic], listener=self._listener())
        log.info("consuming %s", self.topic)
        try:
            while not self.stop.is_set():
                batch = self._collect()
                if batch:
                    started = time.perf_counter()
                    if self.metrics:
                        self.metrics.messages_in.inc(len(batch))
                        self.metrics.batch_size.observe(len(batch))
                    try:
                        self.step(batch)
                    except ShutdownRequestedError:
                        log.info(
                            "shutdown during a batch; its %d records stay uncommitted", len(batch)
                        )
                        break
                    with self._lock:
                        for record in batch:
                            tp = _tp(record)
                            if record.offset + 1 > self._done.get(tp, -1):
                                self._done[tp] = record.offset + 1
                    self.processed += len(batch)
                    if self.metrics:
                        self.metrics.batch_latency.observe(time.perf_counter() - started)
                self._housekeeping()
            self.commit(force=True)
        finally:
            self.close()
        return 0

    def close(self) -> None:
        try:
            self.commit(force=True)
        finally:
            # close() revokes (our listener commits whatever is still pending) and leaves the group
            self.consumer.close(autocommit=False)
        log.info("consumer closed after %d records", self.processed)


def run_to_exit_code(runner: BatchRunner, name: str, closers: Sequence[Any]) -> int:
    """Run a consumer process's loop; its exit code: 0 after a clean stop (SIGTERM/SIGINT),
    a :class:`ConsumerHaltError`'s own (3: the DLQ ratio guard, 4: the scorer refuses every
    call), 1 on any other error (Kubernetes restarts it; no record is skipped). ``closers`` are
    closed whatever happens."""
    try:
        runner.run()
    except ConsumerHaltError as err:
        if runner.metrics is not None:
            runner.metrics.errors.labels(err.error_type).inc()
        log.error("%s stopped: %s", name, err, extra={"exit_code": err.exit_code})
        return err.exit_code
    except Exception:
        log.exception("%s stopped by an unexpected error", name)
        return 1
    finally:
        for closer in closers:
            closer.close()
    log.info("%s stopped cleanly", name)
    return 0


@dataclass
class ConsumerParts:
    """What :func:`run_consumer` hands a component to build its step from."""

    stop: threading.Event  # set by SIGTERM/SIGINT
    producer: Any  # make_producer(); closed by run_consumer
    metrics: ConsumerMetrics
    dead_letters: Any  # dlq.DeadLetters on TOPIC_DLQ, guarded by DLQ_MAX_RATIO / DLQ_WINDOW


def run_consumer(
    name: str,
    topic: str,
    build: Callable[[ConsumerParts], tuple[Step, Sequence[Any]]],
    *,
    group_id: str,
    group_instance_id: str,
    batch_size: int,
    batch_max_wait_ms: int,
    commit_interval_ms: int,
    metrics_port: int,
    **start_info: str,
) -> int:
    """A consumer process (``fraudstream bridge``, ``writer``) from start to exit code.

    Sets up logging, the ``fraudstream_<name>_...`` metrics, the signal handlers, a producer
    and the DLQ; ``build(parts)`` returns the component's step (creating its own metrics too)
    and its own clients to close when the consumer stops. Then serves ``/metrics`` and
    ``/healthz`` on ``metrics_port`` (0 = off), consumes ``topic`` in ``group_id``
    (``group_instance_id``: static membership, "" = none), logs "<name> starting" with
    ``start_info`` and returns :func:`run_to_exit_code`'s exit code.
    """
    from fraudstream.dlq import DeadLetters
    from fraudstream.logs import setup_logging
    from fraudstream.settings import BridgeSettings, KafkaSettings, LogSettings

    logs = LogSettings()
    setup_logging(logs.log_level, logs.log_format)
    kafka = KafkaSettings()
    metrics = ConsumerMetrics.create(name)
    stop = threading.Event()
    install_signal_handlers(stop)
    producer = make_producer(kafka.kafka_bootstrap_servers)
    guard = BridgeSettings()  # DLQ_MAX_RATIO / DLQ_WINDOW apply to every consumer
    dead_letters = DeadLetters(
        producer, kafka.topic_dlq, guard.dlq_max_ratio, guard.dlq_window, metrics
    )
    step, closers = build(ConsumerParts(stop, producer, metrics, dead_letters))
    start_metrics_server(metrics_port)  # once every metric exists: no scrape sees only some
    consumer = make_consumer(
        kafka.kafka_bootstrap_servers, group_id, group_instance_id=group_instance_id or None
    )
    runner = BatchRunner(
        consumer,
        topic,
        step,
        batch_size=batch_size,
        max_wait_ms=batch_max_wait_ms,
        commit_interval_ms=commit_interval_ms,
        stop=stop,
        metrics=metrics,
    )
    log.info("%s starting", name, extra={"topic_in": topic, "group_id": group_id, **start_info})
    return run_to_exit_code(runner, name, [*closers, producer])


def _tp(record: Any) -> Any:
    from kafka import TopicPartition

    return TopicPartition(record.topic, record.partition)
