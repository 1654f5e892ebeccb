"""The analyst page's read queries against a real PostgreSQL with the real migrations."""

from __future__ import annotations

import psycopg2
import pytest
from psycopg2.extras import execute_values

from fraudstream.migrations import migrate
from fraudstream.results import latest_frauds, latest_scores, reasons_text, scores_for
from fraudstream.scored_transaction import TABLE_COLUMNS, ScoredTransaction
from fraudstream.writer import INSERT_SQL

pytestmark = pytest.mark.integration


@pytest.fixture
def scores_db(pg_url: str) -> str:
    migrate(pg_url)
    rows = []
    for i in range(150):
        flagged = i % 10 == 0
        reasons = [{"feature": "amount", "value": 900.0 + i, "impact": 2.5}] if flagged else []
        result = {
            "transaction_id": f"tx-{i:03d}",
            "score": 0.9 if flagged else 0.01,
            "fraud_flag": flagged,
            "threshold": 0.3,
            "model_version": "fraud-model:t",
            "reasons": reasons,
            "amount": 12.5 + i,
            "category": "shopping_net",
            "merchant": "fraud_Shop",
            "event_time": f"2020-06-21 {i % 24:02d}:00:00",
            "scored_at": "2020-06-21T00:00:00Z",
        }
        rows.append(ScoredTransaction.model_validate(result).row())
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        execute_values(cur, INSERT_SQL, rows)
    return pg_url


def test_latest_frauds_are_the_newest_flagged_rows(scores_db):
    frauds = latest_frauds(scores_db, 10)
    assert len(frauds) == 10
    assert frauds["fraud_flag"].all()
    assert list(frauds["transaction_id"]) == [f"tx-{i:03d}" for i in range(140, -1, -10)][:10]
    assert reasons_text(frauds["reasons"].iloc[0]) == "amount=1040.0"


def test_latest_scores_are_the_last_hundred_written(scores_db):
    last = latest_scores(scores_db, 100)
    assert len(last) == 100
    assert last["transaction_id"].iloc[0] == "tx-149"
    assert last["transaction_id"].iloc[-1] == "tx-050"
    assert list(last.columns) == list(TABLE_COLUMNS)


def test_scores_for_ids_returns_only_those_written(scores_db):
    found = scores_for(scores_db, ["tx-001", "tx-002", "not-written-yet"])
    assert sorted(found["transaction_id"]) == ["tx-001", "tx-002"]
    assert sorted(found["amount"]) == [13.5, 14.5]


def test_result_tables_hold_no_personal_columns(scores_db):
    with psycopg2.connect(scores_db) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() "
            "AND table_name IN ('scores', 'scores_recent_fraud')"
        )
        columns = {name for _, name in cur.fetchall()}
    assert columns, "the scores table and view exist"
    assert not columns & {"name_1", "name_2", "street", "lat", "lon", "first", "last", "long"}
