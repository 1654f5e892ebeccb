"""Every PostgreSQL connection of fraudstream gets bounded waits (fraudstream.database)."""

from __future__ import annotations

import psycopg2
import pytest

from fraudstream.database import connect, connection_options
from fraudstream.settings import DatabaseSettings


@pytest.mark.unit
def test_limits_come_from_the_environment_with_documented_defaults(monkeypatch):
    for name in ("DB_CONNECT_TIMEOUT_S", "DB_STATEMENT_TIMEOUT_MS", "DB_LOCK_TIMEOUT_MS"):
        monkeypatch.delenv(name, raising=False)
    options = connection_options("postgresql://u@db:5432/x")
    assert options["connect_timeout"] == 5
    assert options["keepalives"] == 1 and options["keepalives_idle"] == 10
    assert options["tcp_user_timeout"] == 30_000
    assert options["options"] == "-c statement_timeout=10000 -c lock_timeout=2000"
    monkeypatch.setenv("DB_LOCK_TIMEOUT_MS", "750")
    monkeypatch.setenv("DB_CONNECT_TIMEOUT_S", "3")
    options = connection_options("postgresql://u@db:5432/x", statement_timeout_ms=0)
    assert options["connect_timeout"] == 3
    assert options["options"] == "-c statement_timeout=0 -c lock_timeout=750"


@pytest.mark.unit
def test_what_the_dsn_says_wins_and_its_options_are_kept():
    dsn = (
        "postgresql://u@db/x?connect_timeout=1&options=-csearch_path%3Dt_1%20-c%20lock_timeout%3D9"
    )
    options = connection_options(dsn, DatabaseSettings())
    assert "connect_timeout" not in options  # the DSN's 1 applies
    # the DSN's own -c settings come last, so they win
    assert options["options"] == (
        "-c statement_timeout=10000 -c lock_timeout=2000 -csearch_path=t_1 -c lock_timeout=9"
    )


@pytest.mark.integration
def test_a_real_connection_has_the_limits_and_keeps_the_search_path(pg_url):
    settings = DatabaseSettings(db_statement_timeout_ms=1234, db_lock_timeout_ms=567)
    conn = connect(pg_url, settings, application_name="fraudstream-test")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'),"
                " current_schema(), current_setting('application_name')"
            )
            statement, lock, schema, name = cur.fetchone()
            assert (statement, lock, name) == ("1234ms", "567ms", "fraudstream-test")
            assert schema.startswith("t_")  # the test's own schema from the URL's options
            with pytest.raises(psycopg2.errors.QueryCanceled):
                cur.execute("SELECT pg_sleep(3)")
    finally:
        conn.close()


@pytest.mark.integration
def test_migration_runners_wait_for_each_other_beyond_the_lock_timeout(pg_url, monkeypatch):
    """The lock timeout bounds waits for table and row locks, not for another runner of the
    migrations (which may take minutes building an index): that wait stays unbounded."""
    import threading
    import time

    from fraudstream.migrations import LOCK_ID, migrate

    monkeypatch.setenv("DB_LOCK_TIMEOUT_MS", "200")
    other = psycopg2.connect(pg_url)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["applied"] = migrate(pg_url)
        except Exception as err:
            outcome["error"] = err

    runner = threading.Thread(target=run, daemon=True)
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_ID,))  # another runner at work
        runner.start()
        time.sleep(1.0)  # five lock timeouts
        assert runner.is_alive(), outcome  # still waiting, not failed
    finally:
        with other.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_ID,))
        other.close()
        runner.join(timeout=60)
    assert "error" not in outcome, outcome
    assert "0004_retention_indexes" in outcome["applied"]
