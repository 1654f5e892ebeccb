"""A transaction is scored and counted once, whoever sends it again: ``fraudstream replay`` run
twice on the same file, or the analyst page's upload sent twice, through the real pipeline
(Kafka, ``fraudstream bridge``, the BentoML scorer, ``fraudstream writer``, PostgreSQL)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import psycopg2
import pytest

from fraudstream.local.paths import REPO_ROOT

from .conftest import FRAUDSTREAM, committed_and_end, wait_until

pytestmark = pytest.mark.integration
N_ROWS = 5000


def _history(pg_url: str) -> tuple[list[tuple], list[tuple]]:
    """Every row of ``card_history`` and ``card_history_seen``, timestamps included (features
    as text: their NaNs would never compare equal)."""
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT card_key, state::text, updated_at FROM card_history ORDER BY 1")
        cards = cur.fetchall()
        cur.execute(
            "SELECT transaction_id, card_key, transaction_time, features::text, recorded_at"
            " FROM card_history_seen ORDER BY 1"
        )
        return cards, cur.fetchall()


def _wait_consumed(pipe, sent: int, timeout: float = 180) -> None:
    """Until the bridge and the writer have committed everything up to ``sent`` records."""
    topics = pipe.topics

    def done() -> bool:
        bridge = committed_and_end(pipe.bootstrap, pipe.bridge_group, topics["transactions"])
        writer = committed_and_end(pipe.bootstrap, pipe.writer_group, topics["scoring"])
        return bridge == (sent, sent) and writer[0] == writer[1] >= sent

    wait_until(done, timeout, interval=1.0, what=f"bridge and writer to commit {sent} records")


def _replay(pipe, path: Path) -> str:
    done = subprocess.run(
        [*FRAUDSTREAM, "replay", str(path), "--rate", "0", "--no-progress"],
        env=pipe.env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_replaying_a_file_twice_scores_and_counts_each_transaction_once(
    pipeline_factory, pg_history_scorer, transactions_csv, tmp_path
):
    # 4,999 rows of the session's file plus one true duplicate (the same purchase twice, as
    # a file can hold): 5,000 transactions
    lines = transactions_csv.read_text().splitlines()
    rows = lines[1:N_ROWS]
    path = tmp_path / "five-thousand.csv"
    path.write_text("\n".join([lines[0], *rows[:100], rows[50], *rows[100:]]) + "\n")

    pipe = pipeline_factory(pg_history_scorer)
    pipe.component("bridge").start()
    pipe.component("writer").start()
    assert "sent 5,000, rejected 0" in _replay(pipe, path)
    pipe.wait_rows(N_ROWS, 240)
    _wait_consumed(pipe, N_ROWS)
    once = _history(pipe.pg_url)
    assert len(once[1]) == N_ROWS  # every transaction, the duplicate too, is in the history

    assert "sent 5,000, rejected 0" in _replay(pipe, path)
    _wait_consumed(pipe, 2 * N_ROWS)
    assert pipe.rows() == (N_ROWS, N_ROWS)
    assert _history(pipe.pg_url) == once


def _ui_app(monkeypatch):
    """``ui/app.py`` as a module (Streamlit's bare mode: its page code runs and shows nothing)."""
    monkeypatch.setenv("DATABASE_URL", "")  # main() stops at its "not set" message
    spec = importlib.util.spec_from_file_location("fraudstream_ui_app", REPO_ROOT / "ui/app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_same_upload_sent_twice_is_scored_once(
    pipeline_factory, scorer, transactions_csv, tmp_path, monkeypatch
):
    from fraudstream.loader import load_csv
    from fraudstream.settings import KafkaSettings

    n = 300
    lines = transactions_csv.read_text().splitlines()
    path = tmp_path / "upload.csv"
    path.write_text("\n".join(lines[: n + 1]) + "\n")
    app = _ui_app(monkeypatch)

    pipe = pipeline_factory(scorer.url)
    pipe.component("bridge").start()
    pipe.component("writer").start()
    for name, value in pipe.env().items():
        if name.startswith(("KAFKA_", "TOPIC_")):
            monkeypatch.setenv(name, value)
    kafka = KafkaSettings()
    first = app._send(load_csv(path).frame, kafka)  # "Score" clicked ...
    second = app._send(load_csv(path).frame, kafka)  # ... and clicked again
    assert second == first and len(set(first)) == n
    _wait_consumed(pipe, 2 * n)
    assert pipe.rows() == (n, n)
    assert pipe.ids() == set(first)
