"""History features: causal, meaningful, and the same in the batch and the online path."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from fraudstream.features import (
    MAX_MERCHANTS,
    MAX_RECENT,
    WEEK,
    CardState,
    build_features,
    events_from_frame,
    feature_names,
    history_features,
    run_events,
    transactions_frame,
)
from fraudstream.history import InMemoryHistoryStore
from fraudstream.loader import to_transactions
from fraudstream.schema import EXAMPLE_TRANSACTION, Transaction
from fraudstream.simulator import simulate

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def stream() -> pd.DataFrame:
    frame = simulate(25, date(2019, 11, 20), date(2019, 12, 20), seed=8, episodes_per_year=6)
    return frame.drop(columns=["target"])


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Bit-identical values (NaN equal to NaN)."""
    np.testing.assert_array_equal(a.to_numpy(dtype=float), b.to_numpy(dtype=float))


def test_features_never_change_when_later_transactions_arrive(stream):
    cut = len(stream) * 2 // 3
    prefix = history_features(stream.iloc[:cut])
    full = history_features(stream)
    same(prefix, full.iloc[:cut])


def test_features_do_not_depend_on_file_order(stream):
    shuffled = stream.sample(frac=1.0, random_state=3)
    same(history_features(shuffled).loc[stream.index], history_features(stream))


def tx(minutes: float, amount: float, cat: str = "grocery_pos", merch: str = "fraud_A") -> dict:
    base = datetime(2020, 5, 4, 12, 0, 0)  # a Monday noon
    record = dict(EXAMPLE_TRANSACTION, transaction_id=None)
    record.update(
        transaction_time=base + timedelta(minutes=minutes),
        amount=amount,
        cat_id=cat,
        merch=merch,
    )
    return record


def test_history_features_count_what_a_person_would_count():
    day = 24 * 60
    records = [
        tx(-8 * day, 50),  # a week and a day before: outside every window
        tx(-3 * day, 40),
        tx(-2 * 60, 60),
        tx(-30, 50, cat="food_dining", merch="fraud_B"),
        tx(0, 900, cat="shopping_net", merch="fraud_C"),  # the one we look at
    ]
    frame = transactions_frame([Transaction(**r) for r in records])
    row = history_features(frame).iloc[-1]
    assert row["h_n_prev"] == 4
    assert (row["h_n_1h"], row["h_n_24h"], row["h_n_7d"]) == (1, 2, 3)
    assert (row["h_amt_1h"], row["h_amt_24h"], row["h_amt_7d"]) == (50, 110, 150)
    assert row["h_secs_since_prev"] == 30 * 60
    assert row["h_amt_rel_mean"] == pytest.approx(900 / 50)
    assert row["h_cat_first"] == 1 and row["h_merch_first"] == 1
    assert row["h_new_merch_24h"] == 1  # fraud_B was new 30 minutes ago
    first = history_features(frame).iloc[0]
    assert first["h_n_prev"] == 0 and math.isnan(first["h_secs_since_prev"])
    repeat = history_features(frame).iloc[2]
    assert repeat["h_cat_first"] == 0 and repeat["h_merch_first"] == 0


def test_other_card_holders_do_not_leak_into_a_history():
    records = [tx(0, 10), tx(5, 10), dict(tx(10, 10), name_1="Other")]
    frame = transactions_frame([Transaction(**r) for r in records])
    assert history_features(frame)["h_n_prev"].tolist() == [0, 1, 0]


def test_online_scoring_path_gives_the_batch_features(stream):
    """What the scorer feeds the model (Scorer.features: batches reversed inside, several calls,
    history in a store) is bit-identical to what training computed for the same stream."""
    from fraudstream.scoring import Scorer

    names = feature_names()
    expected = build_features(stream)[names].reset_index(drop=True)
    scorer = Scorer(None, {"feature_names": names, "threshold": 0.5}, InMemoryHistoryStore())
    transactions = to_transactions(stream.assign(transaction_id=[f"id{i}" for i in stream.index]))
    rows = []
    for start in range(0, len(transactions), 97):
        batch = transactions[start : start + 97][::-1]  # reversed: the scorer must reorder
        rows.extend(scorer.features(batch)[1][::-1])
    online = pd.DataFrame(rows, columns=names)
    categorical = ["cat_id", "gender", "us_state"]
    assert online[categorical].to_numpy().tolist() == expected[categorical].to_numpy().tolist()
    same(online.drop(columns=categorical), expected.drop(columns=categorical))


def test_recording_is_idempotent_on_transaction_id(stream):
    events = events_from_frame(stream.head(40))
    ids = [f"id{i}" for i in range(40)]
    store = InMemoryHistoryStore()
    first = store.apply(ids, events)
    again = store.apply(ids[10:20], events[10:20])
    assert again == first[10:20]
    key = events[0][0]
    assert store.states[key].n == sum(1 for e in events if e[0] == key)


def test_state_survives_serialisation_exactly(stream):
    events = events_from_frame(stream)
    half = len(events) // 2
    states: dict[str, CardState] = {}
    run_events(events[:half], states)
    copies = {k: CardState.from_json(s.to_json()) for k, s in states.items()}
    assert run_events(events[half:], copies) == run_events(events[half:], states)


def test_state_keeps_only_the_week_before_the_latest_time_when_times_go_back():
    # a replayed file or a load test that wraps sends a card's month again: times go back, and
    # this time never reach the latest time seen again (the last hour is missing). The kept lists
    # must hold only the week before the latest time (each pass adds its own last week: at most
    # 3 x 168 hourly entries), not every late transaction of the later passes.
    start = datetime(2020, 7, 1).timestamp()
    month = [(start + i * 3600.0, 10.0 + i % 7, i % 5, 1000 + i % 40, i % 24) for i in range(720)]
    state = CardState()
    for events in (month, month[:-1], month[:-1]):
        for event in events:
            state.step(*event)
    assert state.n == 3 * 720 - 2
    assert len(state.ts) <= 3 * 168
    assert len(state.ts) == len(state.amts) == len(state.newms) == len(state.nights)
    assert max(state.ts) - min(state.ts) < WEEK


def test_a_transaction_older_than_the_kept_week_counts_only_in_the_aggregates():
    state = CardState()
    t = datetime(2020, 7, 10).timestamp()
    state.step(t, 50.0, 0, 1, 12)
    features = state.step(t - 10 * 86400.0, 20.0, 0, 2, 12)  # ten days late
    assert features[0] == 1.0  # one transaction before it, in the aggregates
    assert features[1:4] == (0.0, 0.0, 0.0)  # none of its windows holds the later one
    assert state.n == 2 and len(state.ts) == 1


def test_a_card_with_thousands_of_transactions_a_week_keeps_a_small_state():
    # 2,000 transactions a week for three weeks, at 700 different merchants: the state (what the
    # PostgreSQL store reads and writes on every transaction) stays within 8 kB and stops growing
    state = CardState()
    start = datetime(2020, 7, 6).timestamp()
    sizes = []
    for i in range(6000):
        t = float(int(start + i * WEEK / 2000))
        state.step(t, 10.0 + (i * 7919) % 5000 / 100, i % 14, 10**9 + (i * 31) % 700, i % 24)
        if i % 1000 == 999:
            sizes.append(len(state.to_json()))
    assert max(sizes) <= 8192, sizes
    assert max(sizes[2:]) - min(sizes[2:]) < 200  # no growth once the window is full
    assert len(state.ts) == len(state.amts) == len(state.bigs) == MAX_RECENT
    assert len(state.merchants) == MAX_MERCHANTS
    assert state.n == 6000  # the aggregates still count everything
    # the windows count the most recent MAX_RECENT transactions
    features = state.step(t + 1.0, 20.0, 0, 1, 12)
    assert features[3] == MAX_RECENT  # h_n_7d
    assert features[1] == 12  # h_n_1h: exact (fewer than the cap within the hour)


def test_a_card_remembers_its_most_recently_used_merchants():
    state = CardState()
    t = datetime(2020, 7, 1).timestamp()

    def first_use(merchant: int) -> bool:
        nonlocal t
        t += 60.0
        return state.step(t, 10.0, 0, merchant, 12)[13] == 1.0  # h_merch_first

    assert first_use(0)
    for merchant in range(1, MAX_MERCHANTS):  # 100 merchants in all
        assert first_use(merchant)
    assert not first_use(0)  # 0 is now the most recently used
    assert first_use(MAX_MERCHANTS)  # a 101st merchant: the least recently used (1) goes
    assert not first_use(0)
    assert first_use(1)  # forgotten: new again
    assert len(state.merchants) == MAX_MERCHANTS
    copy = CardState.from_json(state.to_json())  # the order of use survives a round trip
    assert list(copy.merchants) == list(state.merchants)


def test_a_state_saved_before_the_caps_is_cut_to_them():
    data = CardState().to_dict()
    n = MAX_RECENT + 50
    data.update(
        n=n,
        ts=[float(i) for i in range(n)],
        amts=[1.0] * n,
        newms=[0] * n,
        nights=[0] * n,
        bigs=[0] * n,
        merchants=list(range(MAX_MERCHANTS + 30)),  # sorted by code, as saved before
    )
    state = CardState.from_dict(data)
    assert state.ts == [float(i) for i in range(50, n)] and len(state.bigs) == MAX_RECENT
    assert len(state.merchants) == MAX_MERCHANTS


def test_in_memory_store_forgets_the_least_recently_used_card(monkeypatch):
    monkeypatch.setenv("HISTORY_MAX_CARDS", "2")
    monkeypatch.setenv("HISTORY_MAX_IDS", "3")
    store = InMemoryHistoryStore.from_settings()
    t = datetime(2020, 7, 1).timestamp()

    def apply(tx_id: str, card: str, minutes: float) -> tuple:
        (features,) = store.apply([tx_id], [(card, t + minutes * 60, 10.0, 0, 1, 12)])
        return features

    apply("a1", "A", 0)
    apply("b1", "B", 1)
    apply("a2", "A", 2)  # A used after B
    apply("c1", "C", 3)  # a third card: B, the least recently used, goes
    assert list(store.states) == ["A", "C"]
    assert apply("b2", "B", 4)[0] == 0.0  # B starts afresh; A goes now (C was used later)
    assert list(store.states) == ["C", "B"]
    assert len(store._seen) == 3 and "a1" not in store._seen
