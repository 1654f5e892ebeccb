"""The Scorer as the Bento service uses it: model from the store, ordered, idempotent, safe."""

from __future__ import annotations

import threading

import bentoml
import numpy as np
import pytest

from fraudstream.features import CardState, history_features
from fraudstream.history import InMemoryHistoryStore
from fraudstream.loader import load_csv, to_transactions
from fraudstream.schema import EXAMPLE_TRANSACTION, Transaction
from fraudstream.scoring import Scorer
from fraudstream.training import MODEL_NAME

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def model_ref(trained_model):
    return bentoml.models.get(trained_model)


def make_scorer(ref, **kwargs) -> Scorer:
    return Scorer(
        bentoml.catboost.load_model(ref), ref.info.metadata, model_version=str(ref.tag), **kwargs
    )


@pytest.fixture(scope="module")
def test_transactions(model_data):
    frame = load_csv(model_data["test"]).frame.head(3000)
    ids = [f"tx-{i}" for i in range(len(frame))]
    return to_transactions(frame.assign(transaction_id=ids))


def test_scores_come_back_in_input_order_with_ids_and_version(model_ref):
    scorer = make_scorer(model_ref)
    example = Transaction(**EXAMPLE_TRANSACTION)
    anonymous = example.model_copy(update={"transaction_id": None})
    results = scorer.score([example, anonymous])
    assert results[0].transaction_id == EXAMPLE_TRANSACTION["transaction_id"]
    assert len(results[1].transaction_id) == 36  # derived from the content, UUID-shaped
    assert results[0].model_version == str(model_ref.tag)
    assert str(model_ref.tag).startswith(MODEL_NAME)
    assert all(0 <= r.score <= 1 and r.threshold == scorer.threshold for r in results)


@pytest.fixture(scope="module")
def warm_history(model_data) -> InMemoryHistoryStore:
    """A history store holding the training period, as ``fraudstream history backfill`` gives."""
    store = InMemoryHistoryStore()
    states: dict[str, CardState] = {}
    history_features(load_csv(model_data["train"]).frame, states)
    store.states.update(states)
    return store


def test_flags_frauds_with_reasons_and_leaves_others_without(
    model_ref, test_transactions, warm_history
):
    scorer = make_scorer(model_ref, history=warm_history)
    results = scorer.score(test_transactions)
    assert [r.transaction_id for r in results] == [t.transaction_id for t in test_transactions]
    labels = np.array([t.target for t in test_transactions])
    flags = np.array([r.fraud_flag for r in results])
    assert labels.sum() > 0
    assert flags[labels == 1].mean() >= 0.9
    assert flags[labels == 0].mean() <= 0.05
    for r in results:
        if r.fraud_flag:
            assert 1 <= len(r.reasons) <= 3
            assert all(reason.impact > 0 for reason in r.reasons)
            assert r.reasons == sorted(r.reasons, key=lambda x: -x.impact)
            assert all(reason.feature in scorer.feature_names for reason in r.reasons)
        else:
            assert r.reasons == []


def test_a_scorer_without_history_flags_more_while_cards_are_new(model_ref, test_transactions):
    # Every card is new to an empty history store. As in the public data, some compromised
    # cards have no spending of their own (dormant cards), so "no history and a burst" is a
    # sign of fraud, and a cold scorer flags more legitimate transactions in each card's first
    # days (about 15 % here) until the history fills: backfill the history before going live.
    results = make_scorer(model_ref).score(test_transactions, explain=False)
    labels = np.array([t.target for t in test_transactions])
    flags = np.array([r.fraud_flag for r in results])
    assert flags[labels == 1].mean() >= 0.9
    assert flags[labels == 0].mean() <= 0.25


def test_rescoring_the_same_id_neither_double_counts_nor_changes_the_score(
    model_ref, test_transactions
):
    store = InMemoryHistoryStore()
    scorer = make_scorer(model_ref, history=store)
    first = scorer.score(test_transactions[:200], explain=False)
    n_after_first = sum(s.n for s in store.states.values())
    again = scorer.score(test_transactions[100:200], explain=False)
    assert sum(s.n for s in store.states.values()) == n_after_first == 200
    assert [r.score for r in again] == [r.score for r in first[100:200]]


def test_threshold_override(model_ref):
    example = Transaction(**EXAMPLE_TRANSACTION)
    assert make_scorer(model_ref, threshold=0.0).score([example])[0].fraud_flag is True
    assert make_scorer(model_ref, threshold=1.01).score([example])[0].fraud_flag is False


def test_concurrent_callers_share_one_consistent_history(model_ref, test_transactions):
    """Threads scoring different holders' batches at once: every transaction counted once."""
    store = InMemoryHistoryStore()
    scorer = make_scorer(model_ref, history=store)
    chunks = [test_transactions[i::4] for i in range(4)]
    errors: list[BaseException] = []

    def work(chunk):
        try:
            for start in range(0, len(chunk), 50):
                scorer.score(chunk[start : start + 50], explain=False)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(s.n for s in store.states.values()) == len(test_transactions)
