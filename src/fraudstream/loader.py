"""Read a transactions CSV in either shape (TETA or Kaggle) into typed TETA columns.

Whole-file problems (nothing in it, a wrong delimiter, missing columns) raise :class:`DataError`
with one line that names the problem. Bad rows (missing value, non-numeric or non-positive amount,
unknown category, unparsable time, coordinates out of range, ...) are reported as
:class:`RowError` (file line number, column, reason) and skipped; good rows still load.
The checks are the constraints of :class:`fraudstream.schema.Transaction`, vectorised.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fraudstream.schema import (
    CATEGORIES,
    EARLIEST,
    LATEST,
    MAX_AMOUNT,
    PERSONAL_FIELDS,
    TETA_COLUMNS,
    TIME_FORMAT,
    Transaction,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

# TETA name -> Kaggle name
KAGGLE_NAMES: dict[str, str] = {
    "transaction_time": "trans_date_trans_time",
    "merch": "merchant",
    "cat_id": "category",
    "amount": "amt",
    "name_1": "first",
    "name_2": "last",
    "gender": "gender",
    "street": "street",
    "one_city": "city",
    "us_state": "state",
    "post_code": "zip",
    "lat": "lat",
    "lon": "long",
    "population_city": "city_pop",
    "jobs": "job",
    "merchant_lat": "merch_lat",
    "merchant_lon": "merch_long",
    "target": "is_fraud",
    "transaction_id": "trans_num",
}
REQUIRED: tuple[str, ...] = TETA_COLUMNS
OPTIONAL: tuple[str, ...] = ("target", "transaction_id")
TEXT_LIMITS: dict[str, int] = {
    "merch": 200,
    "name_1": 100,
    "name_2": 100,
    "street": 200,
    "one_city": 200,
    "jobs": 200,
    "transaction_id": 64,
}
RANGES: dict[str, tuple[float, float]] = {
    "lat": (-90, 90),
    "lon": (-180, 180),
    "merchant_lat": (-90, 90),
    "merchant_lon": (-180, 180),
}
MAX_SHOWN = 20


class DataError(Exception):
    """The file as a whole cannot be read as transactions."""


@dataclass(frozen=True)
class RowError:
    line: int  # line number in the file (the header is line 1)
    column: str  # column name as it appears in the file
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.reason}"


@dataclass
class LoadResult:
    frame: pd.DataFrame  # TETA columns, typed; only good rows
    errors: list[RowError] = field(default_factory=list)
    shape: str = "teta"  # "teta" or "kaggle"
    rows_read: int = 0

    @property
    def has_target(self) -> bool:
        return "target" in self.frame.columns


def read_header(path: Path) -> list[str]:
    """The column names of a CSV file; :class:`DataError` naming what is wrong with it."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            first = fh.readline()
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a text CSV file ({err.reason})") from err
    if not first.strip():
        raise DataError(f"{path}: the file is empty")
    header = next(csv.reader([first]))
    if len(header) == 1:
        for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
            if sep in first:
                raise DataError(
                    f"{path}: wrong delimiter: the header is separated by {name}, expected commas"
                )
    return [h.strip() for h in header]


def _shape(path: Path, header: list[str]) -> tuple[str, dict[str, str]]:
    """('teta' | 'kaggle', file column -> TETA column)."""
    present = set(header)
    teta_missing = [c for c in REQUIRED if c not in present]
    kaggle_missing = [KAGGLE_NAMES[c] for c in REQUIRED if KAGGLE_NAMES[c] not in present]
    if not teta_missing:
        return "teta", {c: c for c in (*REQUIRED, *OPTIONAL) if c in present}
    if not kaggle_missing:
        names = {KAGGLE_NAMES[c]: c for c in (*REQUIRED, *OPTIONAL) if KAGGLE_NAMES[c] in present}
        return "kaggle", names
    shape, missing = (
        ("TETA", teta_missing)
        if len(teta_missing) <= len(kaggle_missing)
        else ("Kaggle", kaggle_missing)
    )
    raise DataError(
        f"{path}: wrong columns: missing {', '.join(missing)} for the {shape} shape"
        f" (found: {', '.join(header[:25]) or 'none'})"
    )


def load_csv(path: str | Path, require_target: bool = False) -> LoadResult:
    """Load a CSV in either shape; raise :class:`DataError` for whole-file problems."""
    import numpy as np
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    header = read_header(path)
    shape, mapping = _shape(path, header)
    if require_target and "target" not in mapping.values():
        raise DataError(
            f"{path}: no label column ({'target' if shape == 'teta' else 'is_fraud'}) to evaluate"
        )
    try:
        raw = pd.read_csv(
            path,
            usecols=list(mapping),
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            encoding="utf-8-sig",
            skipinitialspace=True,
        )
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: cannot parse as CSV: {str(err).splitlines()[0]}") from err
    raw = raw.rename(columns=mapping)
    rows_read = len(raw)
    if rows_read == 0:
        raise DataError(f"{path}: no data rows (only a header)")
    file_name = {teta: name for name, teta in mapping.items()}
    lines = np.arange(rows_read) + 2
    bad = np.zeros(rows_read, dtype=bool)
    errors: list[tuple[int, str, str]] = []  # (row position, column, reason)

    def report(column: str, mask: np.ndarray, reason: str | None, values: pd.Series) -> None:
        nonlocal bad
        mask = np.asarray(mask) & ~empty[column]
        if mask.any():
            positions = np.flatnonzero(mask)
            personal = column in PERSONAL_FIELDS  # never echo personal data
            for pos in positions:
                shown = "" if personal else f" {values.iat[pos]!r}"
                errors.append((int(pos), column, f"{reason or ''}{shown}".strip()))
            bad |= mask

    out: dict[str, object] = {}
    empty: dict[str, np.ndarray] = {}
    for column in raw.columns:
        raw[column] = raw[column].str.strip()
        empty[column] = (raw[column] == "").to_numpy()
        if column != "transaction_id":
            for pos in np.flatnonzero(empty[column]):
                errors.append((int(pos), column, "missing value"))
            bad |= empty[column]

    # time
    text = raw["transaction_time"]
    times = pd.to_datetime(text, format=TIME_FORMAT, errors="coerce")
    retry = times.isna().to_numpy() & ~empty["transaction_time"]
    if retry.any():
        times[retry] = pd.to_datetime(text[retry], format="ISO8601", errors="coerce")
        if getattr(times.dt, "tz", None) is not None:
            times = times.dt.tz_localize(None)
    report("transaction_time", times.isna().to_numpy(), "unparsable time", text)
    out_of_range = ((times < EARLIEST) | (times >= LATEST)).to_numpy()
    report(
        "transaction_time",
        out_of_range,
        f"time outside {EARLIEST:%Y-%m-%d}..{LATEST:%Y-%m-%d}",
        text,
    )
    out["transaction_time"] = times.astype("datetime64[us]")

    # numbers
    def number(column: str) -> pd.Series:
        values = pd.to_numeric(raw[column], errors="coerce")
        report(
            column, (values.isna() | ~np.isfinite(values)).to_numpy(), "not a number", raw[column]
        )
        return values

    amount = number("amount")
    report("amount", (amount <= 0).to_numpy(), "amount must be positive, got", raw["amount"])
    report("amount", (amount > MAX_AMOUNT).to_numpy(), "amount too large", raw["amount"])
    out["amount"] = amount.astype(float)
    for column, (low, high) in RANGES.items():
        values = number(column)
        outside = ((values < low) | (values > high)).to_numpy()
        report(column, outside, f"out of range {low}..{high}", raw[column])
        out[column] = values.astype(float)
    for column, (low, high) in (("post_code", (0, 99999)), ("population_city", (0, 10**10))):
        values = number(column)
        invalid = ((values < low) | (values > high) | (values != np.floor(values))).to_numpy()
        report(column, invalid & values.notna().to_numpy(), "not a valid integer", raw[column])
        out[column] = values.fillna(0).astype(np.int64)

    # categories and codes
    cats = raw["cat_id"]
    report("cat_id", ~cats.isin(CATEGORIES).to_numpy(), "unknown category", cats)
    out["cat_id"] = cats
    gender = raw["gender"].str.upper()
    report("gender", ~gender.isin(("F", "M")).to_numpy(), "gender must be F or M, got", gender)
    out["gender"] = gender
    state = raw["us_state"]
    report(
        "us_state",
        ~state.str.fullmatch(r"[A-Z]{2}").fillna(False).to_numpy(dtype=bool),
        "not a 2-letter state code",
        state,
    )
    out["us_state"] = state
    for column, limit in TEXT_LIMITS.items():
        if column not in raw.columns:
            continue
        long = (raw[column].str.len() > limit).to_numpy()
        report(column, long, f"longer than {limit} characters", raw[column].str.slice(0, 20))
        out[column] = raw[column]
    if "target" in raw.columns:
        target = raw["target"]
        report("target", ~target.isin(("0", "1")).to_numpy(), "label must be 0 or 1, got", target)
        out["target"] = pd.to_numeric(target, errors="coerce").fillna(0).astype(np.int8)
    if "transaction_id" in raw.columns:
        out["transaction_id"] = raw["transaction_id"].where(~empty["transaction_id"], None)

    columns = [c for c in (*REQUIRED, *OPTIONAL) if c in out]
    frame = pd.DataFrame({c: out[c] for c in columns})
    frame = frame.loc[~bad].reset_index(drop=True)
    errors.sort()
    row_errors = [RowError(int(lines[p]), file_name.get(c, c), r) for p, c, r in errors]
    if frame.empty:
        raise DataError(f"{path}: no valid rows: all {rows_read} rejected (first: {row_errors[0]})")
    if row_errors:
        log.warning("%s: skipped %d of %d rows with errors", path, int(bad.sum()), rows_read)
    return LoadResult(frame=frame, errors=row_errors, shape=shape, rows_read=rows_read)


def report_errors(result: LoadResult, limit: int = MAX_SHOWN) -> str:
    """Human-readable lines about skipped rows (first ``limit`` of them)."""
    if not result.errors:
        return ""
    skipped = len({e.line for e in result.errors})
    lines = [f"skipped {skipped} of {result.rows_read} rows:"]
    lines += [f"  {e}" for e in result.errors[:limit]]
    if len(result.errors) > limit:
        lines.append(f"  ... and {len(result.errors) - limit} more")
    return "\n".join(lines)


def to_transactions(frame: pd.DataFrame) -> list[Transaction]:
    """``Transaction`` objects of a loaded frame (for replay and tests)."""
    records = frame.to_dict(orient="records")
    out = []
    for record in records:
        record["transaction_time"] = record["transaction_time"].to_pydatetime()
        if record.get("transaction_id") is None:
            record.pop("transaction_id", None)
        out.append(Transaction(**record))
    return out
