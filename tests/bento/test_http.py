"""The scorer over HTTP, through a real ``bentoml serve`` (the ``scorer_url`` fixture)."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import httpx
import pytest

from fraudstream.schema import EXAMPLE_TRANSACTION

pytestmark = pytest.mark.integration

RESULT_KEYS = {"transaction_id", "score", "fraud_flag", "threshold", "model_version", "reasons"}
SECRET = "Zebulon-Quixote"  # a personal value that must never reach the log


@pytest.fixture(scope="module")
def client(scorer_url: str) -> httpx.Client:
    with httpx.Client(base_url=scorer_url, timeout=30) as c:
        yield c


def _tx(**changes) -> dict:
    tx = {**EXAMPLE_TRANSACTION, "transaction_id": f"http-{uuid.uuid4()}"}
    tx.update(changes)
    return tx


def _metric(client: httpx.Client, name: str, **labels: str) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_probes(client):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_score_one_transaction(client):
    tx = _tx()
    resp = client.post("/score", json=tx)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == RESULT_KEYS
    assert body["transaction_id"] == tx["transaction_id"]
    assert 0 <= body["score"] <= 1 and body["fraud_flag"] == (body["score"] >= body["threshold"])
    if body["fraud_flag"]:
        assert 1 <= len(body["reasons"]) <= 3
        assert set(body["reasons"][0]) == {"feature", "value", "impact"}
    else:
        assert body["reasons"] == []


def test_score_without_an_id_gets_the_same_one_each_time(client):
    tx = _tx(street=f"{uuid.uuid4().hex[:8]} Retry Road")
    del tx["transaction_id"]
    first = client.post("/score", json=tx).json()
    second = client.post("/score", json=tx).json()
    assert first["transaction_id"] and second == first


def test_score_batch_keeps_the_input_order(client, sample_transactions):
    rows = sample_transactions[:300]
    resp = client.post("/score_batch", json={"transactions": rows})
    assert resp.status_code == 200, resp.text
    results = resp.json()
    assert [r["transaction_id"] for r in results] == [r["transaction_id"] for r in rows]
    assert all(set(r) == RESULT_KEYS for r in results)
    flagged = [r for r in results if r["fraud_flag"]]
    assert all(r["reasons"] for r in flagged)
    assert all(not r["reasons"] for r in results if not r["fraud_flag"])


def test_score_and_score_batch_agree(client):
    card = {"name_1": "Agree", "name_2": "Ment", "street": f"{uuid.uuid4().hex[:6]} Road"}
    single = client.post("/score", json=_tx(**card, transaction_id="agree-1")).json()
    batch = client.post(
        "/score_batch", json={"transactions": [_tx(**card, transaction_id="agree-1")]}
    ).json()
    assert batch == [single]  # the same id is not counted twice, so the same answer


def test_concurrent_single_calls_are_batched(client):
    before = _metric(client, "fraudstream_scorer_merged_calls_count")
    before_sum = _metric(client, "fraudstream_scorer_merged_calls_sum")
    txs = [_tx() for _ in range(300)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(pool.map(lambda tx: client.post("/score", json=tx), txs))
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()["transaction_id"] for r in responses] == [t["transaction_id"] for t in txs]
    calls = _metric(client, "fraudstream_scorer_merged_calls_count")
    scored = _metric(client, "fraudstream_scorer_merged_calls_sum")
    assert scored - before_sum == 300
    assert calls - before < 300, "concurrent requests should share model calls"


BAD_SCORE_BODIES = [
    pytest.param(b"{not json", "body", "invalid_json", id="invalid-json"),
    pytest.param(b"", "body", "invalid_json", id="empty-body"),
    pytest.param(b"[]", "body", "invalid_type", id="array-body"),
    pytest.param(
        json.dumps({k: v for k, v in _tx().items() if k != "amount"}),
        "amount",
        "missing_field",
        id="missing-field",
    ),
    pytest.param(json.dumps(_tx(shoe_size=44)), "shoe_size", "unknown_field", id="extra-field"),
    pytest.param(json.dumps(_tx(amount="12 dollars")), "amount", "invalid_type", id="wrong-type"),
    pytest.param(
        json.dumps(_tx(population_city=[1])),
        "population_city",
        "invalid_type",
        id="wrong-type-list",
    ),
    pytest.param(json.dumps(_tx(amount=-3.5)), "amount", "invalid_value", id="negative-amount"),
    pytest.param(json.dumps(_tx(amount=5e9)), "amount", "invalid_value", id="huge-amount"),
    pytest.param(
        json.dumps(_tx(amount=1)).replace('"amount": 1', '"amount": NaN'),
        "amount",
        "invalid_value",
        id="nan-amount",
    ),
    pytest.param(
        json.dumps(_tx(transaction_time="2021-13-01 00:00:00")),
        "transaction_time",
        "invalid_type",
        id="impossible-date",
    ),
    pytest.param(
        json.dumps(_tx(transaction_time="3020-01-01 00:00:00")),
        "transaction_time",
        "invalid_value",
        id="far-future-date",
    ),
    pytest.param(
        json.dumps(_tx(name_1=SECRET, street=SECRET, cat_id="yachts")),
        "cat_id",
        "invalid_value",
        id="bad-category",
    ),
    # accepted by the schema once, then crashed what comes after the scorer
    pytest.param(json.dumps(_tx(merch="fraud_\x00Kirlin")), "merch", "invalid_value", id="nul"),
    pytest.param(
        json.dumps(_tx(street=SECRET + "\x1b[2J")), "street", "invalid_value", id="escape-char"
    ),
    pytest.param(
        json.dumps(_tx(population_city=10**400)),
        "population_city",
        "invalid_value",
        id="huge-integer",
    ),
    pytest.param(
        json.dumps(_tx(transaction_time=f"{date.today().year + 1}-06-01 00:00:00")),
        "transaction_time",
        "invalid_value",
        id="next-year",
    ),
    pytest.param(json.dumps(_tx(jobs="x" * 201)), "jobs", "invalid_value", id="too-long"),
]


@pytest.mark.parametrize(("body", "field", "reason"), BAD_SCORE_BODIES)
def test_bad_score_requests_get_a_4xx_naming_the_field(client, body, field, reason):
    before = _metric(client, "fraudstream_scorer_rejected_requests_total", reason=reason)
    resp = client.post("/score", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    error = resp.json()
    assert error["field"] == field and error["reason"] == reason
    assert field in error["error"]
    after = _metric(client, "fraudstream_scorer_rejected_requests_total", reason=reason)
    assert after == before + 1
    assert client.post("/score", json=_tx()).status_code == 200  # still serving


def test_bad_batches_name_the_transaction_and_field(client):
    bad = client.post("/score_batch", json={"transactions": [_tx(), _tx(amount=-1)]})
    assert bad.status_code == 400 and bad.json()["field"] == "transactions.1.amount"
    empty = client.post("/score_batch", json={"transactions": []})
    assert empty.status_code == 400 and empty.json()["reason"] == "empty_batch"
    wrapped = client.post("/score_batch", json=[_tx()])
    assert wrapped.status_code == 400 and wrapped.json()["field"] == "body"
    missing = client.post("/score_batch", json={})
    assert missing.status_code == 400 and missing.json()["field"] == "transactions"
    extra = client.post("/score_batch", json={"transactions": [_tx()], "priority": "high"})
    assert extra.status_code == 400 and extra.json()["field"] == "priority"
    oversized = client.post("/score_batch", json={"transactions": [_tx()] * 1001})
    assert oversized.status_code == 413
    assert oversized.json()["reason"] == "batch_too_large"
    assert oversized.json()["field"] == "transactions"


def test_oversized_bodies_and_wrong_media_types_are_refused(client):
    huge = b'{"merch": "' + b"x" * 20_000_000 + b'"}'
    resp = client.post("/score_batch", content=huge, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413 and resp.json()["reason"] == "body_too_large"
    form = client.post("/score", data={"amount": "1"})
    assert form.status_code == 415 and form.json()["field"] == "content-type"
    assert client.post("/score", json=_tx()).status_code == 200


def test_metrics_expose_ours_and_bentomls(client):
    client.post("/score", json=_tx())
    client.post("/score", json={**_tx(), "amount": -1})  # a rejection, so its counter has a sample
    text = client.get("/metrics").text
    for name in (
        "fraudstream_scorer_score_bucket",
        "fraudstream_scorer_transactions_total",
        "fraudstream_scorer_model_info",
        "fraudstream_scorer_rejected_requests_total",
        "bentoml_service_request_duration_seconds_bucket",
        "bentoml_service_request_total",
        "fraudstream_scorer_merged_calls_bucket",
    ):
        assert name in text, name
    info = [line for line in text.splitlines() if line.startswith("fraudstream_scorer_model_info")]
    assert 'model_version="fraud-model:' in info[0] and "threshold=" in info[0]


def test_flags_are_counted(client, sample_transactions):
    before = _metric(client, "fraudstream_scorer_fraud_flags_total")
    rows = [{**r, "transaction_id": f"flags-{uuid.uuid4()}"} for r in sample_transactions[:200]]
    results = client.post("/score_batch", json={"transactions": rows}).json()
    flagged = sum(r["fraud_flag"] for r in results)
    assert _metric(client, "fraudstream_scorer_fraud_flags_total") == before + flagged


def test_transactions_and_flags_are_counted_by_category(client, sample_transactions):
    from fraudstream.schema import CATEGORIES

    def by_category(name: str) -> dict[str, float]:
        return {c: _metric(client, name, endpoint="score_batch", category=c) for c in CATEGORIES}

    scored, flags = (
        by_category(f"fraudstream_scorer_{n}_total") for n in ("transactions", "fraud_flags")
    )
    rows = [{**r, "transaction_id": f"cat-{uuid.uuid4()}"} for r in sample_transactions[:300]]
    results = client.post("/score_batch", json={"transactions": rows}).json()
    after_scored = by_category("fraudstream_scorer_transactions_total")
    after_flags = by_category("fraudstream_scorer_fraud_flags_total")
    for category in CATEGORIES:
        mine = [res for row, res in zip(rows, results, strict=True) if row["cat_id"] == category]
        assert after_scored[category] == scored[category] + len(mine), category
        assert after_flags[category] == flags[category] + sum(r["fraud_flag"] for r in mine)


def test_openapi_documents_both_apis(client):
    spec = client.get("/docs.json").json()
    assert {"/score", "/score_batch"} <= set(spec["paths"])
    score_body = spec["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]
    assert "amount" in json.dumps(score_body)


def test_personal_fields_never_reach_the_log(client, session_dir: Path):
    client.post("/score", json=_tx(name_1=SECRET, street=SECRET, amount=-1))
    client.post("/score", json=_tx(name_1=SECRET, street=SECRET))
    log_text = (session_dir / "scorer.log").read_text(errors="replace")
    assert "fraudstream.scorer" in log_text  # the log is there and is ours
    assert SECRET not in log_text
