"""``fraudstream history backfill FILE...``: warm the PostgreSQL history up from past transactions.

A new deployment starts with an empty ``card_history``: every card looks brand new (no earlier
transactions, every merchant a first use) until it has been seen for a while. Backfilling the
last weeks of transactions first gives the scorer the history it would have built live.

The files are read as ``fraudstream replay`` reads them (:func:`fraudstream.loader.load_csv`,
TETA or Kaggle shape, every row validated again as a :class:`fraudstream.schema.Transaction`;
refused rows are skipped and counted) and get the same transaction ids replay would send
(:func:`fraudstream.identity.frame_transaction_ids`, per file). The transactions of all files
go, in time order (stable: ties keep file and row order), through
:meth:`fraudstream.history.PostgresHistoryStore.apply` in batches: the same
:meth:`fraudstream.features.CardState.step` the scorer runs, so the history afterwards is the one
a scorer that had seen them live would hold. Their ids are recorded as seen, so the same
transactions replayed later are not counted twice, and a second backfill of the same files
changes nothing. Run it before live traffic: transactions older than what a card has already
seen are handled as late arrivals (aggregates only when older than its kept week).
``CARD_KEY_SECRET`` must be the scorer's, or the history lands under other card keys.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from fraudstream.settings import DatabaseSettings

log = logging.getLogger(__name__)
VALIDATE_CHUNK = 2000


@dataclass
class BackfillResult:
    files: int = 0
    rows: int = 0  # rows the loader read
    applied: int = 0  # transactions handed to the history store
    rejected: int = 0  # refused by the loader or the schema
    cards: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # first few reasons, for people

    def __str__(self) -> str:
        return (
            f"backfilled {self.applied:,} transaction(s) of {self.cards:,} card(s) from"
            f" {self.files} file(s) ({self.rejected:,} rejected) in {self.seconds:.1f} s"
        )


def valid_rows(frame: pd.DataFrame, result: BackfillResult) -> pd.DataFrame:
    """The rows of a loaded frame that are valid ``Transaction`` objects (as replay checks)."""
    from pydantic import ValidationError

    from fraudstream.loader import to_transactions

    keep: list[int] = []
    for begin in range(0, len(frame), VALIDATE_CHUNK):
        chunk = frame.iloc[begin : begin + VALIDATE_CHUNK]
        try:
            to_transactions(chunk)
            keep.extend(range(begin, begin + len(chunk)))
            continue
        except ValidationError:
            pass
        for pos in range(len(chunk)):  # find the bad rows one by one
            try:
                to_transactions(chunk.iloc[pos : pos + 1])
                keep.append(begin + pos)
            except ValidationError as err:
                result.rejected += 1
                if len(result.errors) < 20:
                    result.errors.append(f"row {begin + pos + 1}: {err.errors()[0]['msg']}")
    return frame.iloc[keep]


def load_history(paths: Sequence[str | Path], result: BackfillResult) -> pd.DataFrame:
    """The valid rows of every file, with replay's transaction ids, in time order."""
    import pandas as pd

    from fraudstream.features import processing_order
    from fraudstream.identity import frame_transaction_ids
    from fraudstream.loader import load_csv

    frames = []
    for path in paths:
        loaded = load_csv(path)
        result.files += 1
        result.rows += loaded.rows_read
        result.rejected += len({e.line for e in loaded.errors})
        ids = frame_transaction_ids(loaded.frame)  # what replay sends for this file
        frames.append(valid_rows(loaded.frame.assign(transaction_id=ids), result))
    frame = pd.concat(frames, ignore_index=True)
    return frame.iloc[processing_order(frame)].reset_index(drop=True)


def backfill(
    dsn: str,
    paths: Sequence[str | Path],
    batch_size: int = 1000,
    settings: DatabaseSettings | None = None,
) -> BackfillResult:
    """Feed the transactions of ``paths`` through the PostgreSQL history store (see module)."""
    from fraudstream.features import events_from_frame
    from fraudstream.history import PostgresHistoryStore

    started = time.monotonic()
    result = BackfillResult()
    frame = load_history(paths, result)
    events = events_from_frame(frame)
    ids = frame["transaction_id"].tolist()
    store = PostgresHistoryStore(dsn, settings=settings)
    try:
        for begin in range(0, len(events), batch_size):
            store.apply(ids[begin : begin + batch_size], events[begin : begin + batch_size])
            result.applied += len(events[begin : begin + batch_size])
    finally:
        store.close()
    result.cards = len({event[0] for event in events})
    result.seconds = time.monotonic() - started
    log.info(
        "history backfilled",
        extra={"transactions": result.applied, "cards": result.cards, "files": result.files},
    )
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="CSV in the TETA or Kaggle shape")
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="transactions per database transaction"
    )


def run(args: argparse.Namespace) -> int:
    import psycopg2

    from fraudstream.loader import DataError
    from fraudstream.logs import setup_logging
    from fraudstream.settings import LogSettings

    logs = LogSettings()
    setup_logging(logs.log_level, logs.log_format)
    from fraudstream.database import database_error, database_url

    dsn = database_url(args.database_url, "history backfill")
    if not dsn:
        return 2
    try:
        result = backfill(dsn, args.files, batch_size=max(1, args.batch_size))
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except psycopg2.Error as err:
        return database_error("history backfill", err)
    for line in result.errors[:5]:
        print(f"  {line}", file=sys.stderr)
    print(result, flush=True)
    return 0
