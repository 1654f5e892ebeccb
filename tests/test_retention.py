"""Retention against a real PostgreSQL: ``fraudstream history prune`` and ``scores prune``
delete exactly what is older than their horizons, in batches, and never wait for a locked row."""

from __future__ import annotations

from datetime import datetime

import psycopg2
import pytest

from fraudstream.cli import main
from fraudstream.history import PostgresHistoryStore
from fraudstream.migrations import migrate
from fraudstream.retention import prune_history

pytestmark = pytest.mark.integration
T0 = datetime(2020, 7, 1).timestamp()


def query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall() if cur.description else []
    conn.close()
    return rows


def age(url: str, table: str, column: str, days: float, where: str, params: tuple) -> None:
    query(
        url,
        f"UPDATE {table} SET {column} = now() - make_interval(days => %s) WHERE {where}",
        (days, *params),
    )


def test_history_prune_deletes_old_ids_and_idle_cards_only(pg_url: str, capsys):
    store = PostgresHistoryStore(pg_url)
    cards = ["card-a", "card-b", "card-c", "card-d"]
    try:
        for i in range(3):
            store.apply(
                [f"{card}-{i}" for card in cards],
                [(card, T0 + i * 60, 10.0, 0, 1, 12) for card in cards],
            )
    finally:
        store.close()
    # ids: a and b scored 31 days ago (past the 30-day horizon), the rest recent
    age(pg_url, "card_history_seen", "recorded_at", 31, "card_key = ANY(%s)", (cards[:2],))
    # cards: a idle for 38 days (past the week + 30 days), b for 36 (within), c and d now
    age(pg_url, "card_history", "updated_at", 38, "card_key = %s", ("card-a",))
    age(pg_url, "card_history", "updated_at", 36, "card_key = %s", ("card-b",))

    results = prune_history(pg_url, dedupe_days=30, batch_size=4)
    seen, history = results
    assert (seen.table, seen.deleted) == ("card_history_seen", 6)
    assert seen.batches >= 2  # 6 rows in batches of 4
    assert (history.table, history.deleted) == ("card_history", 1)
    left = query(pg_url, "SELECT card_key FROM card_history_seen GROUP BY card_key ORDER BY 1")
    assert [k for (k,) in left] == ["card-c", "card-d"]
    assert [k for (k,) in query(pg_url, "SELECT card_key FROM card_history ORDER BY 1")] == [
        "card-b",
        "card-c",
        "card-d",
    ]
    # the command: the same horizon from the environment's default, nothing more to delete
    assert main(["history", "prune", "--database-url", pg_url]) == 0
    out = capsys.readouterr().out
    assert "card_history_seen: deleted 0 row(s)" in out and "card_history: deleted 0" in out


def test_history_prune_skips_a_card_being_scored_instead_of_waiting(pg_url: str, monkeypatch):
    store = PostgresHistoryStore(pg_url)
    try:
        store.apply(["x-1", "y-1"], [("card-x", T0, 5.0, 0, 1, 12), ("card-y", T0, 5.0, 0, 1, 12)])
    finally:
        store.close()
    age(pg_url, "card_history", "updated_at", 60, "true", ())
    monkeypatch.setenv("DB_LOCK_TIMEOUT_MS", "1000")  # a prune that waited would fail
    blocker = psycopg2.connect(pg_url)
    try:
        with blocker.cursor() as cur:  # a scorer holds card-x
            cur.execute("SELECT 1 FROM card_history WHERE card_key = 'card-x' FOR UPDATE")
        _, history = prune_history(pg_url, dedupe_days=30, batch_size=10)
    finally:
        blocker.rollback()
        blocker.close()
    assert history.deleted == 1
    assert query(pg_url, "SELECT card_key FROM card_history") == [("card-x",)]


def test_a_card_pruned_while_being_scored_keeps_its_new_state(pg_url: str):
    """The scorer inserts a missing card row (ON CONFLICT DO NOTHING: the idle row is there),
    then locks it with SELECT ... FOR UPDATE; a prune that deletes the row in between must not
    make the scorer lose the transaction it is recording."""
    store = PostgresHistoryStore(pg_url)
    pruned: list = []

    class PruneAfterInsert(psycopg2.extensions.cursor):
        def execute(self, sql, params=None):  # noqa: ANN001, ANN202 - psycopg2's signature
            super().execute(sql, params)
            text = sql.decode() if isinstance(sql, bytes) else sql
            if text.startswith("INSERT INTO card_history (card_key)") and not pruned:
                pruned.extend(prune_history(pg_url, dedupe_days=30))  # commits on its own

    try:
        store.apply(["old"], [("card-z", T0, 5.0, 0, 1, 12)])
        age(pg_url, "card_history", "updated_at", 60, "true", ())
        store.close()
        store._conn = psycopg2.connect(pg_url, cursor_factory=PruneAfterInsert)
        (features,) = store.apply(["new"], [("card-z", T0 + 60, 5.0, 0, 1, 12)])
        assert pruned[1].deleted == 1  # the prune did delete the card in between
        assert features[0] == 0.0  # its history was pruned: a new card
    finally:
        store.close()
    ((n,),) = query(pg_url, "SELECT (state::jsonb->>'n')::int FROM card_history")
    assert n == 1  # recorded, not lost in an UPDATE of a row that was gone


def test_scores_prune_deletes_rows_written_before_the_retention(pg_url: str, monkeypatch, capsys):
    """In ``scores`` and in the challenger's ``scores_shadow`` (fraudstream.shadow) alike."""
    migrate(pg_url)
    tables = ("scores", "scores_shadow")
    for table in tables:
        for i, days in enumerate([120, 100, 95, 91, 89, 10, 0]):
            query(
                pg_url,
                f"INSERT INTO {table} (transaction_id, score, fraud_flag, threshold,"  # noqa: S608
                " model_version, amount, category, merchant, event_time, scored_at, written_at)"
                " VALUES (%s, 0.1, false, 0.5, 'm', 12.5, 'misc_pos', 'shop',"
                " '2020-07-01 12:00:00', now(), now() - make_interval(days => %s))",
                (f"tx-{i}", days),
            )
    monkeypatch.setenv("SCORES_RETENTION_DAYS", "90")
    monkeypatch.setenv("PRUNE_BATCH_SIZE", "3")
    assert main(["scores", "prune", "--database-url", pg_url]) == 0
    out = capsys.readouterr().out
    for table in tables:
        assert f"{table}: deleted 4 row(s) in 2 batch(es)" in out
        left = query(pg_url, f"SELECT transaction_id FROM {table} ORDER BY transaction_id")  # noqa: S608
        assert [t for (t,) in left] == ["tx-4", "tx-5", "tx-6"]
        indexes = query(pg_url, "SELECT indexname FROM pg_indexes WHERE tablename = %s", (table,))
        assert (f"{table}_written_at",) in indexes
    assert main(["scores", "prune", "--retention-days", "5", "--database-url", pg_url]) == 0
    for table in tables:
        assert [t for (t,) in query(pg_url, f"SELECT transaction_id FROM {table}")] == ["tx-6"]  # noqa: S608


def test_scores_prune_deletes_labels_stored_before_their_retention(
    pg_url: str, monkeypatch, capsys
):
    migrate(pg_url)
    for i, days in enumerate([200, 120, 61, 59, 0]):
        query(
            pg_url,
            "INSERT INTO labels (transaction_id, is_fraud, labelled_at, source, stored_at)"
            " VALUES (%s, true, now(), 'test', now() - make_interval(days => %s))",
            (f"tx-{i}", days),
        )
    monkeypatch.setenv("LABELS_RETENTION_DAYS", "60")
    monkeypatch.setenv("PRUNE_BATCH_SIZE", "2")
    assert main(["scores", "prune", "--database-url", pg_url]) == 0
    assert "labels: deleted 3 row(s) in 2 batch(es)" in capsys.readouterr().out
    left = query(pg_url, "SELECT transaction_id FROM labels ORDER BY transaction_id")
    assert [t for (t,) in left] == ["tx-3", "tx-4"]
    assert ("labels_stored_at",) in query(
        pg_url, "SELECT indexname FROM pg_indexes WHERE tablename = 'labels'"
    )
    args = ["scores", "prune", "--labels-retention-days", "1", "--database-url", pg_url]
    assert main(args) == 0
    assert [t for (t,) in query(pg_url, "SELECT transaction_id FROM labels")] == ["tx-4"]


def test_prune_without_a_database_says_so(monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "")
    assert main(["scores", "prune"]) == 2
    assert "no database" in capsys.readouterr().err
