"""Versioned SQL migrations: ``NNNN_name.sql`` files in this package, applied in order, once.

``fraudstream migrate`` applies them; applying is idempotent and safe to run concurrently
(a PostgreSQL advisory lock serialises runners). Each file runs in its own transaction and is
recorded in ``schema_migrations``. Tables are created in the connection's current schema
(``search_path``), so tests can give each test its own schema.

The connection is :func:`fraudstream.database.connect`'s (connect timeout, keepalives) without a
statement timeout (building an index on a large table takes as long as it takes). Runners wait
for each other's advisory lock without limit; the migrations themselves keep the lock timeout
(``DB_LOCK_TIMEOUT_MS``): a table the running pipeline holds makes a migration fail, and the hook
Job retry, instead of queueing every scorer and writer behind its lock request.
"""

from __future__ import annotations

import argparse
import logging
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fraudstream.settings import DatabaseSettings

log = logging.getLogger(__name__)
LOCK_ID = 715_203_001


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) sorted by version, e.g. ('0001_card_history', 'CREATE TABLE ...')."""
    files = [f for f in resources.files(__package__).iterdir() if f.name.endswith(".sql")]
    return [
        (f.name.removesuffix(".sql"), f.read_text()) for f in sorted(files, key=lambda f: f.name)
    ]


def migrate(dsn: str, settings: DatabaseSettings | None = None) -> list[str]:
    """Apply pending migrations; return the versions applied by this call."""
    from fraudstream.database import connect

    applied_now: list[str] = []
    conn = connect(dsn, settings, statement_timeout_ms=0, application_name="fraudstream-migrate")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET lock_timeout = 0")  # another runner may hold it for a while
            cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_ID,))
            cur.execute("RESET lock_timeout")  # back to the connection's DB_LOCK_TIMEOUT_MS
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in cur.fetchall()}
        for version, sql in migration_files():
            if version in done:
                continue
            with conn, conn.cursor() as cur:
                cur.execute(sql)
                cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            log.info("applied migration %s", version)
            applied_now.append(version)
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_ID,))
        conn.commit()
        conn.close()
    return applied_now


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="default: $DATABASE_URL")


def run(args: argparse.Namespace) -> int:
    from fraudstream.database import database_url

    dsn = database_url(args.database_url, "migrate")
    if not dsn:
        return 2
    applied = migrate(dsn)
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    return 0
