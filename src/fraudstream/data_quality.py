"""Data-quality checks run before a retrain (``fraudstream retrain``).

Each check returns a :class:`Check` (name, passed, detail); a run is refused when any fails.
What is checked, with the defaults of :class:`QualityBounds`:

* ``schema``: every file reads as transactions (TETA or Kaggle columns, a label column);
* ``missing_values``: rows rejected by the loader (a missing or invalid value) are at most
  ``max_bad_row_share`` of the rows read, and no value is missing in the rows kept;
* ``rows`` / ``label_rate``: enough rows and frauds, fraud share within
  ``[min_label_rate, max_label_rate]`` (a broken labelling job gives 0 % or a flood);
* ``window_overlap``: the training window ends before the evaluation window starts (a model
  must never be judged on rows it was trained on).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class QualityBounds:
    max_bad_row_share: float = 0.01
    min_rows: int = 1000
    min_frauds: int = 20
    min_label_rate: float = 0.0005
    max_label_rate: float = 0.2


@dataclass(frozen=True)
class Check:
    name: str  # schema | missing_values | rows | label_rate | window_overlap
    subject: str  # "train" | "eval" | "train/eval"
    passed: bool
    detail: str


@dataclass
class LabelledData:
    """The rows of one window (train or eval) and what loading them found."""

    frame: pd.DataFrame | None
    files: list[str]
    rows_read: int
    bad_rows: int
    checks: list[Check]


def _window(frame: pd.DataFrame, since: str | None, until: str | None) -> pd.DataFrame:
    """Rows with since <= transaction_time < until (ISO dates/times; None = open)."""
    import pandas as pd

    times = frame["transaction_time"]
    keep = pd.Series(True, index=frame.index)
    if since:
        keep &= times >= pd.Timestamp(since)
    if until:
        keep &= times < pd.Timestamp(until)
    return frame.loc[keep]


def load_window(
    subject: str,
    paths: list[str | Path],
    since: str | None = None,
    until: str | None = None,
    bounds: QualityBounds | None = None,
) -> LabelledData:
    """Load labelled files, keep the window, and run the per-window checks."""
    import pandas as pd

    from fraudstream.loader import DataError, load_csv

    bounds = bounds or QualityBounds()
    checks: list[Check] = []
    frames = []
    rows_read = bad_rows = 0
    schema_errors = []
    for path in paths:
        try:
            result = load_csv(path, require_target=True)
        except DataError as err:
            schema_errors.append(str(err))
            continue
        frames.append(result.frame)
        rows_read += result.rows_read
        bad_rows += len({e.line for e in result.errors})
    if schema_errors or not paths:
        detail = "; ".join(schema_errors) or "no files given"
        checks.append(Check("schema", subject, False, detail))
        return LabelledData(None, [str(p) for p in paths], rows_read, bad_rows, checks)
    checks.append(Check("schema", subject, True, f"{len(paths)} file(s) read"))

    bad_share = bad_rows / rows_read if rows_read else 0.0
    frame = pd.concat(frames, ignore_index=True)
    null_cells = int(frame.drop(columns=["transaction_id"], errors="ignore").isna().sum().sum())
    checks.append(
        Check(
            "missing_values",
            subject,
            bad_share <= bounds.max_bad_row_share and null_cells == 0,
            f"{bad_rows} of {rows_read} rows rejected ({bad_share:.2%}, at most "
            f"{bounds.max_bad_row_share:.2%} allowed); {null_cells} missing values kept",
        )
    )
    frame = _window(frame, since, until)
    frame = frame.sort_values("transaction_time", kind="stable").reset_index(drop=True)
    n, n_fraud = len(frame), int(frame["target"].sum())
    window = f"[{since or '-inf'}, {until or '+inf'})"
    checks.append(
        Check(
            "rows",
            subject,
            n >= bounds.min_rows and n_fraud >= bounds.min_frauds,
            f"{n} rows, {n_fraud} frauds in {window} (at least {bounds.min_rows} rows and "
            f"{bounds.min_frauds} frauds needed)",
        )
    )
    rate = n_fraud / n if n else 0.0
    checks.append(
        Check(
            "label_rate",
            subject,
            bounds.min_label_rate <= rate <= bounds.max_label_rate,
            f"fraud share {rate:.4%} (allowed {bounds.min_label_rate:.4%} .. "
            f"{bounds.max_label_rate:.2%})",
        )
    )
    return LabelledData(frame, [str(p) for p in paths], rows_read, bad_rows, checks)


def overlap_check(train: pd.DataFrame, evaluation: pd.DataFrame) -> Check:
    """The training window must end strictly before the evaluation window starts."""
    if train.empty or evaluation.empty:
        return Check("window_overlap", "train/eval", False, "an empty window")
    train_end = train["transaction_time"].max()
    eval_start = evaluation["transaction_time"].min()
    return Check(
        "window_overlap",
        "train/eval",
        bool(train_end < eval_start),
        f"training ends {train_end}, evaluation starts {eval_start}",
    )


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.passed]


def report(checks: list[Check]) -> str:
    """One line per check: PASS/FAIL, subject, name, detail."""
    return "\n".join(
        f"{'PASS' if c.passed else 'FAIL'}  {c.subject:<10} {c.name:<15} {c.detail}" for c in checks
    )


def as_json(checks: list[Check]) -> list[dict[str, Any]]:
    return [asdict(c) for c in checks]
