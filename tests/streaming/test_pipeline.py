"""The streaming path on real Kafka and PostgreSQL, bridge and writer as real subprocesses:
nothing lost and nothing doubled through crashes, restarts and outages."""

from __future__ import annotations

import json
import threading
from collections import Counter

import httpx
import psycopg2
import pytest

from .conftest import (
    N_TRANSACTIONS,
    committed_and_end,
    history_ids,
    metric_value,
    produce,
    read_topic,
    wait_until,
)

pytestmark = pytest.mark.integration
RUN_TIMEOUT = 120


def assert_exactly_once(pipe, ids: list[str]) -> None:
    count, distinct = pipe.rows()
    assert (count, distinct) == (len(ids), len(ids))
    assert pipe.ids() == set(ids)


def assert_scoring_once(pipe, ids: list[str]) -> None:
    """``scoring``, read as a read_committed reader does, holds each id's result exactly once
    (the bridge's batches are transactions: a crashed batch's results are aborted)."""
    records = read_topic(pipe.bootstrap, pipe.topics["scoring"], timeout=60)
    seen = Counter(r.key.decode() for r in records)
    assert set(seen) == set(ids)
    assert [tx for tx, n in seen.items() if n > 1] == []


def scores_by_id(pipe) -> dict[str, tuple]:
    with psycopg2.connect(pipe.pg_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT transaction_id, score, fraud_flag, threshold, model_version FROM scores"
        )
        return {r[0]: r[1:] for r in cur.fetchall()}


def test_end_to_end_every_transaction_once_with_the_scorers_score(
    pipeline_factory, history_scorer, kafka_bootstrap, loaded_transactions
):
    import time

    scorer = history_scorer
    pipe = pipeline_factory(scorer.url)
    bridge, writer = pipe.component("bridge").start(), pipe.component("writer").start()
    began = time.monotonic()
    ids = produce(kafka_bootstrap, pipe.topics["transactions"], loaded_transactions)
    pipe.wait_rows(N_TRANSACTIONS, RUN_TIMEOUT)
    took = time.monotonic() - began
    print(f"{N_TRANSACTIONS} transactions -> {pipe.rows()} rows in {took:.1f} s")

    # Prometheus metrics the chart's dashboards and alerts use
    wanted = {
        bridge: [
            "fraudstream_bridge_messages_in_total",
            "fraudstream_bridge_messages_out_total",
            "fraudstream_bridge_batch_size_bucket",
            "fraudstream_bridge_batch_latency_seconds_bucket",
            "fraudstream_bridge_scorer_request_seconds_bucket",
            "fraudstream_bridge_consumer_lag",
        ],
        writer: [
            "fraudstream_writer_messages_in_total",
            "fraudstream_writer_rows_inserted_total",
            "fraudstream_writer_db_write_seconds_bucket",
            "fraudstream_writer_end_to_end_seconds_bucket",
            "fraudstream_writer_consumer_lag",
        ],
    }
    for comp, names in wanted.items():
        port = comp.argv[comp.argv.index("--metrics-port") + 1]
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for name in names:
            assert name in text, (comp.name, name)
        in_total = next(line for line in text.splitlines() if line.startswith(names[0] + " "))
        assert float(in_total.split()[1]) >= N_TRANSACTIONS

    # nothing was processed twice: the writer inserted each id once and met none again (the
    # UNIQUE constraint alone would hide a second insert attempt)
    assert metric_value(writer, "fraudstream_writer_rows_inserted_total") == N_TRANSACTIONS
    assert metric_value(writer, "fraudstream_writer_rows_duplicate_total") == 0
    if scorer.history == "postgres":  # the scorer recorded each transaction once
        history = history_ids(pipe.pg_url)
        assert len(history) == len(set(history)) == N_TRANSACTIONS and set(history) == set(ids)

    # SIGTERM: both finish, commit and exit 0 with every offset committed
    assert bridge.terminate() == 0, bridge.tail()
    assert writer.terminate() == 0, writer.tail()
    assert_exactly_once(pipe, ids)
    for group, topic in (
        (pipe.bridge_group, pipe.topics["transactions"]),
        (pipe.writer_group, pipe.topics["scoring"]),
    ):
        committed, end = committed_and_end(kafka_bootstrap, group, topic)
        assert committed == end, (group, committed, end)

    # the stored scores are what /score_batch says for the same input
    stored = scores_by_id(pipe)
    frame = loaded_transactions.copy()
    frame["transaction_id"] = ids
    from fraudstream.loader import to_transactions
    from fraudstream.replay import transaction_message

    bodies = [transaction_message(tx)[1] for tx in to_transactions(frame)]
    with httpx.Client(base_url=scorer.url, timeout=60) as client:
        for start in range(0, len(bodies), 1000):
            payload = b'{"transactions":[' + b",".join(bodies[start : start + 1000]) + b"]}"
            response = client.post(
                "/score_batch", content=payload, headers={"content-type": "application/json"}
            )
            assert response.status_code == 200, response.text[:500]
            for result in response.json():
                row = stored[result["transaction_id"]]
                assert row == (
                    pytest.approx(result["score"], abs=1e-12),
                    result["fraud_flag"],
                    pytest.approx(result["threshold"]),
                    result["model_version"],
                )


@pytest.mark.parametrize(
    ("victim", "history"),
    [("bridge", "memory"), ("writer", "memory"), ("bridge", "postgres")],
    ids=["bridge", "writer", "bridge-postgres-history"],
)
def test_kill_9_mid_run_then_restart_loses_and_doubles_nothing(
    victim, history, request, pipeline_factory, kafka_bootstrap, loaded_transactions
):
    """With the bridge's transactions the writer (never restarted) meets no result twice; with
    the history in PostgreSQL the re-scored batch is recorded in it once."""
    url = request.getfixturevalue("pg_history_scorer" if history == "postgres" else "scorer_url")
    pipe = pipeline_factory(url)
    parts = {"bridge": pipe.component("bridge"), "writer": pipe.component("writer")}
    for comp in parts.values():
        comp.start()
    sender = threading.Thread(
        target=lambda: ids.extend(
            produce(kafka_bootstrap, pipe.topics["transactions"], loaded_transactions)
        )
    )
    ids: list[str] = []
    sender.start()
    wait_until(lambda: pipe.rows()[0] >= N_TRANSACTIONS // 4, RUN_TIMEOUT, what="a quarter")
    parts[victim].kill()
    killed_at = pipe.rows()[0]
    assert killed_at < N_TRANSACTIONS, "the run finished before the kill"
    parts[victim].start()
    sender.join(RUN_TIMEOUT)
    pipe.wait_rows(N_TRANSACTIONS, RUN_TIMEOUT)
    # let the restarted consumer finish what it re-reads; nothing more may appear
    wait_until(
        lambda: (
            committed_and_end(
                kafka_bootstrap,
                pipe.bridge_group if victim == "bridge" else pipe.writer_group,
                pipe.topics["transactions" if victim == "bridge" else "scoring"],
            )[0]
            >= N_TRANSACTIONS
        ),
        60,
        what="offsets committed after the restart",
    )
    assert_exactly_once(pipe, ids)
    assert_scoring_once(pipe, ids)
    if victim == "bridge":
        writer = parts["writer"]
        assert metric_value(writer, "fraudstream_writer_rows_duplicate_total") == 0
        assert metric_value(writer, "fraudstream_writer_rows_inserted_total") == N_TRANSACTIONS
    if history == "postgres":
        recorded = history_ids(pipe.pg_url)
        assert len(recorded) == len(set(recorded)) and set(recorded) == set(ids)
    print(f"{victim} killed at {killed_at} rows; {len(ids)} rows, all distinct")


def test_scorer_down_for_10_s_mid_run_the_bridge_waits_and_resumes(
    pipeline_factory, stoppable_scorer, kafka_bootstrap, loaded_transactions
):
    import time

    scorer = stoppable_scorer
    pipe = pipeline_factory(scorer.url)
    bridge = pipe.component("bridge").start()
    pipe.component("writer").start()
    ids: list[str] = []
    sender = threading.Thread(
        target=lambda: ids.extend(
            produce(kafka_bootstrap, pipe.topics["transactions"], loaded_transactions, rate=4000)
        )
    )
    sender.start()
    wait_until(lambda: pipe.rows()[0] >= N_TRANSACTIONS // 5, RUN_TIMEOUT, what="a fifth")
    scorer.stop()
    down_at = pipe.rows()[0]
    time.sleep(10)
    assert bridge.alive, bridge.tail()
    stalled = pipe.rows()[0]
    scorer.start()
    sender.join(RUN_TIMEOUT)
    pipe.wait_rows(N_TRANSACTIONS, RUN_TIMEOUT)
    assert_exactly_once(pipe, ids)
    assert stalled < N_TRANSACTIONS
    log = bridge.log_path.read_text()
    assert "retrying" in log and "scorer answered again" in log
    print(f"scorer stopped at {down_at} rows, {stalled} after 10 s down; all {len(ids)} stored")


def test_postgres_restart_mid_run_the_writer_reconnects(
    pipeline_factory, scorer, kafka_bootstrap, loaded_transactions, postgres_server
):
    if postgres_server is None:
        pytest.skip("DATABASE_URL points at an external server")
    pipe = pipeline_factory(scorer.url)
    pipe.component("bridge").start()
    writer = pipe.component("writer").start()
    ids: list[str] = []
    sender = threading.Thread(
        target=lambda: ids.extend(
            produce(kafka_bootstrap, pipe.topics["transactions"], loaded_transactions)
        )
    )
    sender.start()
    wait_until(lambda: pipe.rows()[0] >= N_TRANSACTIONS // 5, RUN_TIMEOUT, what="a fifth")
    postgres_server.restart()
    sender.join(RUN_TIMEOUT)
    pipe.wait_rows(N_TRANSACTIONS, RUN_TIMEOUT)
    assert writer.alive and writer.starts == 1
    assert_exactly_once(pipe, ids)
    assert "reconnected to PostgreSQL" in writer.log_path.read_text()


def test_kafka_broker_restart_mid_run_loses_nothing(
    pipeline_factory, scorer, kafka_bootstrap, kafka_broker, loaded_transactions
):
    if kafka_broker is None:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS points at an external broker")
    pipe = pipeline_factory(scorer.url)
    bridge, writer = pipe.component("bridge").start(), pipe.component("writer").start()
    ids = produce(kafka_bootstrap, pipe.topics["transactions"], loaded_transactions)
    wait_until(lambda: pipe.rows()[0] >= N_TRANSACTIONS // 5, RUN_TIMEOUT, what="a fifth")
    kafka_broker.restart()
    pipe.wait_rows(N_TRANSACTIONS, RUN_TIMEOUT)
    assert bridge.alive and writer.alive
    assert_exactly_once(pipe, ids)


def test_poison_messages_go_to_the_dlq_and_everything_else_is_scored(
    pipeline_factory, scorer, kafka_bootstrap, loaded_transactions
):
    from fraudstream.kafka_runner import make_producer
    from fraudstream.schema import EXAMPLE_TRANSACTION

    pipe = pipeline_factory(scorer.url)
    pipe.component("bridge").start()
    pipe.component("writer").start()
    good = loaded_transactions.iloc[:2000]
    poison = {
        b"{not json": "not_json",
        b"\xff\xfe\xfd": "not_json",
        b'"just a string"': "invalid",
        json.dumps({**EXAMPLE_TRANSACTION, "amount": -1}).encode(): "invalid",
        json.dumps({**EXAMPLE_TRANSACTION, "cat_id": "casino"}).encode(): "invalid",
        json.dumps({**EXAMPLE_TRANSACTION, "extra": 1}).encode(): "invalid",
        json.dumps({k: v for k, v in EXAMPLE_TRANSACTION.items() if k != "merch"}).encode(): (
            "invalid"
        ),
    }
    producer = make_producer(kafka_bootstrap)
    for value in poison:
        producer.send(pipe.topics["transactions"], key=b"poison", value=value)
    producer.flush()
    producer.close()
    ids = produce(kafka_bootstrap, pipe.topics["transactions"], good)
    pipe.wait_rows(len(ids), RUN_TIMEOUT)
    assert_exactly_once(pipe, ids)

    wait_until(
        lambda: len(read_topic(kafka_bootstrap, pipe.topics["dlq"], 2)) >= len(poison),
        30,
        what="DLQ records",
    )
    dlq = read_topic(kafka_bootstrap, pipe.topics["dlq"])
    assert len(dlq) == len(poison)
    for record in dlq:
        headers = {k: v for k, v in record.headers}
        assert headers["error_type"].decode() == poison[record.value]
        assert headers["error"] and headers["source_topic"] == pipe.topics["transactions"].encode()
        assert int(headers["source_offset"]) >= 0


def test_a_topic_of_mostly_poison_stops_the_bridge_instead_of_draining_it(
    pipeline_factory, scorer, kafka_bootstrap, loaded_transactions
):
    from fraudstream.kafka_runner import make_producer

    pipe = pipeline_factory(scorer.url, DLQ_WINDOW="100", DLQ_MAX_RATIO="0.5")
    producer = make_producer(kafka_bootstrap)
    for i in range(300):
        producer.send(pipe.topics["transactions"], key=b"k", value=b"garbage %d" % i)
    producer.flush()
    producer.close()
    bridge = pipe.component("bridge").start()
    assert bridge.proc.wait(60) == 3, bridge.tail()
    assert "poison" in bridge.tail()
    committed, end = committed_and_end(
        kafka_bootstrap, pipe.bridge_group, pipe.topics["transactions"]
    )
    assert committed < end
    assert len(read_topic(kafka_bootstrap, pipe.topics["dlq"], 3)) < 300


def test_two_bridges_and_two_writers_share_the_work_through_rebalances(
    pipeline_factory, scorer, kafka_bootstrap, loaded_transactions
):
    """Dynamic membership: members join and one leaves (SIGTERM) mid-run; the revocations
    commit what was done, the rest is re-read by the next owner; every row once."""
    import re

    pipe = pipeline_factory(scorer.url, BRIDGE_GROUP_INSTANCE_ID="", WRITER_GROUP_INSTANCE_ID="")
    first_bridge = pipe.component("bridge").start()
    pipe.component("writer").start()
    ids: list[str] = []
    sender = threading.Thread(
        target=lambda: ids.extend(
            produce(kafka_bootstrap, pipe.topics["transactions"], loaded_transactions, rate=1500)
        )
    )
    sender.start()
    wait_until(lambda: pipe.rows()[0] >= 1000, RUN_TIMEOUT, what="the first rows")
    second_bridge = pipe.component("bridge").start()
    second_writer = pipe.component("writer").start()
    joined = re.compile(r"partitions assigned: \[\d")
    wait_until(
        lambda: all(
            c.log_path.exists() and joined.search(c.log_path.read_text())
            for c in (second_bridge, second_writer)
        ),
        60,
        what="the second members to get partitions",
    )
    assert first_bridge.terminate() == 0, first_bridge.tail()
    assert pipe.rows()[0] < N_TRANSACTIONS, "the run finished before the rebalances"
    sender.join(RUN_TIMEOUT)
    pipe.wait_rows(N_TRANSACTIONS, RUN_TIMEOUT)
    assert_exactly_once(pipe, ids)
    assert_scoring_once(pipe, ids)
