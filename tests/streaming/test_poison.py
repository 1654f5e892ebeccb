"""Poison that used to stall or drain the pipeline, against the real Kafka broker and PostgreSQL
with the real ``fraudstream bridge`` / ``writer`` processes (a stub scorer plays the broken one).

- a scorer that refuses every call (wrong URL, credentials, API) stops the bridge: nothing goes
  to the DLQ and no offset moves;
- a record the scorer fails on (a 500 for it and only it) goes to the DLQ; the rest is scored;
- a scoring message PostgreSQL refuses, or one with control characters, goes to the DLQ; the
  rest is stored; a database that refuses everything stops the writer (the ratio guard).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import psycopg2
import pytest

from fraudstream.schema import EXAMPLE_TRANSACTION

from .conftest import committed_and_end, read_topic, wait_until

pytestmark = pytest.mark.integration

PERSONAL_VALUES = ("Jane", "Doe", "Darlene", "33.9659")


def produce_values(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    from fraudstream.kafka_runner import make_producer

    producer = make_producer(bootstrap)
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in values]
        producer.flush()
        assert all(f.exception is None for f in futures)
    finally:
        producer.close()


def transactions(n: int, **changes_at: dict) -> tuple[list[str], list[tuple[bytes, bytes]]]:
    """``n`` valid transactions (fresh ids, one card each); ``changes_at={"7": {...}}`` alters
    the 7th. Returns (ids, [(key, value)])."""
    ids, values = [], []
    for i in range(n):
        doc = {
            **EXAMPLE_TRANSACTION,
            "transaction_id": str(uuid.uuid4()),
            "name_1": f"Jane{i}",
            "amount": 10.0 + i,
            **changes_at.get(str(i), {}),
        }
        ids.append(doc.get("transaction_id"))
        values.append((f"card-{i}".encode(), json.dumps(doc).encode()))
    return ids, values


def score_messages(n: int, **changes_at: dict) -> tuple[list[str], list[tuple[bytes, bytes]]]:
    """``n`` valid values of the ``scoring`` topic, as the bridge produces them."""
    ids, values = [], []
    for i in range(n):
        tx_id = str(uuid.uuid4())
        doc = {
            "transaction_id": tx_id,
            "score": 0.91,
            "fraud_flag": True,
            "threshold": 0.5,
            "model_version": "m:1",
            "reasons": [{"feature": "amount", "value": 950.0, "impact": 1.2}],
            "amount": 950.0,
            "category": "shopping_net",
            "merchant": "fraud_Kirlin and Sons",
            "event_time": "2020-06-21 22:41:07",
            "produced_at": "2026-01-01T00:00:00.000+00:00",
            "scored_at": "2026-01-01T00:00:00.100+00:00",
            **changes_at.get(str(i), {}),
        }
        ids.append(tx_id)
        values.append((tx_id.encode(), json.dumps(doc).encode()))
    return ids, values


def headers_of(record) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


# --------------------------------------------------------------------------- the bridge

REFUSALS = {
    "404-not-found": {"STUB_STATUS": "404", "STUB_BODY": "<html>404 Not Found</html>"},
    "401-unauthorized": {"STUB_STATUS": "401", "STUB_BODY": '{"detail": "not authenticated"}'},
    "400-without-reason": {"STUB_STATUS": "400", "STUB_BODY": '{"error": "bad request"}'},
}


def exit_code(component, failure: str, within_s: float = 90) -> int:
    """The exit code of a component that must stop by itself; the test fails if it keeps running.
    It stops within seconds; the bound is wide because a loaded CI machine can take 20 s only
    to start the process and join the group."""
    try:
        return component.proc.wait(within_s)
    except subprocess.TimeoutExpired:
        pytest.fail(failure)


@pytest.mark.parametrize("batch_size", [1, 2, 500])
@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_scorer_refusing_every_call_stops_the_bridge_without_touching_the_dlq_or_offsets(
    refusal, batch_size, pipeline_factory, stub_scorer_factory, kafka_bootstrap
):
    stub = stub_scorer_factory(**REFUSALS[refusal])
    pipe = pipeline_factory(stub.url, BRIDGE_BATCH_SIZE=str(batch_size))
    _, values = transactions(60)
    produce_values(kafka_bootstrap, pipe.topics["transactions"], values)
    bridge = pipe.component("bridge").start()
    code = exit_code(bridge, f"the bridge kept running against a scorer answering {refusal}")
    assert code == 4, bridge.tail()
    assert read_topic(kafka_bootstrap, pipe.topics["dlq"], 3) == []
    assert read_topic(kafka_bootstrap, pipe.topics["scoring"], 3) == []
    assert committed_and_end(kafka_bootstrap, pipe.bridge_group, pipe.topics["transactions"]) == (
        0,
        60,
    )
    log = bridge.log_path.read_text()
    assert "scorer" in log and not any(v in log for v in PERSONAL_VALUES)


def test_a_scorer_rejecting_every_record_stops_the_bridge_even_one_record_at_a_time(
    pipeline_factory, stub_scorer_factory, kafka_bootstrap
):
    """400 with the scorer's own reason is a record-level rejection; but when a transaction the
    scorer accepted before (or the schema's example) is rejected too, the scorer is at fault."""
    body = '{"error": "transactions.0.amount: bad", "field": "transactions.0.amount", '
    body += '"reason": "invalid_value"}'
    stub = stub_scorer_factory(STUB_STATUS="400", STUB_BODY=body)
    pipe = pipeline_factory(stub.url, BRIDGE_BATCH_SIZE="1")
    _, values = transactions(60)
    produce_values(kafka_bootstrap, pipe.topics["transactions"], values)
    bridge = pipe.component("bridge").start()
    code = exit_code(
        bridge, "the bridge kept draining records rejected by a scorer that rejects all"
    )
    assert code == 4, bridge.tail()
    assert read_topic(kafka_bootstrap, pipe.topics["dlq"], 3) == []
    assert (
        committed_and_end(kafka_bootstrap, pipe.bridge_group, pipe.topics["transactions"])[0] == 0
    )


def test_a_record_the_scorer_fails_on_goes_to_the_dlq_and_every_other_is_scored(
    pipeline_factory, stub_scorer_factory, kafka_bootstrap
):
    ids, values = transactions(120)
    bad = ids[37]
    stub = stub_scorer_factory(STUB_ERROR_IDS=bad)
    pipe = pipeline_factory(stub.url, SCORER_MAX_ATTEMPTS="2")
    pipe.component("bridge").start()
    pipe.component("writer").start()
    produce_values(kafka_bootstrap, pipe.topics["transactions"], values)
    pipe.wait_rows(119, 45)
    wait_until(lambda: read_topic(kafka_bootstrap, pipe.topics["dlq"], 2), 20, what="the DLQ")
    dlq = read_topic(kafka_bootstrap, pipe.topics["dlq"])
    assert len(dlq) == 1
    headers = headers_of(dlq[0])
    assert headers["error_type"] == "scorer_error" and "500" in headers["error"]
    assert dlq[0].value == values[37][1] and dlq[0].key == values[37][0]  # original bytes
    assert pipe.ids() == set(ids) - {bad}
    assert all(c.alive for c in pipe.components)


def test_a_scorer_failing_every_call_makes_the_bridge_wait_not_drain(
    pipeline_factory, stub_scorer_factory, kafka_bootstrap
):
    """500 to everything, even to a transaction it scored before: the scorer is broken, not
    the records. The bridge keeps retrying (nothing to the DLQ) and resumes once it is fixed."""
    stub = stub_scorer_factory(STUB_STATUS="500")
    pipe = pipeline_factory(stub.url, SCORER_MAX_ATTEMPTS="2", BRIDGE_BATCH_SIZE="5")
    bridge = pipe.component("bridge").start()
    pipe.component("writer").start()
    ids, values = transactions(30)
    produce_values(kafka_bootstrap, pipe.topics["transactions"], values)
    time.sleep(8)
    assert bridge.alive, bridge.tail()
    assert read_topic(kafka_bootstrap, pipe.topics["dlq"], 2) == []
    assert pipe.rows()[0] == 0
    stub.restart()
    pipe.wait_rows(30, 45)
    assert pipe.ids() == set(ids)
    assert read_topic(kafka_bootstrap, pipe.topics["dlq"], 2) == []


# --------------------------------------------------------------------------- the writer

REFUSED_ROWS = [
    # numeric(14, 2) overflows: valid JSON and schema, refused by PostgreSQL
    pytest.param({"amount": 1e13}, "write_error", id="amount-overflows-numeric"),
    # psycopg2 refuses NUL in a string (ValueError), PostgreSQL refuses \u0000 in jsonb
    pytest.param({"merchant": "fraud_\x00Kirlin"}, "invalid", id="nul-in-merchant"),
    pytest.param({"model_version": "m\x001"}, "invalid", id="nul-in-model-version"),
    pytest.param(
        {"reasons": [{"feature": "amount\x00", "value": 1.0, "impact": 0.5}]},
        "invalid",
        id="nul-in-reasons",
    ),
    pytest.param({"category": "travel\x1b[2J"}, "invalid", id="escape-in-category"),
]


@pytest.mark.parametrize(("change", "error_type"), REFUSED_ROWS)
def test_a_scoring_message_that_cannot_be_stored_goes_to_the_dlq_and_the_rest_is_stored(
    change, error_type, pipeline_factory, kafka_bootstrap
):
    pipe = pipeline_factory("http://127.0.0.1:9")
    ids, values = score_messages(40, **{"17": change})
    produce_values(kafka_bootstrap, pipe.topics["scoring"], values)
    writer = pipe.component("writer").start()
    pipe.wait_rows(39, 30)
    wait_until(lambda: read_topic(kafka_bootstrap, pipe.topics["dlq"], 2), 20, what="the DLQ")
    dlq = read_topic(kafka_bootstrap, pipe.topics["dlq"])
    assert [headers_of(r)["error_type"] for r in dlq] == [error_type]
    assert dlq[0].value == values[17][1]
    assert pipe.ids() == set(ids) - {ids[17]}
    assert writer.alive and writer.starts == 1, writer.tail()
    wait_until(
        lambda: (
            committed_and_end(kafka_bootstrap, pipe.writer_group, pipe.topics["scoring"])[0] == 40
        ),
        20,
        what="the writer's offsets",
    )


def test_a_database_refusing_every_row_stops_the_writer_instead_of_draining(
    pipeline_factory, kafka_bootstrap
):
    pipe = pipeline_factory("http://127.0.0.1:9", DLQ_WINDOW="100")
    with psycopg2.connect(pipe.pg_url) as conn, conn.cursor() as cur:  # a bad migration
        cur.execute("ALTER TABLE scores ADD CONSTRAINT no_rows CHECK (amount < 0) NOT VALID")
    _, values = score_messages(120)
    # one key, so one partition: the writer's first batch holds all of them
    produce_values(kafka_bootstrap, pipe.topics["scoring"], [(b"k", v) for _, v in values])
    writer = pipe.component("writer").start()
    assert writer.proc.wait(30) == 3, writer.tail()
    assert read_topic(kafka_bootstrap, pipe.topics["dlq"], 2) == []
    assert committed_and_end(kafka_bootstrap, pipe.writer_group, pipe.topics["scoring"])[0] == 0
