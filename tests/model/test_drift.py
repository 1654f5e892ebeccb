"""Drift (fraudstream.drift): the PSI function, reference bins, the sliding window, the reference
saved with the model, and a replay of unseen data: in distribution, amounts x3, a category mix
shifted."""

from __future__ import annotations

import copy
import math

import bentoml
import numpy as np
import pandas as pd
import pytest

from fraudstream import drift
from fraudstream.drift import DriftReference, DriftWindow, FeatureBins, psi
from fraudstream.features import STATELESS_FEATURES, CardState, build_features
from fraudstream.loader import load_csv

pytestmark = pytest.mark.unit


# --------------------------------------------------------------------------- the PSI function


def test_psi_of_identical_distributions_is_zero():
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0
    assert psi([2, 3, 5], [20, 30, 50]) == pytest.approx(0, abs=1e-12)  # counts are normalised


def test_psi_known_values():
    # (0.75 - 0.5) ln(0.75 / 0.5) + (0.25 - 0.5) ln(0.25 / 0.5) = 0.25 ln 3
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(3))
    # symmetric in its two sides
    assert psi([0.25, 0.75], [0.5, 0.5]) == pytest.approx(0.25 * math.log(3))
    # ten equal bins, half of one moved to another: 0.05 ln 1.5 + 0.05 ln 2
    assert psi([0.1] * 10, [0.15, 0.05] + [0.1] * 8) == pytest.approx(0.05 * math.log(3))


def test_psi_of_empty_bins_is_finite():
    # live traffic in a bin the reference never saw, and none in one it did
    value = psi([0.5, 0.5, 0.0], [0.0, 0.5, 0.5])
    eps = drift.EPSILON
    one_side = (0.5 - eps) * math.log(0.5 / eps)
    assert math.isfinite(value) and value == pytest.approx(2 * one_side)


def test_psi_refuses_mismatched_or_empty_sides():
    with pytest.raises(ValueError, match="bins differ"):
        psi([0.5, 0.5], [1.0])
    with pytest.raises(ValueError, match="observation"):
        psi([0.5, 0.5], [0, 0])


# --------------------------------------------------------------------------- bins and the window


def test_numeric_bins_are_deciles_with_a_missing_bin():
    values = np.concatenate([np.arange(1000, dtype=float), [np.nan] * 10])
    bins = FeatureBins.numeric("x", values)
    assert len(bins.edges) == 9 and bins.n_bins == 11
    assert bins.shares[:10] == pytest.approx([1000 / 1010 / 10] * 10)
    assert bins.shares[10] == pytest.approx(10 / 1010)
    codes = bins.codes(np.array([-5.0, 0.0, 99.0, 100.0, 999.0, 1e9, np.nan]))
    assert codes.tolist() == [0, 0, 0, 1, 9, 9, 10]


def test_a_flag_keeps_one_bin_per_value():
    # 95 % zeros: the deciles are all 0, yet 0 and 1 must fall in different bins
    values = np.array([0.0] * 95 + [1.0] * 5)
    bins = FeatureBins.numeric("flag", values)
    assert bins.edges == (1.0,)
    assert bins.shares == pytest.approx((0.95, 0.05, 0.0))


def test_categorical_bins_and_unseen_categories():
    bins = FeatureBins.categorical_of("cat", np.array(["a", "b", "a", "c"], dtype=object))
    assert bins.categories[0] == "a" and bins.shares[0] == 0.5
    assert bins.codes(np.array(["c", "zzz"], dtype=object)).tolist() == [2, 3]  # 3 = other


def test_reference_round_trips_through_metadata():
    rng = np.random.default_rng(0)
    columns = {"amount": rng.lognormal(4, 1, 500), "cat_id": rng.choice(["x", "y"], 500)}
    ref = drift.build_reference(columns, rng.random(500), ["amount", "cat_id"], ["cat_id"])
    assert ref.names == ["score", "amount", "cat_id"] and ref.rows == 500
    again = DriftReference.from_metadata({drift.REFERENCE_KEY: ref.to_metadata()})
    assert again == ref
    assert DriftReference.from_metadata({"threshold": 0.5}) is None  # an older model
    with pytest.raises(ValueError, match="malformed"):
        DriftReference.from_metadata({drift.REFERENCE_KEY: {"features": [{"name": "score"}]}})
    with pytest.raises(ValueError, match="shares"):
        broken = ref.to_metadata()
        broken["features"][0]["shares"] = [1.0]
        DriftReference.from_metadata({drift.REFERENCE_KEY: broken})


def test_the_window_keeps_only_the_last_transactions():
    ref = DriftReference(
        (
            FeatureBins("score", (0.5, 0.5, 0.0), edges=(0.5,)),
            FeatureBins("cat", (0.5, 0.5, 0.0), categories=("a", "b")),
        ),
        rows=2,
    )
    window = DriftWindow(ref, ["amount", "cat"], size=4)
    assert window.psi() == {}
    rows = np.array([[1.0, "a"], [1.0, "b"], [1.0, "a"]], dtype=object)
    window.add(rows, np.array([0.1, 0.9, 0.1]))
    assert len(window) == 3
    assert window.counts()["cat"].tolist() == [2, 1, 0]
    # 3 more wrap around the ring: the window now holds the last 4 (a, z, z, z)
    window.add(np.array([[1.0, "z"]] * 3, dtype=object), np.array([0.9, 0.9, 0.9]))
    assert len(window) == 4
    assert window.counts()["cat"].tolist() == [1, 0, 3]
    assert window.counts()["score"].tolist() == [1, 3, 0]
    # a batch larger than the window: its last 4 only
    window.add(np.array([[1.0, "a"]] * 10, dtype=object), np.full(10, 0.1))
    assert window.counts()["cat"].tolist() == [4, 0, 0]
    assert window.psi()["score"] == pytest.approx(psi([0.5, 0.5, 0], [1, 0, 0]))
    with pytest.raises(ValueError, match="lacks"):
        DriftWindow(ref, ["amount"], size=4)


# --------------------------------------------------------------------------- with the model


@pytest.fixture(scope="module")
def model_ref(trained_model: str) -> bentoml.Model:
    return bentoml.models.get(trained_model)


def test_the_model_carries_its_reference(model_ref):
    metadata = model_ref.info.metadata
    ref = DriftReference.from_metadata(metadata)
    assert ref is not None
    assert ref.names[0] == "score" and len(ref.names) == 1 + drift.DEFAULT_TOP_FEATURES
    assert set(ref.names[1:]) <= set(metadata["feature_names"])
    assert ref.rows == metadata["valid_rows"]
    for bins in ref.features:
        assert sum(bins.shares) == pytest.approx(1)
        # deciles of the validation period: no bin holds much more than its tenth
        if not bins.categorical and len(bins.edges) == drift.DEFAULT_BINS - 1:
            assert max(bins.shares) < 0.15, bins.name


@pytest.fixture(scope="module")
def replay(model_ref, model_data):
    """Replay the unseen test period (Jul-Aug) after the training one (whose history the cards
    carry, as a scorer with PostgreSQL history would), through a window of 10,000 transactions
    in time order; return its PSI per monitored value."""
    model = bentoml.catboost.load_model(model_ref)
    names = model_ref.info.metadata["feature_names"]
    ref = DriftReference.from_metadata(model_ref.info.metadata)
    warm: dict[str, CardState] = {}
    build_features(load_csv(model_data["train"]).frame, states=warm)
    test = load_csv(model_data["test"]).frame
    test = test.sort_values("transaction_time", kind="stable").reset_index(drop=True)

    def run(frame: pd.DataFrame) -> dict[str, float]:
        rows = build_features(frame, states=copy.deepcopy(warm))[names].to_numpy(dtype=object)
        scores = model.predict_proba(rows, thread_count=1)[:, 1]
        window = DriftWindow(ref, names, size=10_000)
        for start in range(0, len(rows), 500):  # the bridge's batches
            window.add(rows[start : start + 500], scores[start : start + 500])
        return window.psi()

    return test, run


def test_unseen_data_of_the_same_distribution_keeps_psi_below_0_1(replay):
    test, run = replay
    values = run(test)
    print("in distribution:", {k: round(v, 4) for k, v in values.items()})
    assert max(values.values()) < 0.1, values


def test_amounts_times_three_raise_psi_above_0_2(replay):
    test, run = replay
    values = run(test.assign(amount=test["amount"] * 3))
    print("amounts x3:", {k: round(v, 4) for k, v in values.items()})
    assert values["score"] > 0.2, values
    for name in ("amount", "log_amount"):
        if name in values:
            assert values[name] > 0.2, values
    for name in set(values) & set(STATELESS_FEATURES) - {"amount", "log_amount"}:
        assert values[name] < 0.1, (name, values)  # the rest stays put


def test_a_shifted_category_mix_raises_psi_above_0_2(replay):
    test, run = replay
    rng = np.random.default_rng(0)
    moved = rng.random(len(test)) < 0.3  # 30 % of transactions become online shopping
    values = run(test.assign(cat_id=test["cat_id"].where(~moved, "shopping_net")))
    print("category mix:", {k: round(v, 4) for k, v in values.items()})
    assert max(values.values()) > 0.2, values
    if "cat_id" in values:
        assert values["cat_id"] > 0.2, values
