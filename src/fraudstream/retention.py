"""How long PostgreSQL keeps things: ``fraudstream history prune`` and ``fraudstream scores prune``.

* ``card_history_seen`` (the transaction ids the scorer has counted, for idempotent re-scoring):
  ids recorded more than ``HISTORY_DEDUPE_DAYS`` (30) ago are deleted. The horizon is on
  ``recorded_at`` (when the scorer counted it), not on the transaction's own time: a file of
  old transactions replayed today stays deduplicated for the whole horizon. A retry or replay of
  a transaction after its id is gone counts it again.
* ``card_history`` (one state per card): cards not updated for longer than the history window
  (7 days) + ``HISTORY_DEDUPE_DAYS`` are deleted; such a card's next transaction starts a new
  history (every window of its old state is empty by then; its lifetime aggregates go).
* ``scores`` and ``scores_shadow`` (the challenger's, :mod:`fraudstream.shadow`): rows written
  more than ``SCORES_RETENTION_DAYS`` (90) ago are deleted.
* ``labels``: rows stored (or last overridden) more than ``LABELS_RETENTION_DAYS`` (90) ago are
  deleted by the same ``fraudstream scores prune``.

Deletes run in batches of ``PRUNE_BATCH_SIZE`` rows, each its own short transaction, so a prune
never holds many locks for long (the scorer and the writer keep going) and can be stopped at any
point. A row another transaction has locked (a card being scored right now) is skipped
(``FOR UPDATE SKIP LOCKED``), never waited for; the next run looks at it again. The chart runs
both commands daily (a CronJob). ``fraudstream history backfill`` (the other
``history`` action) lives in :mod:`fraudstream.backfill`.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fraudstream.features import WEEK

if TYPE_CHECKING:
    from fraudstream.settings import DatabaseSettings

log = logging.getLogger(__name__)
DAY_S = 86_400.0
# the tables `fraudstream scores prune` keeps to SCORES_RETENTION_DAYS: the champion's scores
# and the challenger's (fraudstream.shadow)
SCORE_TABLES = ("scores", "scores_shadow")


@dataclass
class PruneResult:
    """What one prune deleted from one table."""

    table: str
    deleted: int = 0
    batches: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        return (
            f"{self.table}: deleted {self.deleted:,} row(s) in {self.batches} batch(es),"
            f" {self.seconds:.1f} s"
        )


def _batches(
    conn: Any, result: PruneResult, step: Callable[[Any], tuple[int, bool]]
) -> PruneResult:
    """Run ``step(cursor) -> (rows deleted, more to do)`` in one transaction each until done."""
    started = time.monotonic()
    more = True
    while more:
        with conn, conn.cursor() as cur:
            deleted, more = step(cur)
        result.deleted += deleted
        result.batches += 1
    result.seconds = time.monotonic() - started
    log.info(
        "pruned %s",
        result.table,
        extra={"table": result.table, "deleted": result.deleted, "batches": result.batches},
    )
    return result


def _cutoff(conn: Any, age_s: float) -> Any:
    """The server's now() minus ``age_s`` seconds (one fixed cutoff for every batch)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT now() - make_interval(secs => %s)", (age_s,))
        return cur.fetchone()[0]


def prune_history(
    dsn: str,
    dedupe_days: float,
    batch_size: int = 5_000,
    settings: DatabaseSettings | None = None,
) -> list[PruneResult]:
    """Delete seen ids older than ``dedupe_days`` and cards idle for the week + ``dedupe_days``."""
    from fraudstream.database import connect

    conn = connect(dsn, settings, application_name="fraudstream-prune")
    try:
        seen_before = _cutoff(conn, dedupe_days * DAY_S)
        idle_before = _cutoff(conn, WEEK + dedupe_days * DAY_S)

        def seen_batch(cur: Any) -> tuple[int, bool]:
            cur.execute(
                "DELETE FROM card_history_seen WHERE transaction_id IN ("
                " SELECT transaction_id FROM card_history_seen WHERE recorded_at < %s"
                " ORDER BY recorded_at LIMIT %s FOR UPDATE SKIP LOCKED)",
                (seen_before, batch_size),
            )
            return cur.rowcount, cur.rowcount == batch_size

        # the batches walk the primary key, batch_size cards at a time whether idle or not (no
        # index on updated_at, which every scored transaction changes): each statement reads a
        # bounded number of rows however few cards are idle
        after = [""]

        def cards_batch(cur: Any) -> tuple[int, bool]:
            cur.execute(
                "WITH page AS (SELECT card_key FROM card_history WHERE card_key > %s"
                "  ORDER BY card_key LIMIT %s),"
                " idle AS (SELECT card_key FROM card_history"
                "  WHERE card_key = ANY(ARRAY(SELECT card_key FROM page)) AND updated_at < %s"
                "  FOR UPDATE SKIP LOCKED),"
                " gone AS (DELETE FROM card_history h USING idle"
                "  WHERE h.card_key = idle.card_key RETURNING 1)"
                " SELECT (SELECT max(card_key) FROM page), (SELECT count(*) FROM page),"
                "  (SELECT count(*) FROM gone)",
                (after[0], batch_size, idle_before),
            )
            last, looked_at, deleted = cur.fetchone()
            if last is not None:
                after[0] = last
            return int(deleted), looked_at == batch_size

        return [
            _batches(conn, PruneResult("card_history_seen"), seen_batch),
            _batches(conn, PruneResult("card_history"), cards_batch),
        ]
    finally:
        conn.close()


def prune_table(
    dsn: str,
    table: str,
    key: str,
    time_column: str,
    retention_days: float,
    batch_size: int = 5_000,
    settings: DatabaseSettings | None = None,
) -> PruneResult:
    """Delete the rows of ``table`` whose ``time_column`` is more than ``retention_days`` ago,
    oldest first, ``batch_size`` rows (found by ``key``) per transaction."""
    from fraudstream.database import connect

    conn = connect(dsn, settings, application_name="fraudstream-prune")
    try:
        before = _cutoff(conn, retention_days * DAY_S)
        delete = (
            f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table}"
            f" WHERE {time_column} < %s ORDER BY {time_column} LIMIT %s FOR UPDATE SKIP LOCKED)"
        )

        def batch(cur: Any) -> tuple[int, bool]:
            cur.execute(delete, (before, batch_size))
            return cur.rowcount, cur.rowcount == batch_size

        return _batches(conn, PruneResult(table), batch)
    finally:
        conn.close()


def prune_scores(
    dsn: str, retention_days: float, batch_size: int = 5_000, table: str = "scores"
) -> PruneResult:
    """Delete the rows of ``table`` (one of :data:`SCORE_TABLES`: never a name from input)
    written more than ``retention_days`` ago."""
    if table not in SCORE_TABLES:
        raise ValueError(f"unknown table {table!r}")
    return prune_table(dsn, table, "id", "written_at", retention_days, batch_size)


def prune_labels(dsn: str, retention_days: float, batch_size: int = 5_000) -> PruneResult:
    """Delete the rows of ``labels`` stored more than ``retention_days`` ago."""
    return prune_table(dsn, "labels", "transaction_id", "stored_at", retention_days, batch_size)


def _database_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="default: $DATABASE_URL")


def _batch_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-size", type=int, default=None, help="rows per delete (default $PRUNE_BATCH_SIZE)"
    )


def add_history_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    prune = actions.add_parser(
        "prune",
        help="delete seen transaction ids older than the dedupe horizon and cards idle for"
        " the history window (7 days) + that horizon",
    )
    prune.add_argument(
        "--dedupe-days", type=float, default=None, help="default: $HISTORY_DEDUPE_DAYS (30)"
    )
    _batch_argument(prune)
    _database_argument(prune)
    from fraudstream.backfill import add_arguments as add_backfill_arguments

    backfill = actions.add_parser(
        "backfill",
        help="fill the history from past transactions (CSV files), so a new deployment does"
        " not score every card as new",
    )
    add_backfill_arguments(backfill)
    _database_argument(backfill)


def add_scores_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    prune = actions.add_parser(
        "prune",
        help="delete the scores written and the labels stored longer ago than their retention",
    )
    prune.add_argument(
        "--retention-days", type=float, default=None, help="default: $SCORES_RETENTION_DAYS (90)"
    )
    prune.add_argument(
        "--labels-retention-days",
        type=float,
        default=None,
        help="default: $LABELS_RETENTION_DAYS (90)",
    )
    _batch_argument(prune)
    _database_argument(prune)


def _setup(args: argparse.Namespace, command: str) -> str:
    from fraudstream.database import database_url
    from fraudstream.logs import setup_logging
    from fraudstream.settings import LogSettings

    logs = LogSettings()
    setup_logging(logs.log_level, logs.log_format)
    return database_url(args.database_url, command)


def _run_prune(command: str, prune: Callable[[str], list[PruneResult]], dsn: str) -> int:
    import psycopg2

    from fraudstream.database import database_error

    if not dsn:
        return 2
    try:
        results = prune(dsn)
    except psycopg2.Error as err:
        return database_error(command, err)
    for result in results:
        print(result, flush=True)
    return 0


def run_history(args: argparse.Namespace) -> int:
    if args.action == "backfill":
        from fraudstream.backfill import run as run_backfill

        return run_backfill(args)
    from fraudstream.settings import RetentionSettings

    dsn = _setup(args, "history prune")
    settings = RetentionSettings()
    days = settings.history_dedupe_days if args.dedupe_days is None else args.dedupe_days
    size = args.batch_size or settings.prune_batch_size
    return _run_prune("history prune", lambda url: prune_history(url, days, size), dsn)


def run_scores(args: argparse.Namespace) -> int:
    from fraudstream.settings import RetentionSettings

    dsn = _setup(args, "scores prune")
    settings = RetentionSettings()
    days = settings.scores_retention_days if args.retention_days is None else args.retention_days
    labels_days = (
        settings.labels_retention_days
        if args.labels_retention_days is None
        else args.labels_retention_days
    )
    size = args.batch_size or settings.prune_batch_size
    return _run_prune(
        "scores prune",
        lambda url: [
            *(prune_scores(url, days, size, table=table) for table in SCORE_TABLES),
            prune_labels(url, labels_days, size),
        ],
        dsn,
    )
