"""The scorer service class used directly (no HTTP): results, reasons, ids, validation rules."""

from __future__ import annotations

import json
from asyncio import run
from types import ModuleType

import pytest

from fraudstream.schema import EXAMPLE_TRANSACTION, Transaction

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def scorer(service_module: ModuleType):
    return service_module.FraudScorer()


# The API methods are coroutines (they run on the server's event loop): `run` awaits one.


def _txs(rows: list[dict]) -> list[Transaction]:
    return [Transaction.model_validate(r) for r in rows]


def test_results_come_in_input_order_with_the_model_contract(scorer, sample_transactions):
    rows = sample_transactions[:120]
    results = run(scorer.score_batch(_txs(rows)))
    assert [r.transaction_id for r in results] == [r["transaction_id"] for r in rows]
    for r in results:
        assert 0.0 <= r.score <= 1.0
        assert r.fraud_flag == (r.score >= r.threshold)
        assert r.model_version.startswith("fraud-model:")
        assert r.threshold == scorer.scorer.threshold


def test_flagged_transactions_get_up_to_three_positive_reasons(scorer, sample_transactions):
    results = run(scorer.score_batch(_txs(sample_transactions[120:400])))
    flagged = [r for r in results if r.fraud_flag]
    assert flagged, "the sample should contain transactions the model flags"
    for r in results:
        if not r.fraud_flag:
            assert r.reasons == []
    for r in flagged:
        assert 1 <= len(r.reasons) <= 3
        impacts = [reason.impact for reason in r.reasons]
        assert all(i > 0 for i in impacts) and impacts == sorted(impacts, reverse=True)
        assert all(reason.feature in scorer.scorer.feature_names for reason in r.reasons)


def test_score_twice_without_an_id_gets_one_id_and_counts_once(scorer, example):
    # a client retry: the same transaction without an id, sent twice
    card = {"name_1": "Re", "name_2": "Try", "street": "2 Again Avenue"}
    del example["transaction_id"]
    plain = {**example, **card, "transaction_time": "2020-07-02 10:00:00"}
    later = {**plain, "transaction_id": "retry-later", "transaction_time": "2020-07-02 11:00:00"}
    (first,) = run(scorer.score(_txs([plain])))
    (second,) = run(scorer.score(_txs([plain])))
    assert len(first.transaction_id) == 36 and second == first
    # the card's history holds it once: the next transaction sees one earlier transaction
    _, rows = scorer.scorer.features(_txs([later]))
    assert rows[0][scorer.scorer.feature_names.index("h_n_prev")] == 1


def test_scoring_the_same_transaction_twice_counts_it_once(scorer, example):
    card = {**example, "name_1": "Idem", "name_2": "Potent", "street": "1 Repeat Road"}
    first = {**card, "transaction_id": "idem-1", "transaction_time": "2020-07-01 10:00:00"}
    later = {**card, "transaction_id": "idem-2", "transaction_time": "2020-07-01 11:00:00"}
    (once,) = run(scorer.score(_txs([first])))
    (again,) = run(scorer.score(_txs([first])))
    assert again == once
    # the card's history holds idem-1 once: the next transaction sees one earlier transaction
    _, rows = scorer.scorer.features(_txs([later]))
    assert rows[0][scorer.scorer.feature_names.index("h_n_prev")] == 1


def test_the_batchable_score_api_scores_a_list(scorer, sample_transactions):
    results = run(scorer.score(_txs(sample_transactions[:5])))
    assert [r.transaction_id for r in results] == [
        r["transaction_id"] for r in sample_transactions[:5]
    ]


def test_threshold_override(service_module, monkeypatch, sample_transactions):
    monkeypatch.setattr(service_module.SETTINGS, "threshold", 0.5)
    overridden = service_module.FraudScorer()
    results = run(overridden.score_batch(_txs(sample_transactions[:50])))
    assert overridden.scorer.threshold == 0.5
    assert all(r.threshold == 0.5 and r.fraud_flag == (r.score >= 0.5) for r in results)


def test_readiness_without_a_database(scorer):
    assert scorer.__is_ready__() is True


def test_readiness_is_false_until_the_database_has_answered_once(service_module):
    probe = object.__new__(service_module.FraudScorer.inner)
    probe.database_url = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
    assert probe.__is_ready__() is False


def test_readiness_outlives_a_later_database_outage(service_module, monkeypatch):
    """Once PostgreSQL has answered, an outage makes scoring answer 503 (the bridge retries),
    not the pod unready: that would take every replica out of the Service at once."""
    import psycopg2

    class Answering:
        def cursor(self):
            return self

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def execute(self, sql):
            pass

        def close(self):
            pass

    database_up = True

    def connect(*args, **kwargs):
        if not database_up:
            raise psycopg2.OperationalError("connection refused")
        return Answering()

    monkeypatch.setattr(psycopg2, "connect", connect)
    probe = object.__new__(service_module.FraudScorer.inner)
    probe.database_url = "postgresql://fraudstream@db.invalid/fraudstream"
    database_up = False
    assert probe.__is_ready__() is False  # at start: not ready before PostgreSQL answers
    database_up = True
    assert probe.__is_ready__() is True
    database_up = False
    assert probe.__is_ready__() is True


# --------------------------------------------------------------------------- validation


def _body(**changes) -> bytes:
    tx = dict(EXAMPLE_TRANSACTION)
    for key, value in changes.items():
        if value is _DROP:
            tx.pop(key)
        else:
            tx[key] = value
    return json.dumps(tx).encode()


_DROP = object()


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (b"{not json", "body", "invalid_json"),
        (b"[1, 2]", "body", "invalid_type"),
        (_body(amount=_DROP), "amount", "missing_field"),
        (_body(favourite_colour="blue"), "favourite_colour", "unknown_field"),
        (_body(amount="a lot"), "amount", "invalid_type"),
        (_body(post_code="ten"), "post_code", "invalid_type"),
        (_body(amount=-5), "amount", "invalid_value"),
        (_body(amount=0), "amount", "invalid_value"),
        (_body(amount=1e12), "amount", "invalid_value"),
        (_body(transaction_time="2020-02-30 10:00:00"), "transaction_time", "invalid_type"),
        (_body(transaction_time="1850-01-01 10:00:00"), "transaction_time", "invalid_value"),
        (_body(cat_id="groceries"), "cat_id", "invalid_value"),
        (_body(gender="X"), "gender", "invalid_value"),
        (_body(lat=123.0), "lat", "invalid_value"),
    ],
)
def test_bad_transactions_are_rejected_naming_the_field(service_module, body, field, reason):
    outcome = service_module.parse_transaction(body)
    assert isinstance(outcome, service_module.Rejection)
    assert (outcome.status, outcome.field, outcome.reason) == (400, field, reason)
    assert outcome.message.startswith(f"{field}: ")


def test_nan_and_infinite_amounts_are_rejected(service_module):
    for token in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        body = _body(amount=0).replace(b'"amount": 0', b'"amount": ' + token)
        outcome = service_module.parse_transaction(body)
        assert isinstance(outcome, service_module.Rejection), token
        assert outcome.field == "amount"


def test_batch_errors_name_the_transaction_and_field(service_module):
    good = dict(EXAMPLE_TRANSACTION)
    bad = {**good, "amount": -1}
    outcome = service_module.parse_batch(json.dumps({"transactions": [good, bad]}).encode())
    assert outcome.field == "transactions.1.amount" and outcome.status == 400
    empty = service_module.parse_batch(b'{"transactions": []}')
    assert (empty.status, empty.reason, empty.field) == (400, "empty_batch", "transactions")
    limit = service_module.SETTINGS.max_batch_size
    big = json.dumps({"transactions": [good] * (limit + 1)}).encode()
    oversized = service_module.parse_batch(big)
    assert (oversized.status, oversized.reason) == (413, "batch_too_large")


def test_rejections_never_echo_the_input(service_module):
    secret = "Zebulon-Quixote"
    body = _body(name_1=secret * 20, street=secret, amount="x")
    outcome = service_module.parse_transaction(body)
    rendered = outcome.response().body.decode()
    assert secret not in rendered and secret not in repr(outcome)
