"""The CSV loader: both shapes, bad rows reported and skipped, bad files rejected in one line."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from fraudstream.cli import main
from fraudstream.loader import KAGGLE_NAMES, DataError, load_csv, to_transactions
from fraudstream.schema import PERSONAL_FIELDS
from fraudstream.simulator import simulate, write_csv

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return simulate(20, date(2020, 3, 1), date(2020, 3, 10), seed=5)


@pytest.fixture
def teta_csv(sample: pd.DataFrame, tmp_path):
    path = tmp_path / "teta.csv"
    write_csv(sample, str(path))
    return path


def kaggle_shape(frame: pd.DataFrame) -> pd.DataFrame:
    """The same rows in the Kaggle column layout, with its extra columns."""
    out = frame.rename(columns=KAGGLE_NAMES)
    out.insert(0, "Unnamed: 0", range(len(out)))
    out.insert(1, "cc_num", 4_000_000_000_000_000 + out.index)
    out["dob"] = "1980-05-17"
    out["trans_num"] = [f"t{i:06d}" for i in range(len(out))]
    out["unix_time"] = 1_371_816_865
    return out


def test_teta_shape_loads_every_row_typed(sample, teta_csv):
    result = load_csv(teta_csv)
    assert result.shape == "teta"
    assert result.errors == []
    assert len(result.frame) == len(sample)
    assert result.frame["amount"].sum() == pytest.approx(sample["amount"].sum())
    assert (result.frame["transaction_time"].to_numpy() == sample["transaction_time"]).all()
    # every loaded row satisfies the shared Transaction contract
    transactions = to_transactions(result.frame.head(50))
    assert transactions[0].cat_id == sample["cat_id"].iloc[0]


def test_kaggle_shape_maps_to_the_same_transactions(sample, teta_csv, tmp_path):
    path = tmp_path / "fraudTest.csv"
    kaggle_shape(sample).to_csv(path, index=False)
    kaggle = load_csv(path, require_target=True)
    teta = load_csv(teta_csv)
    assert kaggle.shape == "kaggle"
    assert kaggle.errors == []
    assert list(kaggle.frame["transaction_id"].head(2)) == ["t000000", "t000001"]
    common = [c for c in teta.frame.columns]
    pd.testing.assert_frame_equal(kaggle.frame[common], teta.frame[common])
    assert "cc_num" not in kaggle.frame.columns and "dob" not in kaggle.frame.columns


BAD_VALUES = [
    ("amount", "", "missing value"),
    ("amount", "12,5x", "not a number"),
    ("amount", "-3.50", "must be positive"),
    ("amount", "0", "must be positive"),
    ("cat_id", "groceries", "unknown category"),
    ("transaction_time", "31/02/2020 10:00", "unparsable time"),
    ("lat", "91.5", "out of range"),
    ("merchant_lon", "-200", "out of range"),
    ("name_1", "", "missing value"),
    ("street", "x" * 300, "longer than 200"),
    ("gender", "X", "F or M"),
]


@pytest.mark.parametrize(("column", "value", "reason"), BAD_VALUES)
def test_bad_row_is_reported_with_line_and_column_and_skipped(
    sample, tmp_path, column, value, reason
):
    frame = sample.astype({column: object}).copy()
    frame.loc[3, column] = value  # data row 4 = line 5 of the file
    path = tmp_path / "bad.csv"
    write_csv(frame, str(path))
    result = load_csv(path)
    assert len(result.frame) == len(sample) - 1
    assert [(e.line, e.column) for e in result.errors] == [(5, column)]
    assert reason in result.errors[0].reason
    if column in PERSONAL_FIELDS and value:
        assert value not in str(result.errors[0])  # personal data is never echoed


def test_kaggle_errors_name_the_kaggle_column(sample, tmp_path):
    frame = kaggle_shape(sample).astype({"amt": object})
    frame.loc[0, "amt"] = "abc"
    path = tmp_path / "k.csv"
    frame.to_csv(path, index=False)
    result = load_csv(path)
    assert [(e.line, e.column) for e in result.errors] == [(2, "amt")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("transaction_time,merch,cat_id,amount\n", "missing"),
        (None, "only a header"),
        ("semicolon", "wrong delimiter"),
        ("a,b,c\n1,2,3\n", "wrong columns"),
    ],
)
def test_unreadable_file_fails_with_one_line_and_nonzero_exit(
    sample, tmp_path, capsys, content, message
):
    path = tmp_path / "input.csv"
    if content is None:  # a correct header and nothing else
        path.write_text(",".join(sample.columns) + "\n")
    elif content == "semicolon":
        sample.head(5).to_csv(path, index=False, sep=";")
    else:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_csv(path)
    for command in ("train", "evaluate"):
        assert main([command, "--data", str(path)]) != 0
        out = capsys.readouterr().out.strip()
        assert len(out.splitlines()) == 1
        assert message in out and str(path) in out


def test_evaluation_needs_labels(sample, tmp_path):
    path = tmp_path / "unlabelled.csv"
    write_csv(sample.drop(columns=["target"]), str(path))
    assert len(load_csv(path).frame) == len(sample)
    with pytest.raises(DataError, match="label"):
        load_csv(path, require_target=True)
