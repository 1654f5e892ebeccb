"""Drift gauges of the scorer: ``fraudstream_scorer_psi`` read from the /metrics of a real
``bentoml serve`` after scoring batches, and a model without a reference served without them."""

from __future__ import annotations

import logging
from asyncio import run
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import bentoml
import httpx
import pytest

from fraudstream.drift import REFERENCE_KEY, DriftReference
from fraudstream.features import STATELESS_FEATURES
from fraudstream.loader import load_csv, to_transactions
from fraudstream.local.scorer import ScorerServer
from fraudstream.schema import Transaction

WINDOW = 2000
PSI = "fraudstream_scorer_psi"


@pytest.fixture(scope="module")
def drift_scorer_url(session_dir: Path, scorer_env: dict[str, str]) -> Iterator[str]:
    """A scorer of its own (the session's one scores other tests' odd transactions): a window
    of 2,000 transactions, gauges from 500 on, refreshed after every batch."""
    env = {
        **scorer_env,
        "DRIFT_WINDOW": str(WINDOW),
        "DRIFT_MIN_TRANSACTIONS": "500",
        "DRIFT_UPDATE_INTERVAL_S": "0",
    }
    with ScorerServer(session_dir / "drift-scorer.log", env=env) as server:
        yield server.url


def psi_gauges(client: httpx.Client) -> dict[str, float]:
    out = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(PSI + "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('feature="', 1)[1].split('"', 1)[0]] = float(value)
    return out


def score(client: httpx.Client, transactions: list[dict]) -> None:
    for start in range(0, len(transactions), 500):
        resp = client.post("/score_batch", json={"transactions": transactions[start : start + 500]})
        assert resp.status_code == 200, resp.text


@pytest.mark.integration
def test_psi_gauges_stay_low_in_distribution_and_rise_with_amounts_times_three(
    drift_scorer_url, trained_model, model_data
):
    reference = DriftReference.from_metadata(bentoml.models.get(trained_model).info.metadata)
    assert reference is not None
    amounts = {"amount", "log_amount"} & set(reference.names)
    assert amounts, "amounts are among this model's top features"
    frame = load_csv(model_data["test"]).frame.sort_values("transaction_time", kind="stable")
    unseen = [
        t.model_dump(mode="json", exclude={"target"}) | {"transaction_id": f"d-{i}"}
        for i, t in enumerate(to_transactions(frame.head(WINDOW)))
    ]
    with httpx.Client(base_url=drift_scorer_url, timeout=60) as client:
        score(client, unseen[:400])
        assert psi_gauges(client) == {}, "fewer than DRIFT_MIN_TRANSACTIONS: no gauge yet"
        score(client, unseen[400:])
        before = psi_gauges(client)
        # shifted: the same transactions (new ids) with amounts x3, filling the whole window
        tripled = [
            t | {"transaction_id": f"x3-{i}", "amount": t["amount"] * 3}
            for i, t in enumerate(unseen)
        ]
        score(client, tripled)
        after = psi_gauges(client)
    print("PSI in distribution:", before, "\nPSI amounts x3:", after)
    assert set(before) == set(after) == set(reference.names)
    # the scorer's in-memory history starts empty, so history features (and with them the score)
    # of these first days are off the reference: only the per-transaction features are compared
    for name in set(reference.names) & set(STATELESS_FEATURES):
        assert before[name] < 0.1, (name, before)
    for name in amounts:
        assert after[name] > 0.2, (name, after)
    for name in set(reference.names) & set(STATELESS_FEATURES) - amounts:
        assert after[name] < 0.1, (name, after)


@pytest.mark.unit
def test_a_model_without_a_reference_is_served_without_gauges(
    service_module: ModuleType, trained_model, monkeypatch, sample_transactions
):
    ref = bentoml.models.get(trained_model)
    older = {k: v for k, v in ref.info.metadata.items() if k != REFERENCE_KEY}
    saved = bentoml.catboost.save_model(
        "fraud-model-before-drift", bentoml.catboost.load_model(ref), metadata=older
    )
    monkeypatch.setattr(
        service_module.FraudScorer.inner, "model", bentoml.models.BentoModel(str(saved.tag))
    )
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("fraudstream.scorer")
    logger.addHandler(handler)
    try:
        scorer = service_module.FraudScorer()
    finally:
        logger.removeHandler(handler)
    assert scorer.drift is None and scorer.scorer.on_scored is None
    assert any("no drift reference" in message for message in seen), seen
    rows = [Transaction.model_validate(r) for r in sample_transactions[:20]]
    assert len(run(scorer.score_batch(rows))) == 20
