"""fraudstream promote: the gate refuses a worse candidate and accepts a better one; the
champion is the tag in $BENTOML_HOME/champion.json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import bentoml
import pandas as pd
import pytest

from fraudstream.cli import main
from fraudstream.loader import load_csv
from fraudstream.promotion import champion_path, gate, read_champion
from fraudstream.training import TrainConfig, fit, save

pytestmark = pytest.mark.unit


@pytest.fixture
def no_champion(bentoml_home: Path) -> Iterator[Path]:
    path = champion_path()
    path.unlink(missing_ok=True)
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def strict_model(trained_model: str) -> str:
    """The trained model with a threshold so high that it misses most frauds."""
    ref = bentoml.models.get(trained_model)
    metadata = {**ref.info.metadata, "threshold": 0.999}
    return save(bentoml.catboost.load_model(ref), metadata)


@pytest.fixture(scope="module")
def loose_model(trained_model: str) -> str:
    """The trained model with a threshold so low that it flags many legitimate ones."""
    ref = bentoml.models.get(trained_model)
    metadata = {**ref.info.metadata, "threshold": 0.002}
    return save(bentoml.catboost.load_model(ref), metadata)


@pytest.fixture(scope="module")
def shuffled_model(bentoml_home: Path, model_data: dict[str, Path]) -> str:
    """A model trained on shuffled labels: to reach its recall target it flags nearly all."""
    frame = load_csv(model_data["train"]).frame
    frame["target"] = frame["target"].sample(frac=1, random_state=3).to_numpy()
    model, metadata = fit(frame, TrainConfig(iterations=40, early_stopping=20))
    return save(model, metadata)


@pytest.fixture(scope="module")
def recent_history(model_data: dict[str, Path], tmp_path_factory) -> Path:
    """The last weeks of the training file: enough to warm up the 7-day history features."""
    frame = pd.read_csv(model_data["train"], dtype=str, keep_default_na=False)
    path = tmp_path_factory.mktemp("history") / "june.csv"
    frame[frame["transaction_time"] >= "2019-06-15"].to_csv(path, index=False)
    return path


def promote(capsys, candidate: str, model_data: dict[str, Path], *extra: str) -> tuple[int, dict]:
    code = main(
        [
            "promote",
            candidate,
            "--data",
            str(model_data["test"]),
            "--history",
            str(model_data["history"]),
            "--json",
            *extra,
        ]
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with capsys.disabled():  # the figures, visible with `pytest -s`
        for tag, m in out["figures"].items():
            role = "candidate" if tag == candidate else "champion"
            figures = "  ".join(f"{k} {m[k]:.4f}" for k in ("recall", "fpr", "pr_auc"))
            print(f"\n{role:<9} {tag}: {figures}", end="")
        print(f"\n-> exit {code}, {out['reasons'] or 'promoted'}")
    return code, out


def test_gate_figures():
    champion = {"recall": 0.985, "fpr": 0.010}
    assert gate({"recall": 0.99, "fpr": 0.014}, champion) == []
    assert gate({"recall": 0.99, "fpr": 0.012}, champion, max_fpr_increase=0.001) == [
        "candidate FPR 0.0120 > champion FPR 0.0100 + 0.0010"
    ]
    assert gate({"recall": 0.97, "fpr": 0.0}, None) == ["candidate recall 0.9700 < 0.9800"]
    assert gate({"recall": float("nan"), "fpr": 0.0}, None)  # no frauds: refused


def test_promote_refuses_worse_and_accepts_better(
    trained_model,
    strict_model,
    loose_model,
    shuffled_model,
    model_data,
    recent_history,
    no_champion,
    capsys,
):
    model_data = {**model_data, "history": recent_history}
    # 1. a threshold that misses recall is refused, even with no champion to compare with
    code, out = promote(capsys, strict_model, model_data)
    assert code == 1 and not out["promoted"] and out["champion"] is None
    assert out["figures"][strict_model]["recall"] < 0.98
    assert any("recall" in r for r in out["reasons"])
    assert not no_champion.exists()

    # 2. a bad model made champion by force (as a rollback would): the file names it
    code, out = promote(capsys, shuffled_model, model_data, "--force")
    # (with no champion only the recall floor applies, which a model flagging nearly all can pass)
    assert code == 0 and out["promoted"]
    assert read_champion()["tag"] == shuffled_model

    # 3. the good model beats it: compared with the champion from the file, promoted
    code, out = promote(capsys, trained_model, model_data)
    assert code == 0 and out["promoted"] and out["champion"] == shuffled_model
    good, bad = out["figures"][trained_model], out["figures"][shuffled_model]
    assert good["recall"] >= 0.98 and good["fpr"] < bad["fpr"] - 0.005
    record = read_champion()
    assert record["tag"] == trained_model and record["previous"] == shuffled_model

    # 4. the shuffled model is refused against it: its FPR is far worse
    code, out = promote(capsys, shuffled_model, model_data)
    assert code == 1 and out["champion"] == trained_model
    assert any("FPR" in r for r in out["reasons"])
    assert read_champion()["tag"] == trained_model

    # 5. full recall bought with many more false positives: refused by the FPR margin alone
    code, out = promote(capsys, loose_model, model_data)
    assert code == 1 and out["figures"][loose_model]["recall"] >= 0.98
    assert len(out["reasons"]) == 1 and out["reasons"][0].startswith("candidate FPR")
    assert read_champion()["tag"] == trained_model

    # the text report prints both models' figures and why
    assert main(["promote", shuffled_model, "--data", str(model_data["test"])]) == 1
    text = capsys.readouterr().out
    assert "(candidate)" in text and "(champion)" in text and "pr_auc" in text
    assert "refused: candidate FPR" in text


def test_promote_refuses_evaluation_on_training_rows(
    trained_model, model_data, recent_history, no_champion, capsys
):
    on_train = {"test": model_data["train"], "history": recent_history}
    code, out = promote(capsys, trained_model, on_train)
    assert code == 1
    assert any("before the candidate's training data ends" in r for r in out["reasons"])


def test_promote_unknown_tag(model_data, no_champion, capsys):
    args = ["promote", "fraud-model:nosuchversion", "--data", str(model_data["test"])]
    assert main(args) == 2
    assert "error:" in capsys.readouterr().out
