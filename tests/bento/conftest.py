"""Fixtures of the scorer tests (the service module, sample transactions).

The model comes from the session fixtures ``bentoml_home`` / ``trained_model`` of the root
conftest; the HTTP tests use ``scorer_url`` (a real ``bentoml serve``).
"""

from __future__ import annotations

import importlib
import os
import sys
from datetime import date
from pathlib import Path
from types import ModuleType

import pytest

from fraudstream.local.paths import REPO_ROOT
from fraudstream.schema import EXAMPLE_TRANSACTION


@pytest.fixture(scope="session")
def sample_transactions() -> list[dict]:
    """A few hundred simulated transactions (JSON-ready dicts, no labels, unique ids)."""
    from fraudstream.simulator import simulate

    frame = simulate(40, date(2020, 6, 1), date(2020, 6, 20), seed=11)
    frame = frame.drop(columns=["target"])
    frame["transaction_time"] = frame["transaction_time"].astype(str)
    rows = frame.to_dict("records")
    for i, row in enumerate(rows):
        row["transaction_id"] = f"sample-{i:05d}"
    return rows[:400]


@pytest.fixture(scope="session")
def service_module(bentoml_home: str | Path, trained_model: str) -> ModuleType:
    """``bentos.fraud_scorer.service`` imported against the test model store."""
    os.environ["BENTOML_HOME"] = str(bentoml_home)
    os.environ["MODEL_TAG"] = str(trained_model)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module("bentos.fraud_scorer.service")


@pytest.fixture
def example() -> dict:
    return dict(EXAMPLE_TRANSACTION)
