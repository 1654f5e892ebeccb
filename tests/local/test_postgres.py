"""The local PostgreSQL harness: a real server, one schema per test."""

from __future__ import annotations

import psycopg2
import pytest
from psycopg2.extras import execute_values

pytestmark = pytest.mark.integration


def test_create_write_and_read_rows(pg_url):
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL)")
        execute_values(cur, "INSERT INTO items VALUES %s", [(i, f"row {i}") for i in range(500)])
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), min(label), max(id) FROM items")
        assert cur.fetchone() == (500, "row 0", 499)
        cur.execute("SHOW server_version")
        assert cur.fetchone()[0].startswith("16.")


def test_each_test_has_its_own_schema(pg_url):
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('items')")
        assert cur.fetchone() == (None,)


def test_server_survives_a_restart(postgres_server, tmp_path):
    from fraudstream.local.postgres import PostgresServer

    if postgres_server is None:
        pytest.skip("DATABASE_URL points at an external server")
    server = PostgresServer(tmp_path / "pg").start()
    try:
        with psycopg2.connect(server.url) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE kept (v int)")
            cur.execute("INSERT INTO kept VALUES (42)")
        server.restart()
        with psycopg2.connect(server.url) as conn, conn.cursor() as cur:
            cur.execute("SELECT v FROM kept")
            assert cur.fetchone() == (42,)
    finally:
        server.stop()
