"""Versioned SQL migrations: ``NNNN_name.sql`` files in this package, applied in order, once.

``fraudstream migrate`` applies them; applying is idempotent and safe to run concurrently
(a PostgreSQL advisory lock serialises runners). Each file runs in its own transaction and is
recorded in ``schema_migrations``. Tables are created in the connection's current schema
(``search_path``), so tests can give each test its own schema.
"""

from __future__ import annotations

import argparse
import logging
from importlib import resources

import psycopg2

log = logging.getLogger(__name__)
LOCK_ID = 715_203_001


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) sorted by version, e.g. ('0001_card_history', 'CREATE TABLE ...')."""
    files = [f for f in resources.files(__package__).iterdir() if f.name.endswith(".sql")]
    return [
        (f.name.removesuffix(".sql"), f.read_text()) for f in sorted(files, key=lambda f: f.name)
    ]


def migrate(dsn: str) -> list[str]:
    """Apply pending migrations; return the versions applied by this call."""
    applied_now: list[str] = []
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_ID,))
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
    from fraudstream.settings import DatabaseSettings

    dsn = args.database_url or DatabaseSettings().database_url
    if not dsn:
        print("error: no database: set DATABASE_URL or pass --database-url")
        return 2
    applied = migrate(dsn)
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    return 0
