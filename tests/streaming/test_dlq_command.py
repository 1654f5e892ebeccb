"""``fraudstream dlq list`` / ``dlq replay`` against the real broker, and a replay (twice) after
a fix through the real bridge and writer: every transaction stored once."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from fraudstream.schema import EXAMPLE_TRANSACTION

from .conftest import FRAUDSTREAM, committed_and_end, read_topic, wait_until
from .conftest import topic_env as streaming_topic_env

pytestmark = pytest.mark.integration

PERSONAL_VALUES = ("Jane", "Doe", "Darlene", "33.9659", "-80.9355")


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*FRAUDSTREAM, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=90
    )


def topic_env(bootstrap: str, topics: dict[str, str]) -> dict[str, str]:
    return {**streaming_topic_env(bootstrap, topics), "LOG_FORMAT": "json"}


def dead_letter(topic: str, partition: int, offset: int, error_type: str) -> list:
    return [
        ("error", f"{error_type}: something about a field".encode()),
        ("error_type", error_type.encode()),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
    ]


@pytest.fixture
def filled_dlq(kafka_bootstrap: str, topics: dict[str, str]) -> dict[str, list]:
    """A DLQ as the consumers leave it: 3 scorer_error records (two of them the same source
    record, dead-lettered twice after a crash), 2 invalid, 1 write_error from ``scoring``."""
    from fraudstream.kafka_runner import make_producer
    from fraudstream.topics import create_topics

    create_topics(kafka_bootstrap, list(topics.values()), 3, 3600_000, 1)
    tx, sc = topics["transactions"], topics["scoring"]
    docs = [
        {**EXAMPLE_TRANSACTION, "transaction_id": str(uuid.uuid4()), "amount": 10.0 + i}
        for i in range(4)
    ]
    rows = {
        "scorer_error": [
            (b"card-a", json.dumps(docs[0]).encode(), dead_letter(tx, 1, 5, "scorer_error")),
            (b"card-b", json.dumps(docs[1]).encode(), dead_letter(tx, 2, 6, "scorer_error")),
            (b"card-b", json.dumps(docs[1]).encode(), dead_letter(tx, 2, 6, "scorer_error")),
        ],
        "invalid": [
            (
                b"card-c",
                json.dumps({**docs[2], "amount": -1}).encode(),
                dead_letter(tx, 0, 1, "invalid"),
            ),
            (b"card-c", b"{not json", dead_letter(tx, 0, 2, "invalid")),
        ],
        "write_error": [
            (
                docs[3]["transaction_id"].encode(),
                b'{"transaction_id": "x"}',
                dead_letter(sc, 4, 9, "write_error"),
            ),
        ],
    }
    producer = make_producer(kafka_bootstrap)
    try:
        for records in rows.values():
            for key, value, headers in records:
                producer.send(topics["dlq"], key=key, value=value, headers=headers)
        producer.flush()
    finally:
        producer.close()
    return rows


def test_dlq_list_counts_each_error_type_and_never_prints_contents(
    kafka_bootstrap, topics, filled_dlq
):
    env = topic_env(kafka_bootstrap, topics)
    listed = cli("dlq", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    groups = {(g["error_type"], g["source_topic"]): g for g in json.loads(listed.stdout)}
    assert {k: g["count"] for k, g in groups.items()} == {
        ("scorer_error", topics["transactions"]): 3,
        ("invalid", topics["transactions"]): 2,
        ("write_error", topics["scoring"]): 1,
    }
    for group in groups.values():
        assert group["first_at"] <= group["last_at"]
        assert {"first_offset", "last_offset"} <= set(group)

    table = cli("dlq", "list", env=env)
    assert table.returncode == 0, table.stderr
    line = next(x for x in table.stdout.splitlines() if x.startswith("scorer_error"))
    assert " 3 " in f" {line} " and topics["transactions"] in line
    for out in (listed, table):
        text = out.stdout + out.stderr
        assert not any(v in text for v in PERSONAL_VALUES), text
        assert "not json" not in text and "something about" not in text


def test_dlq_replay_resends_original_key_and_bytes_once_per_record(
    kafka_bootstrap, topics, filled_dlq
):
    env = topic_env(kafka_bootstrap, topics)
    dry = cli("dlq", "replay", "--reason", "scorer_error", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "2" in dry.stdout and "dry run" in dry.stdout.lower()
    assert read_topic(kafka_bootstrap, topics["transactions"], 3) == []

    done = cli("dlq", "replay", "--reason", "scorer_error", env=env)
    assert done.returncode == 0, done.stderr
    replayed = read_topic(kafka_bootstrap, topics["transactions"])
    originals = {(k, v) for k, v, _ in filled_dlq["scorer_error"]}
    assert len(replayed) == 2 and {(r.key, r.value) for r in replayed} == originals
    origins = sorted(
        tuple(dict(r.headers)[h].decode() for h in ("origin_partition", "origin_offset"))
        for r in replayed
    )
    assert origins == [("1", "5"), ("2", "6")]
    assert read_topic(kafka_bootstrap, topics["scoring"], 2) == []  # nothing else moved

    back = cli("dlq", "replay", "--reason", "write_error", env=env)
    assert back.returncode == 0, back.stderr
    scoring = read_topic(kafka_bootstrap, topics["scoring"])
    assert [(r.key, r.value) for r in scoring] == [(k, v) for k, v, _ in filled_dlq["write_error"]]
    for out in (dry, done, back):
        assert not any(v in out.stdout + out.stderr for v in PERSONAL_VALUES)


def test_replaying_twice_after_a_fix_stores_every_transaction_once(
    pipeline_factory, stub_scorer_factory, kafka_bootstrap
):
    """A scorer bug sends two records to the DLQ (one without a transaction_id: the bridge
    derives its id from where it came from); after the fix, two replays store each once."""
    from .test_poison import produce_values, transactions

    broken = "fraud_Broken Merchant"
    stub = stub_scorer_factory(STUB_ERROR_MERCHANT=broken)
    pipe = pipeline_factory(stub.url, SCORER_MAX_ATTEMPTS="2")
    ids, values = transactions(
        60, **{"10": {"merch": broken}, "40": {"merch": broken, "transaction_id": None}}
    )
    values[40] = (
        values[40][0],
        json.dumps(
            {k: v for k, v in json.loads(values[40][1]).items() if k != "transaction_id"}
        ).encode(),
    )
    pipe.component("bridge").start()
    pipe.component("writer").start()
    produce_values(kafka_bootstrap, pipe.topics["transactions"], values)
    pipe.wait_rows(58, 45)
    wait_until(
        lambda: len(read_topic(kafka_bootstrap, pipe.topics["dlq"], 2)) == 2, 20, what="the DLQ"
    )

    stub.restart()  # the fix
    env = topic_env(kafka_bootstrap, pipe.topics)
    for _ in range(2):
        out = cli("dlq", "replay", "--reason", "scorer_error", env=env)
        assert out.returncode == 0, out.stderr
    pipe.wait_rows(60, 45)
    wait_until(
        lambda: (
            committed_and_end(kafka_bootstrap, pipe.bridge_group, pipe.topics["transactions"])
            == (64, 64)
        ),
        30,
        what="the bridge to consume both replays",
    )
    # 58 + 2 + 2 results (the bridge's transactions' markers take offsets too: the writer has
    # consumed everything when its offsets reach the end)
    assert len(read_topic(kafka_bootstrap, pipe.topics["scoring"])) == 62

    def writer_at_the_end() -> bool:
        committed, end = committed_and_end(
            kafka_bootstrap, pipe.writer_group, pipe.topics["scoring"]
        )
        return committed == end

    wait_until(writer_at_the_end, 30, what="the writer to consume both replays")
    count, distinct = pipe.rows()
    assert count == distinct == 60
    assert ids[10] in pipe.ids()
    assert len(read_topic(kafka_bootstrap, pipe.topics["dlq"])) == 2  # nothing new
