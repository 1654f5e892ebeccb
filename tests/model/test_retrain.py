"""fraudstream retrain: data-quality checks refuse a bad run (exit 3, report naming what failed,
nothing trained); a good run saves a candidate that is not the champion unless --promote."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import bentoml
import pandas as pd
import pytest

from fraudstream.cli import main
from fraudstream.promotion import champion_path, read_champion

pytestmark = pytest.mark.unit

FAST = ["--iterations", "40", "--min-rows", "500"]


@pytest.fixture
def no_champion(bentoml_home: Path) -> Iterator[Path]:
    path = champion_path()
    path.unlink(missing_ok=True)
    yield path
    path.unlink(missing_ok=True)


def versions() -> set[str]:
    return {str(m.tag) for m in bentoml.models.list() if m.tag.name == "fraud-model"}


def retrain(capsys, *args: str) -> tuple[int, str]:
    code = main(["retrain", *args])
    return code, capsys.readouterr().out


def test_bad_data_is_refused_with_a_report(bentoml_home, model_data, tmp_path, capsys):
    train = pd.read_csv(model_data["train"], dtype=str, keep_default_na=False)
    no_fraud = tmp_path / "no_fraud.csv"
    train.assign(target="0").to_csv(no_fraud, index=False)
    holes = tmp_path / "holes.csv"
    train.assign(amount=train["amount"].where(train.index % 20 != 0, "")).to_csv(holes, index=False)
    no_amount = tmp_path / "no_amount.csv"
    train.drop(columns=["amount"]).to_csv(no_amount, index=False)
    before = versions()

    # no frauds in the training window; evaluation on the very rows trained on
    code, out = retrain(capsys, "--data", str(no_fraud), "--eval-data", str(model_data["train"]))
    assert code == 3
    failed = {line.split()[1] + " " + line.split()[2] for line in out.splitlines()
              if line.startswith("FAIL")}  # fmt: skip
    assert failed == {"train rows", "train label_rate", "train/eval window_overlap"}
    assert "refused: data-quality check(s) failed" in out

    # 5 % of the rows lack an amount; the evaluation file lacks the column
    code, out = retrain(capsys, "--data", str(holes), "--eval-data", str(no_amount), "--json")
    result = json.loads(out)
    assert code == 3
    assert {(c["subject"], c["name"]) for c in result["checks"] if not c["passed"]} == {
        ("train", "missing_values"),
        ("eval", "schema"),
    }
    assert "amount" in next(c["detail"] for c in result["checks"] if c["name"] == "schema"
                            and c["subject"] == "eval")  # fmt: skip
    assert versions() == before  # nothing trained


def test_candidate_is_saved_and_gated_not_promoted_by_itself(
    bentoml_home, model_data, no_champion, capsys
):
    window = ["--since", "2019-02-01", "--until", "2019-07-01"]
    data = ["--data", str(model_data["train"]), "--eval-data", str(model_data["test"])]
    before = versions()
    # a gate no model passes: the candidate is saved, refused, and not the champion
    code, out = retrain(capsys, *data, *window, *FAST, "--promote", "--min-recall", "1.01",
                        "--json")  # fmt: skip
    decision = json.loads(out)
    assert code == 1 and not decision["promoted"], decision
    tag = decision["candidate"]
    assert versions() == before | {tag}
    assert any("recall" in reason for reason in decision["reasons"])
    assert not no_champion.exists()
    meta = bentoml.models.get(tag).info.metadata
    assert meta["train_period"][0] >= "2019-02-01"
    assert meta["retrain"]["window"] == ["2019-02-01", "2019-07-01"]

    # promoted later by hand with a gate it passes (40 trees are few: a relaxed floor)
    args = ["promote", tag, "--data", str(model_data["test"]), "--min-recall", "0.5"]
    assert main(args) == 0
    assert f"promoted {tag}" in capsys.readouterr().out
    assert read_champion()["tag"] == tag
