"""Train + evaluate end to end on simulated data: the stored model meets the business floor."""

from __future__ import annotations

import json

import bentoml
import numpy as np
import pytest

from fraudstream import __version__
from fraudstream.cli import main
from fraudstream.loader import KAGGLE_NAMES, load_csv
from fraudstream.training import choose_threshold

pytestmark = pytest.mark.unit

FLOOR_RECALL = 0.98
FLOOR_FPR = 0.05


def evaluate_json(capsys, *args: str) -> dict:
    assert main(["evaluate", *args, "--json"]) == 0
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1
    return json.loads(out)


def test_model_in_the_store_carries_what_the_scorer_needs(trained_model, model_data):
    ref = bentoml.models.get(trained_model)
    meta = ref.info.metadata
    assert 0 < meta["threshold"] < 1
    assert meta["history_features"] is True
    assert "h_n_24h" in meta["feature_names"] and "amount" in meta["feature_names"]
    assert set(meta["categorical_features"]) <= set(meta["feature_names"])
    assert meta["fraudstream_version"] == __version__
    assert meta["data_fingerprint"].startswith("sha256:")
    assert meta["metrics"]["recall"] >= FLOOR_RECALL
    # validation is the later part of the training period
    assert meta["valid_period"][0] >= meta["train_period"][1]


def test_unseen_later_period_meets_the_business_floor(trained_model, model_data, capsys):
    result = evaluate_json(
        capsys,
        "--data",
        str(model_data["test"]),
        "--history",
        str(model_data["train"]),
        "--model",
        trained_model,
    )
    test_rows = load_csv(model_data["test"]).frame
    assert result["n"] == len(test_rows)
    assert result["n_fraud"] == int(test_rows["target"].sum()) > 50
    assert result["recall"] >= FLOOR_RECALL
    assert result["fpr"] <= FLOOR_FPR
    assert result["pr_auc"] > 0.8
    for key in ("roc_auc", "threshold", "precision", "f1"):
        assert key in result


def test_evaluate_reads_the_kaggle_shape_and_draws_curves(
    trained_model, model_data, tmp_path, capsys
):
    frame = load_csv(model_data["test"]).frame
    kaggle = frame.rename(columns=KAGGLE_NAMES)
    kaggle["cc_num"] = 1234
    path = tmp_path / "fraudTest.csv"
    kaggle.to_csv(path, index=True)  # the Kaggle files start with an unnamed index column
    teta = evaluate_json(capsys, "--data", str(model_data["test"]), "--model", trained_model)
    assert evaluate_json(capsys, "--data", str(path), "--model", trained_model) == teta
    plots = tmp_path / "plots"
    assert (
        main(["evaluate", "--data", str(path), "--model", trained_model, "--plots-dir", str(plots)])
        == 0
    )
    out = capsys.readouterr().out
    assert "confusion matrix" in out and "recall" in out
    assert (plots / "pr_curve.png").stat().st_size > 1000
    assert (plots / "roc_curve.png").stat().st_size > 1000


def test_training_without_history_features(bentoml_home, model_data, capsys):
    args = ["train", "--data", str(model_data["train"]), "--no-history-features"]
    assert main([*args, "--iterations", "60", "--json"]) == 0
    saved = json.loads(capsys.readouterr().out)
    assert saved["history_features"] is False
    assert not any(name.startswith("h_") for name in saved["feature_names"])
    result = evaluate_json(capsys, "--data", str(model_data["test"]), "--model", saved["tag"])
    assert result["history_features"] is False and result["recall"] > 0.9


def test_threshold_is_the_highest_that_reaches_the_target_recall():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(200), np.zeros(2000)]
    scores = np.r_[rng.uniform(0.3, 1, 200), rng.uniform(0, 0.6, 2000)]
    t = choose_threshold(y, scores, 0.98)
    caught = scores[y == 1] >= t
    assert caught.mean() >= 0.98
    assert (scores[y == 1] >= np.nextafter(t, 1)).mean() < 0.98
