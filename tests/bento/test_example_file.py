"""The example body the README posts to the scorer is the schema's example, and it validates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fraudstream.schema import EXAMPLE_TRANSACTION, Transaction

pytestmark = pytest.mark.unit

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "bentos" / "fraud_scorer" / "example-transaction.json"
)


def test_example_file_is_the_schema_example() -> None:
    body = json.loads(EXAMPLE.read_text())
    assert body == EXAMPLE_TRANSACTION
    Transaction.model_validate(body)
