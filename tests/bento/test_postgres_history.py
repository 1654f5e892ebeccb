"""The scorer with ``DATABASE_URL`` set: history lives in PostgreSQL, and a transaction scored
twice (same ``transaction_id``) is counted once."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import psycopg2
import pytest

from fraudstream.local.scorer import ScorerServer
from fraudstream.schema import EXAMPLE_TRANSACTION

pytestmark = pytest.mark.integration


def test_history_in_postgres_counts_each_transaction_once(
    bentoml_home, trained_model, pg_url: str, tmp_path: Path
):
    env = {
        "BENTOML_HOME": str(bentoml_home),
        "MODEL_TAG": str(trained_model),
        "DATABASE_URL": pg_url,
        "WORKERS": "1",
    }
    card = {"name_1": "Pat", "name_2": "Gres", "street": f"{uuid.uuid4().hex[:8]} Row"}
    first = {**EXAMPLE_TRANSACTION, **card, "transaction_id": "pg-1"}
    second = {
        **EXAMPLE_TRANSACTION,
        **card,
        "transaction_id": "pg-2",
        "transaction_time": "2020-06-21 23:05:00",
    }
    with (
        ScorerServer(tmp_path / "scorer.log", env=env) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        assert client.get("/readyz").status_code == 200
        once = client.post("/score", json=first).json()
        again = client.post("/score", json=first).json()
        in_batch = client.post("/score_batch", json={"transactions": [first, second]}).json()
        assert again == once and in_batch[0] == once
        assert in_batch[1]["transaction_id"] == "pg-2"

    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT transaction_id FROM card_history_seen ORDER BY transaction_id")
        assert [row[0] for row in cur.fetchall()] == ["pg-1", "pg-2"]
        cur.execute("SELECT count(*) FROM card_history")
        assert cur.fetchone()[0] == 1
