"""`fraudstream topics create`, `migrate` (scores) and `replay` as commands on real servers."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
from psycopg2.extras import execute_values

from fraudstream.schema import PERSONAL_FIELDS, Transaction
from fraudstream.scored_transaction import TABLE_COLUMNS, ScoredTransaction

from .conftest import FRAUDSTREAM, read_topic, topic_env

pytestmark = pytest.mark.integration


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*FRAUDSTREAM, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_topics_create_is_idempotent_with_explicit_partitions_and_retention(
    kafka_bootstrap, topics
):
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    env = {**topic_env(kafka_bootstrap, topics), "TOPIC_RETENTION_BYTES": "123456789"}
    first = cli("topics", "create", "--partitions", "4", "--retention-ms", "3600000", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count(": created") == 5  # transactions, scoring, dlq, labels, shadow
    again = cli("topics", "create", "--partitions", "4", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("exists (4 partitions)") == 5

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = {t["name"]: t for t in admin.describe_topics(list(topics.values()))}
        assert all(len(described[n]["partitions"]) == 4 for n in topics.values())
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topics["transactions"])]
        )
        text = json.dumps(configs, default=str)
        assert "retention.ms" in text and "3600000" in text
        assert "retention.bytes" in text and "123456789" in text
    finally:
        admin.close()


@pytest.mark.parametrize("table", ["scores", "scores_shadow"])
def test_the_scores_table_is_the_result_contract_without_personal_data(pg_url, table):
    """The migrations' ``scores`` columns, and those of the challenger's ``scores_shadow``
    (written by the same writer), are the fields of :class:`ScoredTransaction` in order,
    between PostgreSQL's row id and ``written_at``; only the fields that may be None are
    nullable."""
    from fraudstream.migrations import migrate

    migrate(pg_url)
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT column_name, is_nullable = 'YES' FROM information_schema.columns "
            "WHERE table_name = %s AND table_schema = current_schema() "
            "ORDER BY ordinal_position",
            (table,),
        )
        columns = dict(cur.fetchall())
    assert tuple(columns) == TABLE_COLUMNS
    fields = ScoredTransaction.model_fields
    assert {c for c, nullable in columns.items() if nullable} == {
        name for name, field in fields.items() if field.default is None
    }
    assert not set(columns) & (PERSONAL_FIELDS | {"street", "first", "last", "name"})


def scores_row(tx_id: str, score: float) -> tuple:
    """The ``scores`` row of a minimal result (flagged from 0.5 on)."""
    result = {
        "transaction_id": tx_id,
        "score": score,
        "fraud_flag": score >= 0.5,
        "threshold": 0.5,
        "model_version": "m:1",
        "amount": 10,
        "category": "travel",
        "merchant": "fraud_X",
        "event_time": "2020-01-01 10:00:00",
        "scored_at": "2026-01-01T00:00:00Z",
    }
    return ScoredTransaction.model_validate(result).row()


def test_migrate_creates_scores_idempotent_on_transaction_id(pg_url):
    from fraudstream.migrations import migrate
    from fraudstream.writer import INSERT_SQL

    assert "0002_scores" in migrate(pg_url)
    assert migrate(pg_url) == []
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        for i in range(30):
            execute_values(cur, INSERT_SQL, [scores_row(f"id{i}", 0.9 if i % 3 == 0 else 0.1)])
        execute_values(cur, INSERT_SQL, [scores_row("id0", 0.99)])
        assert cur.rowcount == 0
        cur.execute("SELECT count(*) FROM scores")
        assert cur.fetchone()[0] == 30
        cur.execute("SELECT transaction_id FROM scores_recent_fraud LIMIT 3")
        assert [r[0] for r in cur.fetchall()] == ["id27", "id24", "id21"]
        cur.execute("EXPLAIN SELECT * FROM scores_recent_fraud LIMIT 10")
        assert "scores_fraud_recent" in "\n".join(r[0] for r in cur.fetchall())


def kaggle_csv(frame, path: Path, bad_rows: dict[int, tuple[str, str]]) -> None:
    """The frame in the Kaggle shape (with its extra columns), some cells spoiled."""
    from fraudstream.loader import KAGGLE_NAMES
    from fraudstream.schema import TIME_FORMAT

    out = frame.drop(columns=["transaction_id"], errors="ignore").rename(columns=KAGGLE_NAMES)
    out["trans_date_trans_time"] = out["trans_date_trans_time"].dt.strftime(TIME_FORMAT)
    out.insert(0, "cc_num", 4000123412341234)
    out["unix_time"] = 0
    out = out.astype({c: object for c in out.columns})
    for row, (column, value) in bad_rows.items():
        out.at[row, column] = value
    out.to_csv(path, index=True, index_label="Unnamed: 0")


def test_replay_a_kaggle_csv_keys_by_card_holder_in_order_and_counts_rejects(
    kafka_bootstrap, topics, loaded_transactions, tmp_path
):
    frame = loaded_transactions.iloc[:3000].reset_index(drop=True)
    bad = {5: ("amt", "-3"), 17: ("category", "casino"), 40: ("trans_date_trans_time", "soon")}
    path = tmp_path / "fraudTest.csv"
    kaggle_csv(frame, path, bad)
    env = topic_env(kafka_bootstrap, topics)
    cli("topics", "create", env=env)

    done = cli("replay", str(path), "--rate", "0", "--no-progress", env=env)
    assert done.returncode == 0, done.stderr
    assert "sent 2,997, rejected 3" in done.stdout

    records = read_topic(kafka_bootstrap, topics["transactions"], 30)
    assert len(records) == 2997
    ids = set()
    partition_of: dict[bytes, int] = {}
    times_by_key: dict[bytes, list] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        tx = Transaction.model_validate_json(record.value)
        assert record.key == tx.card_key.encode()
        assert str(uuid.UUID(tx.transaction_id)) == tx.transaction_id
        assert tx.target is None  # labels are not streamed
        ids.add(tx.transaction_id)
        assert partition_of.setdefault(record.key, record.partition) == record.partition
        times_by_key.setdefault(record.key, []).append(tx.transaction_time)
    assert len(ids) == 2997
    assert len(set(partition_of.values())) > 1
    for times in times_by_key.values():  # a holder's transactions in file order = time order
        assert times == sorted(times)


def test_replay_keeps_the_requested_rate_and_limit(kafka_bootstrap, topics, transactions_csv):
    env = topic_env(kafka_bootstrap, topics)
    cli("topics", "create", env=env)
    began = time.monotonic()
    done = cli("replay", str(transactions_csv), "--rate", "250", "--limit", "500", env=env)
    took = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert "sent 500, rejected 0" in done.stdout
    assert "replay [" in done.stderr  # the progress bar
    assert took >= 1.9, took
    assert len(read_topic(kafka_bootstrap, topics["transactions"], 20)) == 500


def test_replay_reports_a_file_it_cannot_read(kafka_bootstrap, topics, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a;b;c\n1;2;3\n")
    done = cli("replay", str(path), env=topic_env(kafka_bootstrap, topics))
    assert done.returncode == 2
    assert "delimiter" in done.stderr
