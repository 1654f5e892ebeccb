"""The PostgreSQL history store against a real server: same features as in memory, no PII."""

from __future__ import annotations

import threading
import time
from datetime import date

import numpy as np
import psycopg2
import pytest

from fraudstream.features import events_from_frame
from fraudstream.history import InMemoryHistoryStore, PostgresHistoryStore
from fraudstream.simulator import simulate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def events():
    frame = simulate(15, date(2019, 12, 1), date(2019, 12, 21), seed=2, episodes_per_year=8)
    assert frame["target"].sum() > 0
    return events_from_frame(frame), frame


def run_in_batches(store, events, size):
    out = []
    for start in range(0, len(events), size):
        chunk = events[start : start + size]
        out += store.apply([f"tx-{start + i}" for i in range(len(chunk))], chunk)
    return np.array(out, dtype=float)


def test_postgres_and_memory_stores_give_identical_features(pg_url, events):
    stream, _ = events
    memory = run_in_batches(InMemoryHistoryStore(), stream, 50)
    store = PostgresHistoryStore(pg_url)
    try:
        postgres = run_in_batches(store, stream, 50)
        np.testing.assert_array_equal(postgres, memory)
        # a second store (another scorer replica) continues the same history
        other = PostgresHistoryStore(pg_url)
        replay = run_in_batches(other, stream[:30], 30)  # same ids: already recorded
        np.testing.assert_array_equal(replay, memory[:30])
        other.close()
    finally:
        store.close()


def test_postgres_store_is_idempotent_and_keeps_no_personal_data(pg_url, events):
    stream, frame = events
    store = PostgresHistoryStore(pg_url)
    try:
        store.apply(["a", "b"], stream[:2])
        store.apply(["a", "b"], stream[:2])
        with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM card_history_seen")
            assert cur.fetchone()[0] == 2
            cur.execute("SELECT sum((state::jsonb->>'n')::int) FROM card_history")
            assert cur.fetchone()[0] == 2
            cur.execute("SELECT card_key, state::text FROM card_history")
            dumped = " ".join(f"{k} {s}" for k, s in cur.fetchall())
    finally:
        store.close()
    for column in ("name_1", "name_2", "street"):
        assert frame[column].iloc[0] not in dumped
    assert f"{frame['lat'].iloc[0]}" not in dumped


def test_a_card_locked_elsewhere_fails_apply_within_the_lock_timeout(pg_url, events, monkeypatch):
    """Another transaction holds the card's row (SELECT ... FOR UPDATE, left open): apply
    raises after DB_LOCK_TIMEOUT_MS (the scorer answers 503, the bridge retries) instead of
    waiting for as long as the other holds it, and works again once the lock is gone."""
    stream, _ = events
    key = stream[0][0]
    first, second = [e for e in stream if e[0] == key][:2]
    monkeypatch.setenv("DB_LOCK_TIMEOUT_MS", "300")
    store = PostgresHistoryStore(pg_url)
    outcome: dict = {}

    def apply_second() -> None:
        started = time.monotonic()
        try:
            outcome["features"] = store.apply(["second"], [second])
        except Exception as err:
            outcome["error"] = err
        outcome["seconds"] = time.monotonic() - started

    blocker = psycopg2.connect(pg_url)
    worker = threading.Thread(target=apply_second, daemon=True)
    try:
        store.apply(["first"], [first])
        with blocker.cursor() as cur:
            cur.execute("SELECT state FROM card_history WHERE card_key = %s FOR UPDATE", (key,))
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive(), "apply waited for the lock instead of failing"
    finally:
        blocker.rollback()  # let a waiting apply go (old code), so the thread ends
        blocker.close()
        worker.join(timeout=30)
    try:
        assert isinstance(outcome.get("error"), psycopg2.errors.LockNotAvailable), outcome
        assert outcome["seconds"] < 3
        # nothing of the failed call stayed; the same call now goes through
        (features,) = store.apply(["second"], [second])
        assert features[0] == 1.0  # one earlier transaction of the card: "first"
    finally:
        store.close()
