"""Who a transaction belongs to and which transaction it is (:mod:`fraudstream.identity`):
keyed card keys, and transaction ids that come from the source or from the content, so that a
transaction sent again gets the same id."""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import date, datetime

import pandas as pd
import pytest

from fraudstream import identity
from fraudstream.schema import EXAMPLE_TRANSACTION, PERSONAL_FIELDS, Transaction
from fraudstream.simulator import simulate

pytestmark = pytest.mark.unit

UUID_TEXT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rows = simulate(10, date(2020, 3, 1), date(2020, 3, 5), seed=3).drop(columns=["target"])
    return rows.head(200).reset_index(drop=True)


def _tx(**changes) -> Transaction:
    return Transaction.model_validate({**EXAMPLE_TRANSACTION, **changes})


def test_ids_are_stable_uuid_shaped_and_pass_the_schema(frame):
    first = identity.frame_transaction_ids(frame)
    assert first == identity.frame_transaction_ids(frame.copy())
    assert len(set(first)) == len(frame)
    for tx_id in first:
        assert UUID_TEXT.match(tx_id), tx_id
        Transaction.model_validate({**EXAMPLE_TRANSACTION, "transaction_id": tx_id})
    # the same content as a Transaction (the scorer's path) gets the same id as in a file
    row = frame.iloc[0].to_dict()
    row["transaction_time"] = row["transaction_time"].to_pydatetime()
    assert identity.transaction_id_of(Transaction.model_validate(row)) == first[0]


def test_an_id_from_the_source_wins(frame):
    given = frame.copy()
    given["transaction_id"] = None
    given.loc[[3, 7], "transaction_id"] = ["kaggle-trans-num-3", "teta-id-7"]
    ids = identity.frame_transaction_ids(given)
    assert ids[3] == "kaggle-trans-num-3" and ids[7] == "teta-id-7"
    derived = identity.frame_transaction_ids(frame)
    assert [i for n, i in enumerate(ids) if n not in (3, 7)] == [
        i for n, i in enumerate(derived) if n not in (3, 7)
    ]
    assert identity.transaction_id_of(_tx(transaction_id="from-client")) == "from-client"


def test_true_duplicates_are_told_apart_by_occurrence_not_by_line(frame):
    twice = pd.concat([frame.iloc[[5]], frame, frame.iloc[[5]]], ignore_index=True)
    ids = identity.frame_transaction_ids(twice)
    assert len(set(ids)) == len(twice)  # identical rows are distinct transactions
    original = identity.frame_transaction_ids(frame)
    # the first copy of row 5 takes its id; the later copies get occurrences 1 and 2
    assert ids[0] == original[5]
    assert ids[1:6] + ids[7:-1] == original[:5] + original[6:]
    tx = frame.iloc[5]
    card = identity.card_key(tx["name_1"], tx["name_2"], tx["street"])
    args = (card, tx["transaction_time"].to_pydatetime(), tx["amount"], tx["merch"])
    assert ids[6] == identity.transaction_id(*args, occurrence=1)
    assert ids[-1] == identity.transaction_id(*args, occurrence=2)
    # a row added in front of the file moves no other row's id
    other = frame.iloc[[0]].assign(amount=frame["amount"].iloc[0] + 1)
    shifted = identity.frame_transaction_ids(pd.concat([other, frame], ignore_index=True))
    assert shifted[1:] == original and shifted[0] not in original


def test_a_batch_without_ids_numbers_its_identical_transactions():
    plain = _tx(transaction_id=None)
    ids = identity.transaction_ids([plain, _tx(transaction_id="kept"), plain])
    assert ids[0] == identity.transaction_id_of(plain)  # occurrence 0: what /score gives
    assert ids[1] == "kept" and ids[2] != ids[0]
    assert identity.transaction_ids([plain, plain]) == [ids[0], ids[2]]


def test_another_secret_gives_other_keys_and_ids():
    names = ("Jane", "Doe", "351 Darlene Green")
    a = identity.card_key(*names, secret="one secret")
    b = identity.card_key(*names, secret="another secret")
    assert a != b and a == identity.card_key(*names, secret="one secret")
    assert re.fullmatch(r"[0-9a-f]{32}", a)
    # a list of names does not reverse it: it is not the plain hash of the names
    plain = hashlib.sha256("\x1f".join(names).encode()).hexdigest()[:32]
    assert identity.card_key(*names) != plain
    when = datetime(2020, 6, 21, 22, 41, 7)
    one = identity.transaction_id(a, when, 912.35, "fraud_Kirlin", secret="one secret")
    two = identity.transaction_id(a, when, 912.35, "fraud_Kirlin", secret="another secret")
    assert one != two
    tx = _tx(transaction_id=None)
    assert identity.transaction_id_of(tx, secret="one secret") != identity.transaction_id_of(
        tx, secret="another secret"
    )


def test_no_personal_value_appears_in_a_key_or_an_id():
    tx = _tx(transaction_id=None, name_1="Zebulon", name_2="Quixote", street="9 Secret Lane")
    values = [str(getattr(tx, f)).lower() for f in PERSONAL_FIELDS]
    values += ["zebulon", "quixote", "secret", "lane", "33.9659", "80.9355"]
    for text in (tx.card_key, identity.transaction_id_of(tx)):
        for value in values:
            assert value not in text.lower()


def test_the_development_secret_is_used_with_one_warning(monkeypatch, caplog):
    monkeypatch.delenv("CARD_KEY_SECRET", raising=False)
    identity.reset()
    try:
        with caplog.at_level(logging.WARNING, logger="fraudstream.identity"):
            default = identity.card_key("Jane", "Doe", "1 Road")
            identity.card_key("John", "Doe", "2 Road")
        warnings = [r for r in caplog.records if "CARD_KEY_SECRET" in r.getMessage()]
        assert len(warnings) == 1
        assert default == identity.card_key(
            "Jane", "Doe", "1 Road", secret=identity.DEV_CARD_KEY_SECRET
        )
        monkeypatch.setenv("CARD_KEY_SECRET", "from-a-kubernetes-secret")
        identity.reset()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fraudstream.identity"):
            keyed = identity.card_key("Jane", "Doe", "1 Road")
        assert keyed == identity.card_key(
            "Jane", "Doe", "1 Road", secret="from-a-kubernetes-secret"
        )
        assert keyed != default and not caplog.records
    finally:
        monkeypatch.delenv("CARD_KEY_SECRET", raising=False)
        identity.reset()
