"""The simulator: deterministic per seed, TETA shape, and fraud that comes in episodes."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from fraudstream.cli import main
from fraudstream.loader import load_csv
from fraudstream.schema import CATEGORIES
from fraudstream.simulator import (
    AMOUNTS,
    FRAUD_HIGH,
    FRAUD_TINY,
    FRAUD_TINY_AMOUNT,
    MERCHANTS_PER_CATEGORY,
    TETA_COLUMNS,
    simulate,
)

pytestmark = pytest.mark.unit

HOLDER = ["name_1", "name_2", "street"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return simulate(150, date(2019, 1, 1), date(2019, 6, 30), seed=21, episodes_per_year=1.5)


def test_same_seed_same_file_other_seed_other_file(tmp_path):
    paths = [tmp_path / f"{i}.csv" for i in range(3)]
    for path, seed in zip(paths, (4, 4, 5), strict=True):
        args = ["generate", "--customers", "30", "--start", "2019-03-01", "--end", "2019-03-20"]
        assert main([*args, "--seed", str(seed), "-o", str(path)]) == 0
    first, again, other = (p.read_bytes() for p in paths)
    assert first == again
    assert first != other


def test_output_is_the_teta_shape_with_labels_and_loads_cleanly(frame, tmp_path):
    assert tuple(frame.columns) == TETA_COLUMNS
    path = tmp_path / "sim.csv"
    frame.to_csv(path, index=False)
    result = load_csv(path, require_target=True)
    assert result.errors == []
    assert len(result.frame) == len(frame)
    assert set(frame["cat_id"]) == set(CATEGORIES)
    assert frame["merch"].str.startswith("fraud_").all()
    assert frame["transaction_time"].is_monotonic_increasing
    assert frame.groupby(HOLDER).ngroups == 150
    assert 0.002 < frame["target"].mean() < 0.05


def test_weekly_and_seasonal_patterns(frame):
    legit = frame[frame["target"] == 0]
    per_day = legit.groupby(legit["transaction_time"].dt.date).size()
    days = pd.to_datetime(per_day.index)
    weekend = per_day[days.day_of_week >= 5].mean()
    monday = per_day[days.day_of_week == 0].mean()
    assert weekend > 1.6 * monday
    summer = per_day[days.month == 6].mean()
    winter = per_day[days.month.isin([1, 2])].mean()
    assert summer > 1.3 * winter


def test_fraud_comes_in_short_bursts_on_compromised_cards(frame):
    fraud = frame[frame["target"] == 1]
    spans = fraud.groupby(HOLDER)["transaction_time"].agg(["min", "max", "size"])
    # most compromised cards show one burst of about a day (a few have two episodes)
    one_day = (spans["max"] - spans["min"]) <= pd.Timedelta(days=2)
    assert one_day.mean() > 0.6
    assert (spans["size"] >= 2).all()
    per_day = spans.loc[one_day, "size"]
    assert per_day.max() <= 2 * 16 and per_day.median() >= 4
    # only a minority of holders is affected, and they keep spending normally too
    holders = frame.groupby(HOLDER).size()
    assert len(spans) < len(holders)
    legit_during = frame[frame["target"] == 0].set_index(HOLDER).index.isin(spans.index)
    assert legit_during.sum() > 0


def test_fraud_differs_from_the_holders_own_pattern(frame):
    fraud = frame["target"] == 1
    hour = frame["transaction_time"].dt.hour
    night = (hour >= 22) | (hour < 4)
    assert night[fraud].mean() > 0.6
    # legitimate spending is uniform within the morning or the afternoon/evening, so a fifth
    # of it falls at night too (as in the public data)
    assert 0.15 < night[~fraud].mean() < 0.3
    # high amounts in the high-amount categories, tiny ones in the card-testing ones
    high = frame["cat_id"].isin(list(FRAUD_HIGH)) & fraud
    assert frame.loc[high, "amount"].median() > 4 * frame.loc[~fraud, "amount"].median()
    tiny = fraud & ~frame["cat_id"].isin(list(FRAUD_HIGH))
    assert frame.loc[tiny, "amount"].between(*FRAUD_TINY_AMOUNT).all()
    # no travel far from home
    far = (frame["merchant_lat"] - frame["lat"]).abs() > 1.01
    assert far[~fraud].mean() > 0.05
    assert not far[fraud].any()


def test_fraud_comes_in_per_card_episodes_of_a_day_or_so(frame):
    fraud = frame[frame["target"] == 1].sort_values("transaction_time", kind="stable")
    gaps = fraud.groupby(HOLDER)["transaction_time"].diff().dropna()
    # within an episode the frauds of a card are hours apart; episodes are weeks apart
    assert (gaps <= pd.Timedelta(days=2)).mean() > 0.9
    per_card_day = fraud.groupby([*HOLDER, fraud["transaction_time"].dt.date]).size()
    assert per_card_day.median() >= 3 and per_card_day.max() <= 2 * 16


def test_legit_hours_are_uniform_within_morning_and_evening(frame):
    legit = frame[frame["target"] == 0]
    share = legit["transaction_time"].dt.hour.value_counts(normalize=True).sort_index()
    assert len(share) == 24
    am, pm = share[share.index < 12], share[share.index >= 12]
    assert am.max() < 1.3 * am.min() and pm.max() < 1.3 * pm.min()
    assert pm.sum() > am.sum()  # mostly PM (20-50 % AM)
    assert 0.2 < am.sum() < 0.5


def test_amounts_per_category_keep_their_mean_spread_and_skew(frame):
    legit = frame[frame["target"] == 0]
    by_cat = legit.groupby("cat_id")["amount"]
    for cat, (mean, sd) in AMOUNTS.items():
        amounts = by_cat.get_group(cat)
        assert amounts.min() >= 1.0
        # the holders' own scale (lognormal, sd 0.25) moves the mean a little
        assert 0.75 * mean < amounts.mean() < 1.35 * mean, cat
        if sd >= 1.5 * mean:  # long tails: most amounts are small, a few are very large
            assert amounts.median() < mean / 2, cat
            assert amounts.quantile(0.99) > 3 * mean, cat
        else:  # e.g. gas_transport 70 +- 15: around the mean
            assert 0.5 * mean < amounts.median() < 1.2 * mean, cat
    fraud = frame[frame["target"] == 1]
    for cat, (mean, sd) in FRAUD_HIGH.items():
        amounts = fraud.loc[fraud["cat_id"] == cat, "amount"]
        assert len(amounts) > 10
        assert amounts.between(mean - 6 * sd, mean + 6 * sd).all(), cat
        assert abs(amounts.mean() - mean) < sd, cat
    assert set(fraud.loc[~fraud["cat_id"].isin(list(FRAUD_HIGH)), "cat_id"]) <= set(FRAUD_TINY)


def test_merchants_are_drawn_from_the_whole_category(frame):
    # about 700 merchants; a holder picks any of the category's, so most transactions are at a
    # merchant new to the holder (legit and fraud alike, as in the public data)
    assert frame["merch"].nunique() > 0.9 * MERCHANTS_PER_CATEGORY * len(set(frame["cat_id"]))
    first = ~frame.duplicated([*HOLDER, "merch"])
    assert first.mean() > 0.5
    assert frame.groupby("cat_id")["merch"].nunique().max() <= MERCHANTS_PER_CATEGORY


def test_the_holders_own_spending_pauses_on_the_days_of_an_episode(frame):
    day = frame["transaction_time"].dt.date
    by_card_day = frame.groupby([*HOLDER, day])["target"]
    fraud_days = by_card_day.max() == 1
    assert fraud_days.sum() > 20
    assert (by_card_day.min()[fraud_days] == 1).all()


def test_some_cards_are_seen_only_through_their_fraud(frame):
    # holders with a rate of 0 transactions a day: their card shows up only when compromised
    legit_cards = frame[frame["target"] == 0].groupby(HOLDER).ngroups
    cards = frame.groupby(HOLDER).ngroups
    assert 0 < cards - legit_cards < 0.25 * cards
