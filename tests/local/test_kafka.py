"""The local Kafka harness: a real KRaft broker moving 10,000 messages exactly once."""

from __future__ import annotations

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

pytestmark = pytest.mark.integration


def test_ten_thousand_messages_through_a_consumer_group_once(kafka_bootstrap, topics):
    topic = topics["transactions"]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])
    admin.close()

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    for i in range(10_000):
        producer.send(topic, key=str(i % 97).encode(), value=str(i).encode())
    producer.flush()
    producer.close()

    group = f"g-{topic}"
    seen: list[int] = []
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    partitions_used = set()
    idle_polls = 0
    while len(seen) < 10_000 and idle_polls < 30:
        batch = consumer.poll(timeout_ms=1000, max_records=2000)
        idle_polls = 0 if batch else idle_polls + 1
        for tp, records in batch.items():
            partitions_used.add(tp.partition)
            seen.extend(int(r.value) for r in records)
        consumer.commit()
    consumer.close()

    assert len(seen) == 10_000
    assert sorted(seen) == list(range(10_000))
    assert partitions_used == set(range(6))

    # A second member of the same group finds every offset committed: nothing to re-read.
    again = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    tps = [TopicPartition(topic, p) for p in range(6)]
    committed = sum(again.committed(tp) or 0 for tp in tps)
    end = sum(again.end_offsets(tps).values())
    again.close()
    assert committed == end == 10_000
