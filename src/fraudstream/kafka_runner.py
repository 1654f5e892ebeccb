"""The shared consumer loop: poll, batch, run a step, commit last; plus metrics and clients.

The runner owns everything Kafka-specific about consuming (polling, batching by size and wait,
rebalances, throttled offset commits, lag, shutdown); the business step (score a batch, write a
batch) is a plain callable ``step(records) -> None`` that performs its side effect completely
or raises. Offsets (``offset + 1``) are marked done only after the step returns and committed
at most every ``commit_interval_ms``, on every revocation and once more on shutdown. A lost
commit only means a batch is processed again, so every side effect downstream is idempotent.
The lag gauge has a series per partition this consumer owns: a revoked or lost partition's
series goes at once, so the lag summed over a group's members counts each partition once.

Given a transactional producer (the bridge's, ``BRIDGE_TRANSACTIONS``), the runner wraps each
batch in a Kafka transaction instead: ``begin_transaction``, the step (whose sends use that
producer), then the batch's offsets go into the transaction (``send_offsets_to_transaction``
with the consumer's group metadata, so the broker fences a member that lost its partitions,
KIP-447) and ``commit_transaction``: the step's records and the consumer's progress become
visible together or not at all. A step that raises aborts the transaction (nothing it sent is
seen by ``read_committed`` readers, its offsets stay uncommitted). A transaction that fails to
commit, or whose records are not delivered, is aborted and the batch read again (a producer
that can no longer abort is replaced, see :class:`TransactionalProducer`). Every consumer reads
``read_committed`` (:func:`make_consumer`); when idle, a fetch position past the last record
processed (transaction markers and aborted records take offsets but are never returned) counts
as done, so the committed offset reaches the end of the partition.

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


# seconds to insert (or upsert) and commit one batch in PostgreSQL: the writer's and the labels
# consumer's fraudstream_<component>_db_write_seconds
DB_WRITE_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


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
        # a group leader that joined before it knew the topic's partitions (seen with a topic
        # just created) assigns nothing until its next metadata refresh: every 5 s instead of
        # every 5 min (a small request for the subscribed topic); added partitions count too
        "metadata_max_age_ms": 5000,
        # records of aborted (and still open) transactions are never returned: the bridge's
        # results of a batch it did not finish are not read twice
        "isolation_level": "read_committed",
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
    """acks=all, idempotent, short linger: every record is either delivered once or raises.

    With ``transactional_id=...`` (and ``transaction_timeout_ms``) it is a transactional
    producer: call ``init_transactions()`` once before the first transaction."""
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


class DeliveryError(RuntimeError):
    """Records were not acknowledged by the broker (failed, or not within the flush bound)."""


def wait_delivered(producer: Any, futures: Sequence[Any]) -> None:
    """Flush and raise :class:`DeliveryError` if any record was not acknowledged (``flush``
    alone never raises).

    Inside a transaction an acknowledged record is written but not yet visible to
    ``read_committed`` readers; a failed one makes the step raise, so the runner aborts the
    transaction instead of committing a batch with a hole in it."""
    from kafka.errors import KafkaTimeoutError

    try:
        producer.flush()
    except KafkaTimeoutError as err:  # a TransactionalProducer's bounded flush
        raise DeliveryError(f"records not acknowledged in time: {err!r}") from err
    for future in futures:
        if future.exception is not None:
            raise DeliveryError(f"record not delivered: {future.exception!r}")


# A transaction that starts right after the previous commit usually gets CONCURRENT_TRANSACTIONS
# for its first AddPartitionsToTxn (the broker is still writing the previous one's markers), and
# the client retries after its retry backoff. The Java client lowers that one backoff to 20 ms
# (KAFKA-5477); kafka-python 3.0 computes the same override but its sender sleeps the producer's
# ``retry_backoff_ms`` (100 ms) anyway, which put ~100 ms on every bridge batch. Measured on a
# local broker, 50-record transactions back to back: median 136 ms at 100, 56 at 20, 34 at 10.
TRANSACTION_RETRY_BACKOFF_MS = 10


class TransactionalProducer:
    """A transactional :func:`make_producer` (``init_transactions`` done) that the runner can
    replace by a new one with the same transactional id; everything else is the producer's.

    kafka-python 3 answers a producer epoch the broker no longer accepts (e.g. the broker
    aborted the transaction on its timeout while it restarted) by bumping the epoch itself: the
    open transaction is gone, it cannot be aborted, and records not yet sent would wait in the
    producer forever. So ``flush`` is bounded by the transaction timeout (a transaction open
    longer is aborted by the broker anyway) and :meth:`renew` starts over with a new producer
    (its ``init_transactions`` aborts whatever the old one left open).
    """

    def __init__(self, bootstrap: str, transactional_id: str, timeout_ms: int) -> None:
        self.bootstrap = bootstrap
        self.transactional_id = transactional_id
        self.timeout_ms = timeout_ms
        self.producer = self._start()

    def _start(self) -> Any:
        producer = make_producer(
            self.bootstrap,
            transactional_id=self.transactional_id,
            transaction_timeout_ms=self.timeout_ms,
            retry_backoff_ms=TRANSACTION_RETRY_BACKOFF_MS,
        )
        try:
            producer.init_transactions()
        except BaseException:
            _close_now(producer)
            raise
        return producer

    def __getattr__(self, name: str) -> Any:
        if name == "producer":  # not set yet (the constructor failed)
            raise AttributeError(name)
        return getattr(self.producer, name)

    def flush(self, timeout: float | None = None) -> None:
        self.producer.flush(self.timeout_ms / 1000 if timeout is None else timeout)

    def renew(self, stop: threading.Event) -> bool:
        """Replace the producer (retrying while the broker is away); False when ``stop`` was
        set meanwhile."""
        _close_now(self.producer)
        for delay in backoff_delays(0.5, 10.0):
            try:
                self.producer = self._start()
            except Exception as err:  # noqa: BLE001 - the broker is still away: wait, retry
                log.warning("a new transactional producer failed to start: %r", err)
                if stop.wait(delay):
                    return False
            else:
                log.info("a new transactional producer took over")
                return True
        return False  # pragma: no cover - backoff_delays never ends

    def close(self, timeout: float | None = None) -> None:
        try:
            self.producer.close(timeout=self.timeout_ms / 1000 if timeout is None else timeout)
        except Exception:  # noqa: BLE001 - records it can no longer send: drop them
            _close_now(self.producer)


def _close_now(producer: Any) -> None:
    """Close without waiting. kafka-python's ``close`` flushes first and raises when records are
    left that it cannot send; its sender is then stopped by force (failing those records)."""
    try:
        producer.close(timeout=0)
    except Exception:  # noqa: BLE001
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.force_close()
        try:
            producer.close(timeout=1)
        except Exception as err:  # noqa: BLE001 - nothing more to do: it is gone
            log.debug("closing a producer failed: %r", err)


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
        transactional_producer: Any = None,
    ) -> None:
        """``transactional_producer``: a producer after ``init_transactions()``, the one the
        step sends with; each batch is then one transaction with its offsets in it."""
        self.consumer = consumer
        self.producer = transactional_producer
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
                self._skip_unreturned()
                self._housekeeping()
        with self._lock:
            batch, self._buffer = self._buffer, []
        return batch

    def _skip_unreturned(self) -> None:
        """Idle (nothing buffered, every record polled so far processed): a partition's fetch
        position past its done offset only passed offsets that are never returned (transaction
        markers, records of aborted transactions), so the position is done too. Otherwise the
        committed offset would stay one marker short of the end of a transactional topic and
        the group would look behind forever."""
        with self._lock:
            partitions = [tp for tp in self._done if tp in self._owned]
        for tp in partitions:
            try:
                position = self.consumer.position(tp, timeout_ms=1000)
            except Exception as err:  # noqa: BLE001 - revoked meanwhile: its new owner does it
                log.debug("position of %s unknown: %r", tp, err)
                continue
            with self._lock:
                done = self._done.get(tp)
                if position is not None and done is not None and position > done:
                    self._done[tp] = position

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
                    if self.producer is not None:
                        self.producer.begin_transaction()
                    try:
                        self.step(batch)
                    except ShutdownRequestedError:
                        self._abort(len(batch))
                        log.info(
                            "shutdown during a batch; its %d records stay uncommitted", len(batch)
                        )
                        break
                    except DeliveryError as err:
                        if self.producer is None or not hasattr(self.producer, "renew"):
                            raise
                        log.warning("batch not delivered in its transaction: %r", err)
                        self._start_over(batch)
                        continue
                    except BaseException:
                        self._abort(len(batch))
                        raise
                    offsets = _next_offsets(batch)
                    if self.producer is not None and not self._commit_transaction(offsets):
                        self._start_over(batch)
                        continue
                    with self._lock:
                        for tp, meta in offsets.items():
                            if meta.offset > self._done.get(tp, -1):
                                self._done[tp] = meta.offset
                                if self.producer is not None:  # committed with the batch
                                    self._committed[tp] = meta.offset
                    self.processed += len(batch)
                    if self.metrics:
                        self.metrics.batch_latency.observe(time.perf_counter() - started)
                self._housekeeping()
            self.commit(force=True)
        finally:
            self.close()
        return 0

    def _abort(self, records: int) -> None:
        """The step raised: abort its transaction (nothing it sent becomes visible). An abort
        that fails too is only logged; the step's error is what stops the runner."""
        if self.producer is None:
            return
        try:
            self.producer.abort_transaction()
            log.info("transaction of a batch of %d records aborted", records)
        except Exception as err:  # noqa: BLE001 - the broker aborts it after its timeout
            log.error("aborting the transaction failed: %r", err)

    def _commit_transaction(self, offsets: dict[Any, Any]) -> bool:
        """Put ``offsets`` into the open transaction and commit it; False when that failed (the
        caller aborts it and reads the batch again)."""
        try:
            self.producer.send_offsets_to_transaction(offsets, self.consumer.group_metadata())
            self.producer.commit_transaction()
        except Exception as err:  # noqa: BLE001 - aborted by the caller; the batch is read again
            log.warning("transaction not committed: %r", err)
            return False
        if self.metrics:
            self.metrics.commits.inc()
        return True

    def _start_over(self, batch: list[Any]) -> None:
        """The batch's transaction failed: abort it (or, when the producer cannot, e.g. because
        the broker aborted the transaction on its timeout and fenced the producer's epoch,
        replace the producer: see :class:`TransactionalProducer`) and seek back to read the
        batch again."""
        if self.metrics:
            self.metrics.errors.labels("transaction").inc()
        try:
            self.producer.abort_transaction()
            log.info("transaction aborted; the batch of %d records is read again", len(batch))
        except Exception as err:
            renew = getattr(self.producer, "renew", None)
            if renew is None:
                raise
            log.warning("the transaction cannot be aborted (%r): starting a new producer", err)
            if not renew(self.stop):
                return  # stopping meanwhile: the batch stays uncommitted
        self._rewind(batch)

    def _rewind(self, batch: list[Any]) -> None:
        """Seek back to the first record of ``batch`` in each partition still assigned."""
        first: dict[Any, int] = {}
        for record in batch:
            tp = _tp(record)
            first[tp] = min(first.get(tp, record.offset), record.offset)
        assigned = self.consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                self.consumer.seek(tp, offset)

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
    transactional_id: str = "",
    transaction_timeout_ms: int = 10000,
    **start_info: str,
) -> int:
    """A consumer process (``fraudstream bridge``, ``writer``) from start to exit code.

    Sets up logging, the ``fraudstream_<name>_...`` metrics, the signal handlers, a producer
    and the DLQ; ``build(parts)`` returns the component's step (creating its own metrics too)
    and its own clients to close when the consumer stops. Then serves ``/metrics`` and
    ``/healthz`` on ``metrics_port`` (0 = off), consumes ``topic`` in ``group_id``
    (``group_instance_id``: static membership, "" = none), logs "<name> starting" with
    ``start_info`` and returns :func:`run_to_exit_code`'s exit code.

    ``transactional_id`` (not empty): the producer is transactional with that id and
    ``transaction_timeout_ms``, and every batch is one transaction (see the module docstring);
    ``init_transactions`` at the start aborts what a previous process with the same id left
    open. A broker that cannot do transactions ends the process with exit code 1.
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
    producer: Any
    if transactional_id:
        try:
            producer = TransactionalProducer(
                kafka.kafka_bootstrap_servers, transactional_id, transaction_timeout_ms
            )
        except Exception as err:  # noqa: BLE001 - reported, then the exit code says it
            log.error(
                "%s: init_transactions failed (%r): does the broker support transactions "
                "(transaction.state.log.replication.factor <= brokers)?",
                name,
                err,
                extra={"transactional_id": transactional_id},
            )
            return 1
        metrics.errors.labels("transaction")  # a series at 0 from the start
    else:
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
        transactional_producer=producer if transactional_id else None,
    )
    if transactional_id:
        start_info = {**start_info, "transactional_id": transactional_id}
    log.info("%s starting", name, extra={"topic_in": topic, "group_id": group_id, **start_info})
    return run_to_exit_code(runner, name, [*closers, producer])


def _tp(record: Any) -> Any:
    from kafka import TopicPartition

    return TopicPartition(record.topic, record.partition)


def _next_offsets(batch: list[Any]) -> dict[Any, Any]:
    """Per partition of ``batch``: the offset after its last record (what to commit)."""
    from kafka.structs import OffsetAndMetadata

    last: dict[Any, int] = {}
    for record in batch:
        tp = _tp(record)
        last[tp] = max(last.get(tp, -1), record.offset)
    return {tp: OffsetAndMetadata(offset + 1, "", -1) for tp, offset in last.items()}
