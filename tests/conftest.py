"""Session-scoped real infrastructure: a Kafka KRaft broker and a PostgreSQL 16 server.

``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` point the tests at existing servers instead.
Each test gets its own topic names (``topics`` fixture) and its own PostgreSQL schema
(``pg_url`` fixture, via ``search_path``), so tests are independent and order-free.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from fraudstream.local.kafka import KafkaBroker, MissingToolError
from fraudstream.local.postgres import PostgresServer
from fraudstream.local.scorer import ScorerServer


@pytest.fixture(scope="session")
def session_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fraudstream-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_broker(session_dir: Path) -> Iterator[KafkaBroker | None]:
    """The local broker we own (None when KAFKA_BOOTSTRAP_SERVERS names an external one)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield None
        return
    broker = KafkaBroker(session_dir / "kafka")
    try:
        broker.start()
    except MissingToolError as err:
        pytest.exit(f"cannot start the local Kafka broker: {err}", returncode=3)
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker | None) -> str:
    return kafka_broker.bootstrap if kafka_broker else os.environ["KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture(scope="session")
def postgres_server(session_dir: Path) -> Iterator[PostgresServer | None]:
    """The local PostgreSQL we own (None when DATABASE_URL names an external one)."""
    if os.environ.get("DATABASE_URL"):
        yield None
        return
    server = PostgresServer(session_dir / "postgres").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer | None) -> str:
    return postgres_server.url if postgres_server else os.environ["DATABASE_URL"]


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    """A libpq URL whose search_path is a fresh schema of this test's own."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}options=-csearch_path%3D{schema}"
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def topics() -> dict[str, str]:
    """Topic names unique to this test."""
    suffix = uuid.uuid4().hex[:10]
    return {
        "transactions": f"transactions-{suffix}",
        "scoring": f"scoring-{suffix}",
        "dlq": f"transactions.dlq-{suffix}",
        "labels": f"labels-{suffix}",
    }


@pytest.fixture(scope="session")
def scorer_env(bentoml_home: str | Path, trained_model: str) -> dict[str, str]:
    """Environment of a test scorer: ``trained_model``, in-memory history, one worker, PSI
    gauges from the first scored batch (tests/k8s/test_k8s_promql.py reads every metric the
    chart names)."""
    return {
        "BENTOML_HOME": str(bentoml_home),
        "MODEL_TAG": str(trained_model),
        "DATABASE_URL": "",
        "WORKERS": "1",
        "LOG_FORMAT": "json",
        "DRIFT_MIN_TRANSACTIONS": "1",
    }


@pytest.fixture(scope="session")
def scorer_url(session_dir: Path, scorer_env: dict[str, str]) -> Iterator[str]:
    """Base URL of a real ``bentoml serve`` of the fraud scorer serving ``trained_model``
    (in-memory history, one worker) on a free port; ready (``/readyz`` = 200) when yielded."""
    with ScorerServer(session_dir / "scorer.log", env=scorer_env) as server:
        yield server.url


@pytest.fixture(scope="session")
def bentoml_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private BentoML home for the session: BENTOML_HOME (for subprocesses) and BentoML's
    own container (resolved once per process, so it is overridden here, not just the env)."""
    from bentoml._internal.bento import BentoStore
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    home = tmp_path_factory.mktemp("bentoml")
    for sub in ("models", "bentos", "envs", "tmp"):
        (home / sub).mkdir()
    previous = os.environ.get("BENTOML_HOME")
    os.environ["BENTOML_HOME"] = str(home)
    overrides = {
        BentoMLContainer.bentoml_home: str(home),
        BentoMLContainer.model_store_dir: str(home / "models"),
        BentoMLContainer.bento_store_dir: str(home / "bentos"),
        BentoMLContainer.tmp_bento_store_dir: str(home / "tmp"),
        BentoMLContainer.env_store_dir: str(home / "envs"),
        BentoMLContainer.model_store: ModelStore(str(home / "models")),
        BentoMLContainer.bento_store: BentoStore(str(home / "bentos")),
        BentoMLContainer.tmp_bento_store: BentoStore(str(home / "tmp")),
    }
    for provider, value in overrides.items():
        provider.set(value)
    yield home
    for provider in overrides:
        provider.reset()
    if previous is None:
        os.environ.pop("BENTOML_HOME", None)
    else:
        os.environ["BENTOML_HOME"] = previous


@pytest.fixture(scope="session")
def model_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Simulated labelled CSVs: 'train' (Jan-Jun 2019) and 'test' (Jul-Aug 2019, unseen)."""
    from datetime import date

    from fraudstream.simulator import simulate, write_csv

    folder = tmp_path_factory.mktemp("model-data")
    frame = simulate(200, date(2019, 1, 1), date(2019, 8, 31), seed=11, episodes_per_year=3.0)
    later = frame["transaction_time"] >= "2019-07-01"
    paths = {"train": folder / "train.csv", "test": folder / "test.csv"}
    write_csv(frame[~later], str(paths["train"]))
    write_csv(frame[later], str(paths["test"]))
    return paths


@pytest.fixture(scope="session")
def trained_model(bentoml_home: Path, model_data: dict[str, Path]) -> str:
    """Tag ('fraud-model:...') of a model trained on ``model_data['train']`` into the
    session's BentoML store (history features on)."""
    from fraudstream.training import TrainConfig, train_file

    config = TrainConfig(iterations=400, learning_rate=0.15, early_stopping=50)
    tag, _ = train_file(model_data["train"], config)
    return tag
