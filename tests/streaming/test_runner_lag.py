"""A consumer reports lag only for the partitions it owns: when a rebalance takes partitions away
(revoked, lost, or the consumer leaves), their lag series leave its /metrics at once, so the lag
summed over a group's members counts every partition once.

The integration test runs two real runners of one group on the session's Kafka broker; the unit
test drives the rebalance listener by hand, including a lag update that races a revocation.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable

import pytest
from kafka import TopicPartition
from prometheus_client import CollectorRegistry

from fraudstream.kafka_runner import BatchRunner, ConsumerMetrics, make_consumer
from fraudstream.topics import create_topics

from .conftest import wait_until

PARTITIONS = 6
LAG = "fraudstream_bridge_consumer_lag"


def lag_series(registry: CollectorRegistry) -> dict[int, float]:
    """Partition -> value of every lag series the registry exports."""
    return {
        int(sample.labels["partition"]): sample.value
        for family in registry.collect()
        if family.name == LAG
        for sample in family.samples
    }


def settles(predicate: Callable[[], bool], timeout: float) -> bool:
    """Whether ``predicate`` holds within ``timeout`` (no exception: the caller says why not)."""
    try:
        wait_until(predicate, timeout=timeout, interval=0.1)
    except AssertionError:
        return False
    return True


class Member:
    """One runner of the group in a thread, with a registry of its own (one process's /metrics)."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.registry = CollectorRegistry()
        self.stop = threading.Event()
        self.runner = BatchRunner(
            make_consumer(bootstrap, group),
            topic,
            lambda records: None,
            batch_size=100,
            max_wait_ms=50,
            commit_interval_ms=200,
            stop=self.stop,
            metrics=ConsumerMetrics.create("bridge", registry=self.registry),
            lag_interval_s=0.2,
            idle_poll_ms=100,
        )
        self.thread = threading.Thread(target=self.runner.run, daemon=True)
        self.thread.start()

    def owned(self) -> set[int]:
        return {tp.partition for tp in self.runner.consumer.assignment() or ()}

    def exported(self) -> set[int]:
        return set(lag_series(self.registry))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the runner did not stop"


@pytest.mark.integration
def test_a_rebalance_moves_each_partitions_lag_series_to_its_new_owner(
    kafka_bootstrap: str, topics: dict[str, str]
) -> None:
    topic = topics["transactions"]
    create_topics(kafka_bootstrap, [topic], partitions=PARTITIONS, retention_ms=3600_000)
    group = f"lag-{uuid.uuid4().hex[:8]}"
    everything = set(range(PARTITIONS))
    first = Member(kafka_bootstrap, group, topic)
    second = None
    try:
        wait_until(
            lambda: first.owned() == everything and first.exported() == everything,
            timeout=60,
            what="the only member to report the lag of every partition",
        )

        second = Member(kafka_bootstrap, group, topic)
        wait_until(
            lambda: second.owned() and first.owned() and second.exported() == second.owned(),
            timeout=30,
            what="the second member to get partitions and report their lag",
        )
        # the first member has had many lag updates (0.2 s apart) since the rebalance
        settled = settles(lambda: first.exported() == first.owned(), timeout=5)
        kept, lost = first.owned(), everything - first.owned()
        assert settled and first.exported() == kept, (
            f"after the rebalance the first member owns partitions {sorted(kept)} but reports "
            f"lag for {sorted(first.exported())}: partitions {sorted(lost & first.exported())} "
            "are reported by both members"
        )
        assert kept | second.owned() == everything and not kept & second.owned()
        # summed over the group, each partition is counted once
        assert sorted([*first.exported(), *second.exported()]) == sorted(everything)

        # the second member leaves: its series go with its partitions, the first takes all back
        second.close()
        assert lag_series(second.registry) == {}, "a consumer that left still reports lag"
        wait_until(
            lambda: first.owned() == everything and first.exported() == everything,
            timeout=30,
            what="the remaining member to report every partition again",
        )
    finally:
        if second is not None and second.thread.is_alive():
            second.close()
        first.close()
    assert lag_series(first.registry) == {}, "a closed consumer still reports lag"


class FakeConsumer:
    """Just what the runner's lag update and listener use: every partition 60 records behind."""

    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def highwater(self, tp: TopicPartition) -> int:
        return 100

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int:
        return 40

    def seek(self, tp: TopicPartition, offset: int) -> None:
        raise AssertionError("nothing was dropped, nothing to seek back to")


@pytest.mark.unit
def test_revoked_and_lost_partitions_leave_the_lag_gauge_even_mid_update() -> None:
    registry = CollectorRegistry()
    consumer = FakeConsumer()
    runner = BatchRunner(
        consumer,
        "t",
        lambda records: None,
        batch_size=10,
        max_wait_ms=50,
        commit_interval_ms=1000,
        stop=threading.Event(),
        metrics=ConsumerMetrics.create("bridge", registry=registry),
        lag_interval_s=0,
    )
    listener = runner._listener()
    tps = {p: TopicPartition("t", p) for p in range(3)}

    consumer.assigned = set(tps.values())
    asyncio.run(listener.on_partitions_assigned(set(tps.values())))
    runner._housekeeping()
    assert lag_series(registry) == {0: 60, 1: 60, 2: 60}

    asyncio.run(listener.on_partitions_revoked({tps[1], tps[2]}))
    assert lag_series(registry) == {0: 60}, "revoked partitions still report lag"
    # a lag update that read the assignment before the rebalance took effect: it must not
    # bring the revoked partitions back
    runner._housekeeping()
    assert lag_series(registry) == {0: 60}, "a lag update revived a revoked partition"

    asyncio.run(listener.on_partitions_lost({tps[0]}))
    assert lag_series(registry) == {}, "a lost partition still reports lag"
