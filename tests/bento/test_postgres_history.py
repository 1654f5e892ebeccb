"""The scorer with ``DATABASE_URL`` set: history lives in PostgreSQL, a transaction scored
twice (same ``transaction_id``) is counted once, and a PostgreSQL outage fails the scoring calls
(503, retried by the bridge) without making the scorer unready."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

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


class CuttableRelay:
    """A TCP relay in front of PostgreSQL: ``cut()`` drops every connection and refuses new
    ones (the database is away), ``restore()`` lets connections through again."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open = False
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_postgres_outage_fails_scoring_with_503_and_keeps_the_scorer_ready(
    bentoml_home, trained_model, pg_url: str, tmp_path: Path
):
    url = urlsplit(pg_url)
    relay = CuttableRelay(url.hostname, url.port)
    through_relay = urlunsplit(url._replace(netloc=f"{url.username}@127.0.0.1:{relay.port}"))
    env = {
        "BENTOML_HOME": str(bentoml_home),
        "MODEL_TAG": str(trained_model),
        "DATABASE_URL": through_relay,
        "WORKERS": "1",
    }
    tx = {**EXAMPLE_TRANSACTION, "street": f"{uuid.uuid4().hex[:8]} Outage Street"}
    try:
        with (
            ScorerServer(tmp_path / "scorer.log", env=env) as server,
            httpx.Client(base_url=server.url, timeout=30) as client,
        ):
            assert client.post("/score", json={**tx, "transaction_id": "up-1"}).status_code == 200
            relay.cut()
            during = client.post("/score", json={**tx, "transaction_id": "down-1"})
            assert during.status_code == 503, during.text
            batch = client.post("/score_batch", json={"transactions": [tx]})
            assert batch.status_code == 503, batch.text
            # every replica would see the same outage: none leaves the Service for it
            assert client.get("/readyz").status_code == 200
            relay.restore()
            after = client.post("/score", json={**tx, "transaction_id": "down-1"})
            assert after.status_code == 200, after.text
    finally:
        relay.close()
