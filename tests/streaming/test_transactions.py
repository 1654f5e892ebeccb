"""Exactly once into ``scoring``, not only into ``scores``: the bridge's batch is one Kafka
transaction (results, dead letters and input offsets together), and readers read_committed.

On the session's real Kafka broker: the runner with a transactional producer in-process (a
committed batch, an aborted one), an abandoned transaction (a killed bridge in a new pod) ending
after its timeout, and ``fraudstream bridge`` processes killed with SIGKILL mid-stream, with
transactions on (each id once in ``scoring`` for read_committed readers) and off (the same
scenario repeats results: what the transactions are for).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from fraudstream.kafka_runner import (
    BatchRunner,
    ConsumerHaltError,
    ShutdownRequestedError,
    make_consumer,
    make_producer,
    wait_delivered,
)
from fraudstream.topics import create_topics

from .conftest import N_TRANSACTIONS, committed_and_end, produce, read_topic, wait_until

pytestmark = pytest.mark.integration
PARTITIONS = 3


def make_topics(bootstrap: str, topics: dict[str, str]) -> None:
    create_topics(
        bootstrap,
        [topics["transactions"], topics["scoring"]],
        partitions=PARTITIONS,
        retention_ms=3600_000,
        replication_factor=1,
    )


def send_inputs(bootstrap: str, topic: str, n: int) -> list[bytes]:
    producer = make_producer(bootstrap)
    try:
        values = [f"in-{i}".encode() for i in range(n)]
        futures = [producer.send(topic, key=str(i).encode(), value=v) for i, v in enumerate(values)]
        wait_delivered(producer, futures)
        return values
    finally:
        producer.close()


def transactional_producer(bootstrap: str, timeout_ms: int = 10000) -> Any:
    producer = make_producer(
        bootstrap,
        transactional_id=f"test-{uuid.uuid4().hex[:8]}",
        transaction_timeout_ms=timeout_ms,
    )
    producer.init_transactions()
    return producer


class Copy:
    """A step that copies each record to ``out`` with the runner's transactional producer, then
    raises ``error`` when given one (after its records were acknowledged by the broker)."""

    def __init__(self, producer: Any, out: str, error: BaseException | None = None) -> None:
        self.producer = producer
        self.out = out
        self.error = error
        self.sent = 0

    def __call__(self, records: list[Any]) -> None:
        futures = [self.producer.send(self.out, key=r.key, value=r.value) for r in records]
        wait_delivered(self.producer, futures)
        self.sent += len(records)
        if self.error is not None:
            raise self.error


def runner_for(bootstrap: str, group: str, topics: dict[str, str], step: Copy) -> BatchRunner:
    return BatchRunner(
        make_consumer(bootstrap, group),
        topics["transactions"],
        step,
        batch_size=100,
        max_wait_ms=50,
        commit_interval_ms=200,
        stop=threading.Event(),
        idle_poll_ms=100,
        transactional_producer=step.producer,
    )


def run_until_processed(runner: Any, producer: Any, count: int, timeout: float, what: str) -> None:
    """Run ``runner`` in a thread until it has processed ``count`` records, then stop it and
    close ``producer``; the runner must have ended."""
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: runner.processed >= count, timeout, what=what)
    finally:
        runner.stop.set()
        thread.join(30)
        producer.close()
    assert not thread.is_alive(), "the runner did not stop"


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        consumer.close(autocommit=False)


def test_a_batch_and_its_offsets_are_committed_in_one_transaction(kafka_bootstrap, topics):
    """Records and offsets go through the transaction: consumer.commit is never called, the
    group's offsets reach the end, a read_committed reader sees every record once."""
    make_topics(kafka_bootstrap, topics)
    values = send_inputs(kafka_bootstrap, topics["transactions"], 250)
    group = f"tx-{uuid.uuid4().hex[:8]}"
    producer = transactional_producer(kafka_bootstrap)
    step = Copy(producer, topics["scoring"])
    runner = runner_for(kafka_bootstrap, group, topics, step)
    plain_commits: list[Any] = []
    real_commit = runner.consumer.commit
    runner.consumer.commit = lambda *a, **k: (plain_commits.append(a), real_commit(*a, **k))
    run_until_processed(runner, producer, len(values), 60, "every input processed")
    assert plain_commits == [], "offsets of transactional batches committed outside them"
    assert committed_and_end(kafka_bootstrap, group, topics["transactions"]) == (250, 250)
    out = read_topic(kafka_bootstrap, topics["scoring"])
    assert sorted(r.value for r in out) == sorted(values)


@pytest.mark.parametrize(
    "error",
    [RuntimeError("step failed"), ShutdownRequestedError("stop"), ConsumerHaltError("halt")],
    ids=["error", "shutdown", "halt"],
)
def test_an_aborted_batch_leaves_nothing_visible_and_its_offsets_uncommitted(
    kafka_bootstrap, topics, error
):
    make_topics(kafka_bootstrap, topics)
    values = send_inputs(kafka_bootstrap, topics["transactions"], 60)
    group = f"tx-{uuid.uuid4().hex[:8]}"
    producer = transactional_producer(kafka_bootstrap)
    step = Copy(producer, topics["scoring"], error=error)
    runner = runner_for(kafka_bootstrap, group, topics, step)
    try:
        if isinstance(error, ShutdownRequestedError):
            assert runner.run() == 0  # a clean stop, the batch in hand not committed
        else:
            with pytest.raises(type(error)):
                runner.run()
    finally:
        producer.close()
    assert step.sent > 0  # the step's records reached the broker ...
    written = read_topic(kafka_bootstrap, topics["scoring"], isolation_level="read_uncommitted")
    assert len(written) == step.sent
    # ... and were aborted: a read_committed reader sees none, the offsets did not move
    assert read_topic(kafka_bootstrap, topics["scoring"]) == []
    assert set(committed(kafka_bootstrap, group, topics["transactions"]).values()) == {None}

    # the next owner processes the batch again; readers see each record once
    producer = transactional_producer(kafka_bootstrap)
    again = runner_for(kafka_bootstrap, group, topics, Copy(producer, topics["scoring"]))
    run_until_processed(again, producer, len(values), 60, "the batch processed again")
    assert sorted(r.value for r in read_topic(kafka_bootstrap, topics["scoring"])) == sorted(values)


def test_a_transaction_that_fails_to_commit_is_aborted_and_its_batch_read_again(
    kafka_bootstrap, topics
):
    """commit_transaction fails once (e.g. the group rebalanced under the batch): the runner
    aborts the transaction, seeks back and processes the batch again; readers see each record
    once and the failure is counted in errors_total{type="transaction"}."""
    from prometheus_client import CollectorRegistry

    from fraudstream.kafka_runner import ConsumerMetrics

    make_topics(kafka_bootstrap, topics)
    values = send_inputs(kafka_bootstrap, topics["transactions"], 150)
    group = f"tx-{uuid.uuid4().hex[:8]}"
    producer = transactional_producer(kafka_bootstrap)
    step = Copy(producer, topics["scoring"])
    runner = runner_for(kafka_bootstrap, group, topics, step)
    registry = CollectorRegistry()
    runner.metrics = ConsumerMetrics.create("bridge", registry=registry)
    real_commit = producer.commit_transaction
    failures = [RuntimeError("commit failed")]

    def commit_once_failing() -> None:
        if failures:
            raise failures.pop()
        real_commit()

    producer.commit_transaction = commit_once_failing
    run_until_processed(runner, producer, len(values), 60, "every input processed")
    assert failures == [] and step.sent > len(values)  # the failed batch was sent twice
    assert committed_and_end(kafka_bootstrap, group, topics["transactions"]) == (150, 150)
    assert sorted(r.value for r in read_topic(kafka_bootstrap, topics["scoring"])) == sorted(values)
    errors = registry.get_sample_value("fraudstream_bridge_errors_total", {"type": "transaction"})
    assert errors == 1


@pytest.mark.parametrize("partitions", ["same", "any"])
def test_a_transaction_the_broker_aborted_on_its_timeout_is_started_over(
    kafka_bootstrap, topics, partitions
):
    """The broker aborts a transaction open longer than its timeout and fences the producer's
    epoch (as after a broker restart slower than the timeout); kafka-python then cannot abort
    it, and records it had not sent would wait forever. The runner gives up on the batch after
    the bounded flush, replaces the producer (TransactionalProducer.renew) and reads the batch
    again: the consumer stays up and readers see each record once."""
    from fraudstream.kafka_runner import TransactionalProducer

    make_topics(kafka_bootstrap, topics)
    values = send_inputs(kafka_bootstrap, topics["transactions"], 40)
    group = f"tx-{uuid.uuid4().hex[:8]}"
    producer = TransactionalProducer(kafka_bootstrap, f"test-{uuid.uuid4().hex[:8]}", 2000)
    stalls = [5.0]  # the first batch outlives its transaction

    class Stalling(Copy):
        """Sends half the batch, stalls, sends the rest: to partition 0 only ("same": the
        producer's epoch is refused and it bumps it itself) or by key ("any": adding a new
        partition to the transaction finds the producer fenced)."""

        def __call__(self, records: list[Any]) -> None:
            half = len(records) // 2
            self.send(records[:half])
            if stalls:
                time.sleep(stalls.pop())
            self.send(records[half:])

        def send(self, records: list[Any]) -> None:
            to = 0 if partitions == "same" else None
            futures = [
                self.producer.send(self.out, key=r.key, value=r.value, partition=to)
                for r in records
            ]
            wait_delivered(self.producer, futures)
            self.sent += len(records)

    step = Stalling(producer, topics["scoring"])
    runner = runner_for(kafka_bootstrap, group, topics, step)
    runner.batch_size = len(values)
    runner.max_wait = 1.0
    first = producer.producer
    run_until_processed(runner, producer, len(values), 90, "every input processed")
    assert stalls == [] and producer.producer is not first  # a new producer took over
    assert committed_and_end(kafka_bootstrap, group, topics["transactions"]) == (40, 40)
    assert sorted(r.value for r in read_topic(kafka_bootstrap, topics["scoring"])) == sorted(values)


def test_an_abandoned_transaction_stops_holding_readers_after_its_timeout(kafka_bootstrap, topics):
    """A bridge killed mid-transaction in a pod that does not come back (its transactional id
    is never used again): the broker aborts the transaction after its timeout, and
    read_committed readers of the partition move on (the broker looks every second)."""
    make_topics(kafka_bootstrap, topics)
    tp = TopicPartition(topics["scoring"], 0)
    abandoned = transactional_producer(kafka_bootstrap, timeout_ms=5000)
    abandoned.begin_transaction()
    wait_delivered(abandoned, [abandoned.send(tp.topic, value=b"never committed", partition=0)])
    later = transactional_producer(kafka_bootstrap)
    later.begin_transaction()
    wait_delivered(later, [later.send(tp.topic, value=b"committed", partition=0)])
    later.commit_transaction()
    later.close()
    began = time.monotonic()
    reader = KafkaConsumer(bootstrap_servers=kafka_bootstrap, isolation_level="read_committed")
    try:
        # the last stable offset stays before the open transaction until the broker aborts it
        assert reader.end_offsets([tp])[tp] == 0
        wait_until(lambda: reader.end_offsets([tp])[tp] >= 3, 30, what="the abort on timeout")
    finally:
        reader.close()
        abandoned.close(timeout=0)
    held = time.monotonic() - began
    assert [r.value for r in read_topic(kafka_bootstrap, tp.topic)] == [b"committed"]
    print(f"readers held for {held:.1f} s by a transaction with a 5 s timeout")
    # the timeout, the broker's 1 s look for timed-out transactions (10 s by default), slack
    assert held < 5 + 1 + 3


@pytest.mark.parametrize("transactions", ["true", "false"], ids=["transactions", "no-transactions"])
def test_kill_9_of_the_bridge_mid_stream_scoring_holds_each_id_once(
    transactions, pipeline_factory, stub_scorer, kafka_bootstrap, loaded_transactions
):
    """Two SIGKILLs of ``fraudstream bridge`` while it scores; then it catches up. With
    transactions a read_committed reader of ``scoring`` finds every id exactly once. Without
    them the same run repeats the results of the batches done since the last offset commit
    (the control: the scenario does catch duplicates). Offsets are committed every 5 s, so
    that plain commits are not what makes it exactly once."""
    pipe = pipeline_factory(
        stub_scorer.url, BRIDGE_TRANSACTIONS=transactions, BRIDGE_COMMIT_INTERVAL_MS="5000"
    )
    bridge = pipe.component("bridge").start()
    ids: list[str] = []
    sender = threading.Thread(
        target=lambda: ids.extend(
            produce(kafka_bootstrap, pipe.topics["transactions"], loaded_transactions, rate=2500)
        )
    )
    sender.start()
    scoring = pipe.topics["scoring"]
    with KafkaConsumer(bootstrap_servers=kafka_bootstrap) as ends:
        parts = [TopicPartition(scoring, p) for p in ends.partitions_for_topic(scoring)]
        for share in (4, 2):  # a quarter, then half of the results written (committed or not)
            wait_until(
                lambda s=share: sum(ends.end_offsets(parts).values()) >= N_TRANSACTIONS // s,
                120,
                what=f"1/{share} of the results",
            )
            bridge.kill()
            bridge.start()
    sender.join(120)
    assert len(ids) == N_TRANSACTIONS
    wait_until(
        lambda: (
            committed_and_end(kafka_bootstrap, pipe.bridge_group, pipe.topics["transactions"])[0]
            >= N_TRANSACTIONS
        ),
        120,
        what="the bridge to commit every input offset",
    )
    assert bridge.alive, bridge.tail()
    seen = Counter(r.key.decode() for r in read_topic(kafka_bootstrap, scoring, timeout=60))
    everything = read_topic(kafka_bootstrap, scoring, 60, isolation_level="read_uncommitted")
    repeated = sum(n - 1 for n in seen.values())
    print(
        f"transactions={transactions}: {len(ids)} ids, read_committed {sum(seen.values())} "
        f"records ({repeated} repeats), read_uncommitted {len(everything)}"
    )
    assert set(seen) == set(ids)  # nothing lost either way
    if transactions == "true":
        assert repeated == 0, seen.most_common(3)
        assert bridge.terminate() == 0, bridge.tail()
    else:
        assert repeated > 0, "the kills repeated nothing: the scenario cannot catch duplicates"
