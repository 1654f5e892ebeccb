"""``fraudstream writer``: scoring -> PostgreSQL table ``scores``, idempotent on transaction_id.

One consumer group on ``scoring``. Each batch is validated (the result contract,
:class:`fraudstream.scored_transaction.ScoredTransaction`), inserted with one
``INSERT ... ON CONFLICT (transaction_id) DO NOTHING`` and the database transaction is committed;
only then are the offsets marked done (and committed by :mod:`fraudstream.kafka_runner`). A batch
read twice (after a crash or a lost commit) inserts nothing the second time. While PostgreSQL is
away the writer reconnects with exponential backoff and retries the same batch for as long as it
takes.

Records that can never be stored go to the DLQ topic (:mod:`fraudstream.dlq`) with their
original bytes, as in the bridge: not JSON, missing fields or control characters (``invalid``),
and rows PostgreSQL refuses (``write_error``: a value out of a column's range, a constraint).
A refused batch is halved until the rows to blame are found; the others are stored. Errors
that are no row's fault stop the writer instead (a missing table or privilege: exit 1), and
so does the DLQ ratio guard when most rows are refused (exit 3). The table is created by
``fraudstream migrate`` (``migrations/0002_scores.sql``).

``WRITER_TABLE=scores_shadow`` makes a second writer (its own ``WRITER_GROUP_ID``, reading
``TOPIC_SCORING=scoring.shadow``) store the challenger's results (:mod:`fraudstream.shadow`) in
``scores_shadow`` (``migrations/0006_scores_shadow.sql``), the same way.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fraudstream.database import database_url
from fraudstream.kafka_runner import ConsumerParts, ShutdownRequestedError, backoff_delays
from fraudstream.schema import validation_poison
from fraudstream.scored_transaction import ScoredTransaction

log = logging.getLogger(__name__)

# the fields of the result contract, inserted as they are; PostgreSQL adds id and written_at
INSERT_SQL = (
    f"INSERT INTO scores ({', '.join(ScoredTransaction.model_fields)}) VALUES %s"
    " ON CONFLICT (transaction_id) DO NOTHING"
)
# the tables a writer may fill (WRITER_TABLE): the champion's and the challenger's results
TABLES = ("scores", "scores_shadow")


def insert_sql(table: str = "scores") -> str:
    """:data:`INSERT_SQL` for ``table`` (one of :data:`TABLES`: never a name from input)."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}")
    return INSERT_SQL.replace("INTO scores ", f"INTO {table} ", 1)


class RowsRejectedError(Exception):
    """PostgreSQL (or psycopg2) refuses the rows themselves; the same rows will fail again.
    The message names the error class and SQLSTATE, never a value."""


@dataclass
class WriterMetrics:
    db_write: Any
    rows_inserted: Any
    rows_duplicate: Any
    e2e_latency: Any
    errors: Any

    @classmethod
    def create(cls, errors: Any) -> WriterMetrics:
        from prometheus_client import Counter, Histogram

        from fraudstream.kafka_runner import DB_WRITE_BUCKETS

        return cls(
            db_write=Histogram(
                "fraudstream_writer_db_write_seconds",
                "time to insert and commit one batch",
                buckets=DB_WRITE_BUCKETS,
            ),
            rows_inserted=Counter("fraudstream_writer_rows_inserted", "new rows in scores"),
            rows_duplicate=Counter(
                "fraudstream_writer_rows_duplicate", "records whose transaction_id was stored"
            ),
            e2e_latency=Histogram(
                "fraudstream_writer_end_to_end_seconds",
                "produced to transactions -> committed in scores",
                buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 5, 10, 30, 60),
            ),
            errors=errors,
        )


class ScoreStore:
    """One PostgreSQL connection that comes back by itself: ``insert`` retries until done.

    What an error means decides what happens to the batch:

    - the connection is lost, the server restarts, a timeout (``OperationalError``,
      ``InterfaceError``): retry with backoff for as long as it takes;
    - the rows are refused (``DataError``: a value out of a column's range;
      ``IntegrityError``: a constraint; ``ValueError``/``TypeError`` from psycopg2, which
      cannot send them): :class:`RowsRejectedError` at once, the same rows fail every time;
    - no row's fault (``ProgrammingError``: a missing table, column or privilege;
      ``NotSupportedError``): raised as it is, the writer stops;
    - anything else (``InternalError``, ...): retried, and :class:`RowsRejectedError` once it
      happened ``max_attempts`` times in a row.
    """

    def __init__(
        self,
        dsn: str,
        stop: threading.Event,
        retry_max_s: float = 10.0,
        metrics: WriterMetrics | None = None,
        max_attempts: int = 5,
        sql: str = INSERT_SQL,
        application_name: str = "fraudstream-writer",
    ) -> None:
        """``sql``: the statement each batch of rows is sent with (``execute_values``);
        ``metrics``: anything with ``db_write`` (a Histogram) and ``errors`` (by type)."""
        self.dsn = dsn
        self.stop = stop
        self.retry_max_s = retry_max_s
        self.metrics = metrics
        self.max_attempts = max(1, max_attempts)
        self.sql = sql
        self.application_name = application_name
        self.conn: Any = None

    def _connect(self) -> Any:
        from fraudstream.database import connect

        # a batch insert may take longer than the default statement limit on a busy server
        return connect(
            self.dsn, statement_timeout_ms=60_000, application_name=self.application_name
        )

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None

    def insert(self, rows: list[tuple]) -> int:
        """Insert and commit ``rows``; return how many were new.

        Raises :class:`RowsRejectedError` when the rows themselves are refused (see the class),
        :class:`ShutdownRequestedError` when shutdown is requested while waiting.
        """
        import psycopg2
        from psycopg2.extras import execute_values

        delays = backoff_delays(0.1, self.retry_max_s)
        attempt = failures = 0
        while True:
            attempt += 1
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = self._connect()
                    if attempt > 1:
                        log.info("reconnected to PostgreSQL")
                started = time.perf_counter()
                with self.conn.cursor() as cur:
                    execute_values(cur, self.sql, rows, page_size=len(rows))
                    inserted = cur.rowcount
                self.conn.commit()
                if self.metrics:
                    self.metrics.db_write.observe(time.perf_counter() - started)
                return inserted
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as err:
                # connection lost, server restarting, timeouts: the transaction did not commit
                # (or committed and will be ignored by ON CONFLICT on the retry)
                self.close()
                if self.metrics:
                    self.metrics.errors.labels("db_unavailable").inc()
                delay = next(delays)
                if attempt == 1 or attempt % 10 == 0:
                    log.warning(
                        "PostgreSQL write failed (%s); retrying in %.1fs",
                        str(err).strip().splitlines()[0] if str(err).strip() else type(err),
                        delay,
                        extra={"attempt": attempt},
                    )
                if self.stop.wait(delay):
                    raise ShutdownRequestedError("shutdown while waiting for PostgreSQL") from err
            except (psycopg2.ProgrammingError, psycopg2.NotSupportedError):
                self._rollback()
                raise
            except (psycopg2.DataError, psycopg2.IntegrityError, ValueError, TypeError) as err:
                self._rollback()
                raise RowsRejectedError(_describe(err)) from err
            except psycopg2.Error as err:
                self._rollback()
                failures += 1
                if self.metrics:
                    self.metrics.errors.labels("db_error").inc()
                if failures >= self.max_attempts:
                    raise RowsRejectedError(f"{_describe(err)}, {failures} time(s)") from err
                log.warning(
                    "PostgreSQL refused the batch (%s); trying again",
                    _describe(err),
                    extra={"attempt": attempt},
                )
                if self.stop.wait(next(delays)):
                    raise ShutdownRequestedError("shutdown while retrying PostgreSQL") from err
            except Exception:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self.conn is not None and not self.conn.closed:
            self.conn.rollback()


def _describe(err: BaseException) -> str:
    """The error's class and SQLSTATE: PostgreSQL's messages can quote the value."""
    code = getattr(err, "pgcode", None)
    return f"{type(err).__name__} ({code})" if code else type(err).__name__


class WriterStep:
    """The business step of the writer: ``step(records)`` stores one batch."""

    def __init__(
        self,
        store: ScoreStore,
        dead_letters: Any,
        metrics: Any = None,
        writer_metrics: WriterMetrics | None = None,
    ) -> None:
        self.store = store
        self.dlq = dead_letters
        self.metrics = metrics
        self.writer_metrics = writer_metrics

    def __call__(self, records: list[Any]) -> None:
        from pydantic import ValidationError

        rows: dict[str, tuple] = {}  # one row per id within the batch
        positions: dict[str, list[int]] = {}  # transaction_id -> its records in the batch
        produced: list[datetime] = []
        poison: dict[int, tuple[str, str]] = {}  # batch position -> (error_type, error)
        for index, record in enumerate(records):
            try:
                msg = ScoredTransaction.model_validate_json(record.value or b"")
            except ValidationError as err:
                poison[index] = validation_poison(err)
                continue
            rows[msg.transaction_id] = msg.row()
            positions.setdefault(msg.transaction_id, []).append(index)
            if msg.produced_at is not None:
                produced.append(msg.produced_at)
        inserted = store_and_dead_letter(
            records, poison, list(rows.values()), positions, self.store, self.dlq
        )
        if self.metrics:
            self.metrics.messages_out.inc(inserted)
        if self.writer_metrics:
            self.writer_metrics.rows_inserted.inc(inserted)
            self.writer_metrics.rows_duplicate.inc(len(records) - len(poison) - inserted)
            now = datetime.now(UTC)
            for at in produced:
                self.writer_metrics.e2e_latency.observe((now - at).total_seconds())


def store_and_dead_letter(
    records: list[Any],
    poison: dict[int, tuple[str, str]],
    rows: list[tuple],
    positions: dict[str, list[int]],
    store: ScoreStore,
    dlq: Any,
) -> int:
    """The end of a storing consumer's batch: ``poison`` (batch position -> (error_type,
    error)) counts in the DLQ ratio guard, ``rows`` are stored (a row PostgreSQL refuses
    becomes poison at every position ``positions[row key]`` lists), then the poison goes to the
    DLQ, acknowledged before the batch counts as done. Returns the rows stored. Writes are
    idempotent, so the guard only has to come before the DLQ."""
    dlq.check([i in poison for i in range(len(records))], record=False)
    stored, refused = store_bisecting(store, rows) if rows else (0, [])
    for row, error in refused:
        for index in positions[row[0]]:
            poison[index] = ("write_error", error)
    dlq.check([i in poison for i in range(len(records))])
    if poison:
        from fraudstream.kafka_runner import wait_delivered

        futures = [dlq.send(records[i], *poison[i]) for i in sorted(poison)]
        wait_delivered(dlq.producer, futures)
    return stored


def store_bisecting(store: ScoreStore, rows: list[tuple]) -> tuple[int, list[tuple[tuple, str]]]:
    """Insert ``rows``; when PostgreSQL refuses them, halve until the refused rows are found.
    Returns (rows inserted, [(refused row, error)])."""
    try:
        return store.insert(rows), []
    except RowsRejectedError as err:
        if len(rows) == 1:
            return 0, [(rows[0], str(err))]
    mid = len(rows) // 2
    left, right = store_bisecting(store, rows[:mid]), store_bisecting(store, rows[mid:])
    return left[0] + right[0], left[1] + right[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="default: $DATABASE_URL")
    parser.add_argument("--metrics-port", type=int, help="default: $METRICS_PORT (9102)")


def run(args: argparse.Namespace) -> int:
    from fraudstream.kafka_runner import run_consumer
    from fraudstream.settings import KafkaSettings, WriterSettings

    settings = WriterSettings()
    dsn = database_url(args.database_url, "writer")
    if not dsn:
        return 2

    def build(parts: ConsumerParts) -> tuple[WriterStep, list[ScoreStore]]:
        writer_metrics = WriterMetrics.create(parts.metrics.errors)
        store = ScoreStore(
            dsn,
            parts.stop,
            settings.db_retry_max_s,
            writer_metrics,
            max_attempts=settings.db_max_attempts,
            sql=insert_sql(settings.writer_table),
        )
        return WriterStep(store, parts.dead_letters, parts.metrics, writer_metrics), [store]

    return run_consumer(
        "writer",
        KafkaSettings().topic_scoring,
        build,
        group_id=settings.writer_group_id,
        group_instance_id=settings.writer_group_instance_id,
        batch_size=settings.writer_batch_size,
        batch_max_wait_ms=settings.writer_batch_max_wait_ms,
        commit_interval_ms=settings.writer_commit_interval_ms,
        metrics_port=args.metrics_port if args.metrics_port is not None else settings.metrics_port,
        table=settings.writer_table,
    )
