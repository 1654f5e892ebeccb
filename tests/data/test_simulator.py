"""The simulator: deterministic per seed, TETA shape, and fraud that comes in episodes."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from fraudstream.cli import main
from fraudstream.loader import load_csv
from fraudstream.schema import CATEGORIES
from fraudstream.simulator import FRAUD_HIGH, TETA_COLUMNS, simulate

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
    assert night[~fraud].mean() < 0.15
    # high amounts in the high-amount categories, tiny ones in the card-testing ones
    high = frame["cat_id"].isin(list(FRAUD_HIGH)) & fraud
    assert frame.loc[high, "amount"].median() > 4 * frame.loc[~fraud, "amount"].median()
    tiny = fraud & ~frame["cat_id"].isin(list(FRAUD_HIGH))
    assert frame.loc[tiny, "amount"].max() <= 20
    # merchants the holder has not used before, and no travel far from home
    seen: dict[tuple, set] = {}
    new_merchant = []
    for key, merch, is_fraud in zip(
        frame[HOLDER].itertuples(index=False, name=None), frame["merch"], fraud, strict=True
    ):
        known = seen.setdefault(key, set())
        new_merchant.append((merch not in known, is_fraud))
        known.add(merch)
    new = np.array(new_merchant)
    assert new[new[:, 1] == 1, 0].mean() > 2 * new[new[:, 1] == 0, 0].mean()
    far = (frame["merchant_lat"] - frame["lat"]).abs() > 1.01
    assert far[~fraud].mean() > 0.05
    assert not far[fraud].any()
