"""The scorer with ``DATABASE_URL`` set: history lives in PostgreSQL, a transaction scored
twice (same ``transaction_id``) is counted once, and a PostgreSQL outage fails the scoring calls
(503, retried by the bridge) without making the scorer unready."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg2
import pytest

from fraudstream.local.scorer import ScorerServer
from fraudstream.schema import EXAMPLE_TRANSACTION, Transaction

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
            assert during.json()["reason"] == "history_unavailable"  # says why, not "unexpected"
            assert during.headers["retry-after"] == "1"
            batch = client.post("/score_batch", json={"transactions": [tx]})
            assert batch.status_code == 503, batch.text
            assert batch.json()["reason"] == "history_unavailable"
            # every replica would see the same outage: none leaves the Service for it
            assert client.get("/readyz").status_code == 200
            relay.restore()
            after = client.post("/score", json={**tx, "transaction_id": "down-1"})
            assert after.status_code == 200, after.text
    finally:
        relay.close()


def test_a_card_locked_too_long_answers_503_instead_of_holding_the_worker(
    service_module, pg_url: str, monkeypatch
):
    """Another transaction keeps the card's history row locked: the scoring call answers 503
    (reason history_unavailable, which the bridge retries) within about DB_LOCK_TIMEOUT_MS,
    instead of holding the worker for as long as the lock is held."""
    monkeypatch.setenv("DB_LOCK_TIMEOUT_MS", "300")
    monkeypatch.setattr(service_module, "DATABASE_URL", pg_url)
    scorer = service_module.FraudScorer()
    card = {**EXAMPLE_TRANSACTION, "street": f"{uuid.uuid4().hex[:8]} Lock Lane"}
    first = Transaction.model_validate({**card, "transaction_id": "lock-1"})
    later = Transaction.model_validate(
        {**card, "transaction_id": "lock-2", "transaction_time": "2020-06-21 23:30:00"}
    )
    outcome: dict = {}

    def score_later() -> None:
        started = time.monotonic()
        try:
            outcome["results"] = asyncio.run(scorer.score_batch([later]))
        except Exception as err:
            outcome["error"] = err
        outcome["seconds"] = time.monotonic() - started

    blocker = psycopg2.connect(pg_url)
    worker = threading.Thread(target=score_later, daemon=True)
    try:
        asyncio.run(scorer.score_batch([first]))  # the card's row exists
        with blocker.cursor() as cur:
            cur.execute(
                "SELECT 1 FROM card_history WHERE card_key = %s FOR UPDATE", (first.card_key,)
            )
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive(), "the scoring call waited for the lock"
    finally:
        blocker.rollback()
        blocker.close()
        worker.join(timeout=30)
        scorer.close()
    answer = outcome.get("results")
    assert getattr(answer, "status_code", None) == 503, outcome
    assert json.loads(answer.body)["reason"] == "history_unavailable"
    assert outcome["seconds"] < 3
