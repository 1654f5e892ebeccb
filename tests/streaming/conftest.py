"""Fixtures for the streaming tests: generated transactions, a pipeline harness that runs
``fraudstream bridge`` / ``writer`` as real subprocesses against the session's Kafka and
PostgreSQL, and a stand-in scorer process for the unit-level tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psycopg2
import pytest

from fraudstream.local.paths import REPO_ROOT, free_port, wait_for_port

if TYPE_CHECKING:
    from fraudstream.local.scorer import ScorerServer

HERE = Path(__file__).resolve().parent
FRAUDSTREAM = [sys.executable, "-m", "fraudstream.cli"]
N_TRANSACTIONS = 20_000


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.2, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")


class Component:
    """One pipeline process (``fraudstream bridge`` / ``writer`` / a scorer) with its own log."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> Component:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"--- start #{self.starts}\n".encode())
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye, no final commit."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise

    def tail(self, n: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


@dataclass
class Pipeline:
    """Topics, a schema and the two consumers of one test, wired to the session's servers."""

    bootstrap: str
    pg_url: str
    topics: dict[str, str]
    workdir: Path
    scorer_url: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    components: list[Component] = field(default_factory=list)

    def __post_init__(self) -> None:
        from fraudstream.migrations import migrate
        from fraudstream.topics import create_topics

        suffix = uuid.uuid4().hex[:8]
        self.bridge_group = f"bridge-{suffix}"
        self.writer_group = f"writer-{suffix}"
        create_topics(
            self.bootstrap,
            [self.topics["transactions"], self.topics["scoring"], self.topics["dlq"]],
            partitions=6,
            retention_ms=3600_000,
            replication_factor=1,
        )
        migrate(self.pg_url)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "DATABASE_URL": self.pg_url,
                "TOPIC_TRANSACTIONS": self.topics["transactions"],
                "TOPIC_SCORING": self.topics["scoring"],
                "TOPIC_DLQ": self.topics["dlq"],
                "TOPIC_LABELS": self.topics.get("labels", "labels"),
                "SCORER_URL": self.scorer_url,
                "BRIDGE_GROUP_ID": self.bridge_group,
                "WRITER_GROUP_ID": self.writer_group,
                # static membership, as pods of a StatefulSet: a restarted process takes its
                # partitions back at once instead of after the 10 s session timeout
                "BRIDGE_GROUP_INSTANCE_ID": f"{self.bridge_group}-0",
                "WRITER_GROUP_INSTANCE_ID": f"{self.writer_group}-0",
                "SCORER_BACKOFF_MAX_S": "1",
                "DB_RETRY_MAX_S": "1",
                "LOG_FORMAT": "json",
            }
        )
        env.update(self.extra_env)
        env.update(extra)
        return env

    def component(self, name: str, **extra: str) -> Component:
        argv = [*FRAUDSTREAM, name, "--metrics-port", str(free_port())]
        same = sum(c.argv[len(FRAUDSTREAM)] == name for c in self.components)
        label = name if not same else f"{name}-{same + 1}"
        comp = Component(label, argv, self.env(**extra), self.workdir)
        self.components.append(comp)
        return comp

    def rows(self) -> tuple[int, int]:
        """(rows, distinct transaction ids) in ``scores``; (-1, -1) while the database is away."""
        try:
            with psycopg2.connect(self.pg_url, connect_timeout=2) as conn, conn.cursor() as cur:
                cur.execute("SELECT count(*), count(DISTINCT transaction_id) FROM scores")
                return cur.fetchone()
        except psycopg2.OperationalError:
            return (-1, -1)

    def ids(self) -> set[str]:
        with psycopg2.connect(self.pg_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT transaction_id FROM scores")
            return {r[0] for r in cur.fetchall()}

    def wait_rows(self, n: int, timeout: float) -> None:
        """Until ``scores`` holds ``n`` rows; fail early (with its log) if a consumer dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            count, _ = self.rows()
            if count >= n:
                return
            for comp in self.components:
                died = comp.proc is not None and comp.proc.poll() not in (None, 0, -9)
                if died:
                    raise AssertionError(
                        f"{comp.name} exited with {comp.proc.returncode}:\n{comp.tail()}"
                    )
            time.sleep(0.2)
        logs = "\n".join(f"--- {c.name}\n{c.tail(15)}" for c in self.components)
        raise AssertionError(
            f"scores has {self.rows()} rows after {timeout:.0f}s, want {n}\n{logs}"
        )

    def stop_all(self) -> None:
        for comp in self.components:
            if comp.alive:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    comp.terminate(20)


@pytest.fixture(scope="session")
def transactions_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 simulated transactions in the TETA shape (labels included)."""
    from datetime import date

    from fraudstream.simulator import simulate, write_csv

    frame = simulate(400, date(2020, 1, 1), date(2020, 4, 30), seed=7)
    assert len(frame) >= N_TRANSACTIONS, len(frame)
    path = tmp_path_factory.mktemp("data") / "transactions.csv"
    write_csv(frame.iloc[:N_TRANSACTIONS], str(path))
    return path


@pytest.fixture(scope="session")
def loaded_transactions(transactions_csv: Path):
    from fraudstream.loader import load_csv

    result = load_csv(transactions_csv)
    assert not result.errors
    return result.frame


class StubScorerProcess:
    """``tests/streaming/stub_scorer.py`` as a process that can be stopped and started again."""

    def __init__(self, log_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.component = Component(
            "stub-scorer",
            [sys.executable, str(HERE / "stub_scorer.py"), str(self.port)],
            {**os.environ, **env},
            log_dir,
        )

    def restart(self, **env: str) -> StubScorerProcess:
        """Stop, then start again on the same port with ``env`` as its only ``STUB_*`` settings
        (e.g. none: the scorer is fixed)."""
        self.stop()
        base = {k: v for k, v in self.component.env.items() if not k.startswith("STUB_")}
        self.component.env = {**base, **env}
        return self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StubScorerProcess:
        self.component.start()
        assert wait_for_port("127.0.0.1", self.port, 15), self.component.tail()
        return self

    def stop(self) -> None:
        if self.component.alive:
            self.component.kill()


@pytest.fixture
def stub_scorer(tmp_path: Path) -> Iterator[StubScorerProcess]:
    scorer = StubScorerProcess(tmp_path).start()
    yield scorer
    scorer.stop()


@pytest.fixture
def stub_scorer_factory(tmp_path: Path) -> Iterator[Callable[..., StubScorerProcess]]:
    """Start stub scorers configured by ``STUB_*`` variables (see ``stub_scorer.py``)."""
    made: list[StubScorerProcess] = []

    def make(**env: str) -> StubScorerProcess:
        scorer = StubScorerProcess(tmp_path, **env).start()
        made.append(scorer)
        return scorer

    yield make
    for scorer in made:
        scorer.stop()


@pytest.fixture
def pipeline_factory(
    kafka_bootstrap: str, pg_url: str, topics: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., Pipeline]]:
    made: list[Pipeline] = []

    def make(scorer_url: str, **extra_env: str) -> Pipeline:
        pipe = Pipeline(kafka_bootstrap, pg_url, topics, tmp_path, scorer_url, dict(extra_env))
        made.append(pipe)
        return pipe

    yield make
    for pipe in made:
        pipe.stop_all()


def produce(bootstrap: str, topic: str, frame, rate: float = 0.0) -> list[str]:
    """Replay ``frame`` (loader columns) to ``topic`` with known fresh ids; return the ids."""
    from fraudstream.kafka_runner import make_producer
    from fraudstream.replay import replay_frame

    frame = frame.copy()
    ids = [str(uuid.uuid4()) for _ in range(len(frame))]
    frame["transaction_id"] = ids
    producer = make_producer(bootstrap)
    try:
        result = replay_frame(frame, producer, topic, rate=rate, keep_ids=True)
    finally:
        producer.close()
    assert result.sent == len(frame) and result.rejected == 0, result
    return ids


def committed_and_end(bootstrap: str, group: str, topic: str) -> tuple[int, int]:
    """(sum of the group's committed offsets, sum of end offsets) over the topic's partitions."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        committed = sum(consumer.committed(tp) or 0 for tp in parts)
        end = sum(consumer.end_offsets(parts).values())
        return committed, end
    finally:
        consumer.close(autocommit=False)


def read_topic(
    bootstrap: str, topic: str, timeout: float = 10.0, isolation_level: str = "read_committed"
) -> list:
    """Every record of ``topic`` (no group), as a downstream reader sees it: ``read_committed``
    (records of open or aborted transactions left out) unless told ``read_uncommitted``."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation_level
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        out: list = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(consumer.position(tp) < end[tp] for tp in parts):
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
        return out
    finally:
        consumer.close(autocommit=False)


@dataclass
class RunningScorer:
    url: str
    history: str = "memory"  # where it keeps card history: memory / postgres


@pytest.fixture
def scorer(scorer_url: str) -> RunningScorer:
    """The real BentoML scorer (the session's ``bentoml serve``) the pipeline tests run against."""
    return RunningScorer(scorer_url)


@pytest.fixture
def pg_history_scorer(tmp_path: Path, scorer_env: dict[str, str], pg_url: str) -> Iterator[str]:
    """A real ``bentoml serve`` keeping its card history in this test's PostgreSQL schema (the
    chart's default), the schema the pipeline's writer uses too."""
    from fraudstream.local.scorer import ScorerServer
    from fraudstream.migrations import migrate

    migrate(pg_url)
    env = {**scorer_env, "DATABASE_URL": pg_url}
    with ScorerServer(tmp_path / "pg-scorer.log", env=env) as server:
        yield server.url


@pytest.fixture(params=["memory-history", "postgres-history"])
def history_scorer(request: pytest.FixtureRequest) -> RunningScorer:
    """The real scorer with its card history in memory (the session's) and in PostgreSQL."""
    if request.param == "memory-history":
        return RunningScorer(request.getfixturevalue("scorer_url"))
    return RunningScorer(request.getfixturevalue("pg_history_scorer"), history="postgres")


def history_ids(pg_url: str) -> list[str]:
    """The transaction ids in the PostgreSQL history (``card_history_seen``), one per row."""
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT transaction_id FROM card_history_seen")
        return [row[0] for row in cur.fetchall()]


def metric_value(component: Component, name: str) -> float:
    """A counter's value from ``component``'s /metrics (0 when absent)."""
    port = component.argv[component.argv.index("--metrics-port") + 1]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


@pytest.fixture
def stoppable_scorer(tmp_path: Path, scorer_env: dict[str, str]) -> Iterator[ScorerServer]:
    """A real ``bentoml serve`` of this test's own, to stop and start again (in a BentoML
    home of its own, so it leaves the session scorer's metrics alone: ``ScorerServer``)."""
    from fraudstream.local.scorer import ScorerServer

    server = ScorerServer(tmp_path / "scorer.log", env=scorer_env).start()
    yield server
    server.stop()


def topic_env(bootstrap: str, topics: dict[str, str]) -> dict[str, str]:
    """Environment that points a ``fraudstream`` command at this test's broker and topics."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TOPIC_TRANSACTIONS": topics["transactions"],
        "TOPIC_SCORING": topics["scoring"],
        "TOPIC_DLQ": topics["dlq"],
        "TOPIC_LABELS": topics["labels"],
        "TOPIC_SCORING_SHADOW": topics["scoring"] + ".shadow",
    }
