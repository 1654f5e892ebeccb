"""``loadtest/locustfile.py`` run headless, as the chart runs it, against the real scorer (HTTP)
and the real pipeline (Kafka -> bridge -> scorer -> writer -> PostgreSQL): it prints one
``LOADTEST_RESULT`` line, writes the same JSON to a file, and its exit code is the gate.

The rates are low and the latency limits loose (a shared CI machine): these tests are about the
mechanics; the 400/s gate is the chart's in-cluster run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from fraudstream.local.paths import REPO_ROOT, free_port

from .conftest import produce

pytestmark = pytest.mark.integration

LOCUST = [sys.executable, "-m", "locust"]
LOCUSTFILE = str(REPO_ROOT / "loadtest" / "locustfile.py")
USERS, RATE_PER_USER, RUN_S = 4, 5, 12


def locust_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "LOCUST_"))}
    env.update(extra)
    return env


def headless(*args: str) -> list[str]:
    """The repository's locust.conf at a low rate with loose latency limits."""
    return [
        *LOCUST,
        "--config",
        "loadtest/locust.conf",
        f"--users={USERS}",
        f"--spawn-rate={USERS}",
        f"--rate-per-user={RATE_PER_USER}",
        f"--run-time={RUN_S}s",
        "--p99-ms=2000",
        "--e2e-p99-ms=10000",
        *args,
    ]


def result_of(output: str) -> dict:
    lines = [line for line in output.splitlines() if line.startswith("LOADTEST_RESULT ")]
    assert len(lines) == 1, output[-3000:]
    return json.loads(lines[0].split(" ", 1)[1])


def run(argv: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def assert_met_the_target(result: dict, kind: str) -> None:
    target = USERS * RATE_PER_USER
    assert result["passed"] is True, result["problems"]
    assert result["problems"] == []
    assert result["target_rate"] == target
    assert result["rate"] >= 0.95 * target
    assert result["failures"] == 0 and result["exceptions"] == 0
    figures = result["types"][kind]
    # the load ran for most of the run (start-up and the final pause take a few seconds)
    assert figures["seconds"] >= RUN_S / 2
    assert figures["requests"] >= 0.95 * target * figures["seconds"] - 1
    assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"] <= figures["max_ms"]


def test_scorer_user_against_the_real_scorer(scorer_url: str, tmp_path: Path) -> None:
    result_file = tmp_path / "result.json"
    proc = run(headless(f"--host={scorer_url}", f"--result-file={result_file}"), locust_env())
    result = result_of(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_met_the_target(result, "http")
    assert set(result["types"]) == {"http"}  # no class named: ScorerUser only
    assert json.loads(result_file.read_text()) == result


def test_gate_fails_when_a_target_cannot_be_met(scorer_url: str) -> None:
    argv = headless(f"--host={scorer_url}", "--run-time=4s", "--p99-ms=0.001")
    proc = run(argv, locust_env())
    result = result_of(proc.stdout)
    assert proc.returncode == 1
    assert result["passed"] is False
    assert result["failures"] == 0
    assert any(p.startswith("HTTP p99") for p in result["problems"]), result["problems"]


def test_kafka_user_distributed_measures_until_the_score_is_stored(
    pipeline_factory, scorer, kafka_bootstrap: str, loaded_transactions, tmp_path: Path
) -> None:
    """Master + one worker, as in the cluster: the worker produces, the master reads the run's
    rows from ``scores``; every transaction Kafka acknowledged is stored and measured."""
    pipe = pipeline_factory(scorer.url)
    pipe.component("bridge").start()
    pipe.component("writer").start()
    # one transaction through first: the consumers have joined their groups
    produce(kafka_bootstrap, pipe.topics["transactions"], loaded_transactions.head(1))
    pipe.wait_rows(1, 60)

    env = locust_env(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        TOPIC_TRANSACTIONS=pipe.topics["transactions"],
        DATABASE_URL=pipe.pg_url,
    )
    port = str(free_port())
    result_file = tmp_path / "result.json"
    master = subprocess.Popen(
        headless(
            "--master",
            f"--master-bind-port={port}",
            "--expect-workers=1",
            "--expect-workers-max-wait=120",
            f"--result-file={result_file}",
            "KafkaUser",
        ),
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker = subprocess.Popen(
        [*LOCUST, "-f", LOCUSTFILE, "--worker", f"--master-port={port}", "KafkaUser"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, err = master.communicate(timeout=240)
        worker_out, _ = worker.communicate(timeout=60)
    finally:
        for proc in (master, worker):
            if proc.poll() is None:
                proc.kill()
    result = result_of(out)
    assert master.returncode == 0, err[-3000:]
    assert worker.returncode == 0, worker_out[-3000:]
    assert_met_the_target(result, "kafka")
    produced, stored = result["types"]["kafka"], result["types"]["e2e"]
    assert stored["requests"] == produced["requests"]  # each acknowledged one, stored
    assert stored["failures"] == 0
    assert stored["p50_ms"] >= produced["p50_ms"]  # stored after it was acknowledged
    assert json.loads(result_file.read_text()) == result

    # the rows carry the run's ids, one per produced transaction
    with psycopg2.connect(pipe.pg_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*), count(DISTINCT transaction_id) FROM scores"
            " WHERE transaction_id LIKE %s",
            (f"lt-{result['run_id']}-%",),
        )
        assert cur.fetchone() == (produced["requests"], produced["requests"])
    assert pipe.rows() == (produced["requests"] + 1,) * 2  # and the warm-up transaction
