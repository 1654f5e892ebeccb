"""Confirmed outcomes: the label contract, ``fraudstream labels load`` and ``labels consume``.

A label says whether a scored transaction really was fraud: ``{transaction_id, is_fraud,
labelled_at, source}`` (:class:`Label`, the one definition of the message), JSON on the topic
``labels`` (``TOPIC_LABELS``; key = transaction_id, so one transaction's labels stay in order).

* ``fraudstream labels load FILE.csv`` sends a file's labels to the topic: a labelled
  transactions file in either shape (Kaggle ``trans_num`` / ``is_fraud``, TETA ``target`` with
  or without ``transaction_id``), whose ids are the ones ``fraudstream replay`` gives the same
  rows (:func:`fraudstream.identity.frame_transaction_ids`: the file's own id, else derived from
  the content), or a labels-only file with just ``transaction_id,target`` or
  ``trans_num,is_fraud`` columns. ``labelled_at`` is the time of the load, ``source`` is
  ``--source`` (``csv``). No other column is sent: names, streets and coordinates stay in the file.
* ``fraudstream labels consume`` stores them in the PostgreSQL table ``labels``
  (``migrations/0005_labels.sql``), one row per transaction_id: a label later than the stored one
  (by ``labelled_at``) overrides it, the same label again or an older one changes nothing. A
  label may come before its transaction's score; it is stored and counts in the quality once
  the score exists. Messages that can never be stored go to the DLQ like other poison
  (:mod:`fraudstream.dlq`: ``not_json``, ``invalid`` naming the field, ``write_error``), and the
  same consumer framework as the writer's (:mod:`fraudstream.kafka_runner`) applies: offsets
  committed only after the rows are, PostgreSQL waited for while it is away. The same process
  refreshes the live quality gauges (:mod:`fraudstream.quality`) on its ``/metrics``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from fraudstream.database import database_url
from fraudstream.kafka_runner import ConsumerParts
from fraudstream.schema import EARLIEST, MAX_EVENT_TIME_SKEW, PRINTABLE, validation_poison

log = logging.getLogger(__name__)

# labels-only files: (id column, label column) of each shape
LABEL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("transaction_id", "target"),
    ("trans_num", "is_fraud"),
)


class Label(BaseModel):
    """A value on the ``labels`` topic and a row of ``labels`` (fields in column order)."""

    model_config = ConfigDict(extra="ignore")

    transaction_id: str = Field(min_length=1, max_length=64, pattern=PRINTABLE)
    is_fraud: bool = Field(description="true/false (or 1/0): was the transaction fraud")
    labelled_at: datetime = Field(description="when the outcome was confirmed (ISO 8601)")
    source: str = Field(min_length=1, max_length=100, pattern=PRINTABLE)

    @field_validator("is_fraud", mode="before")
    @classmethod
    def _boolean(cls, value: Any) -> bool:
        # not pydantic's lax bool, which also takes "yes", "off", "f", ...
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        raise ValueError("must be true or false (or 1 or 0)")

    @field_validator("labelled_at")
    @classmethod
    def _plausible_time(cls, value: datetime) -> datetime:
        # a label from the far future would win over every later one: refuse it
        value = value if value.tzinfo else value.replace(tzinfo=UTC)  # naive = UTC
        if value < EARLIEST.replace(tzinfo=UTC):
            raise ValueError(f"must not be earlier than {EARLIEST:%Y-%m-%d}")
        if value > datetime.now(UTC) + MAX_EVENT_TIME_SKEW:
            skew = MAX_EVENT_TIME_SKEW.total_seconds()
            raise ValueError(f"must not be later than now + {skew:g} s (MAX_EVENT_TIME_SKEW_S)")
        return value

    @field_serializer("labelled_at", when_used="json")
    def _instant(self, value: datetime) -> str:
        return value.isoformat(timespec="milliseconds")

    def row(self) -> tuple[Any, ...]:
        return (self.transaction_id, self.is_fraud, self.labelled_at, self.source)


# the latest label wins: an equal or older labelled_at leaves the stored row as it is
UPSERT_SQL = (
    f"INSERT INTO labels ({', '.join(Label.model_fields)}) VALUES %s"
    " ON CONFLICT (transaction_id) DO UPDATE SET is_fraud = EXCLUDED.is_fraud,"
    " labelled_at = EXCLUDED.labelled_at, source = EXCLUDED.source, stored_at = now()"
    " WHERE labels.labelled_at < EXCLUDED.labelled_at"
)


# --------------------------------------------------------------------------- labels consume


@dataclass
class LabelMetrics:
    db_write: Any
    rows_stored: Any
    rows_unchanged: Any
    errors: Any

    @classmethod
    def create(cls, errors: Any) -> LabelMetrics:
        from prometheus_client import Counter, Histogram

        from fraudstream.kafka_runner import DB_WRITE_BUCKETS

        return cls(
            db_write=Histogram(
                "fraudstream_labels_db_write_seconds",
                "time to upsert and commit one batch of labels",
                buckets=DB_WRITE_BUCKETS,
            ),
            rows_stored=Counter(
                "fraudstream_labels_rows_stored",
                "labels stored (new, or later than the stored one)",
            ),
            rows_unchanged=Counter(
                "fraudstream_labels_rows_unchanged",
                "labels equal to or older than the stored one (nothing changed)",
            ),
            errors=errors,
        )


class LabelStep:
    """The business step of ``labels consume``: ``step(records)`` stores one batch."""

    def __init__(
        self,
        store: Any,  # writer.ScoreStore with UPSERT_SQL
        dead_letters: Any,
        metrics: Any = None,
        label_metrics: LabelMetrics | None = None,
    ) -> None:
        self.store = store
        self.dlq = dead_letters
        self.metrics = metrics
        self.label_metrics = label_metrics

    def __call__(self, records: list[Any]) -> None:
        from pydantic import ValidationError

        from fraudstream.writer import store_and_dead_letter

        latest: dict[str, Label] = {}  # one row per id in a batch: its latest label
        positions: dict[str, list[int]] = {}
        poison: dict[int, tuple[str, str]] = {}  # batch position -> (error_type, error)
        for index, record in enumerate(records):
            try:
                label = Label.model_validate_json(record.value or b"")
            except ValidationError as err:
                poison[index] = validation_poison(err)
                continue
            held = latest.get(label.transaction_id)
            if held is None or held.labelled_at < label.labelled_at:
                latest[label.transaction_id] = label
            positions.setdefault(label.transaction_id, []).append(index)
        rows = [label.row() for label in latest.values()]
        stored = store_and_dead_letter(records, poison, rows, positions, self.store, self.dlq)
        if self.metrics:
            self.metrics.messages_out.inc(stored)
        if self.label_metrics:
            self.label_metrics.rows_stored.inc(stored)
            self.label_metrics.rows_unchanged.inc(len(records) - len(poison) - stored)


def run_consume(args: argparse.Namespace) -> int:
    from fraudstream.kafka_runner import run_consumer
    from fraudstream.quality import QualityRefresher
    from fraudstream.settings import (
        KafkaSettings,
        LabelsSettings,
        WriterSettings,
    )
    from fraudstream.writer import ScoreStore

    settings = LabelsSettings()
    writer = WriterSettings()  # DB_RETRY_MAX_S / DB_MAX_ATTEMPTS, as the writer's
    dsn = database_url(args.database_url, "labels consume")
    if not dsn:
        return 2

    def build(parts: ConsumerParts) -> tuple[LabelStep, list[Any]]:
        label_metrics = LabelMetrics.create(parts.metrics.errors)
        store = ScoreStore(
            dsn,
            parts.stop,
            writer.db_retry_max_s,
            label_metrics,  # type: ignore[arg-type]  # db_write and errors, as WriterMetrics
            max_attempts=writer.db_max_attempts,
            sql=UPSERT_SQL,
            application_name="fraudstream-labels",
        )
        closers: list[Any] = [store]
        if settings.quality_refresh_s > 0:
            refresher = QualityRefresher(
                dsn,
                window_s=settings.quality_window_s,
                max_rows=settings.quality_max_rows,
                interval_s=settings.quality_refresh_s,
            )
            refresher.start()
            closers.append(refresher)
        step = LabelStep(store, parts.dead_letters, parts.metrics, label_metrics)
        return step, closers

    return run_consumer(
        "labels",
        KafkaSettings().topic_labels,
        build,
        group_id=settings.labels_group_id,
        group_instance_id=settings.labels_group_instance_id,
        batch_size=settings.labels_batch_size,
        batch_max_wait_ms=settings.labels_batch_max_wait_ms,
        commit_interval_ms=settings.labels_commit_interval_ms,
        metrics_port=args.metrics_port if args.metrics_port is not None else settings.metrics_port,
    )


# --------------------------------------------------------------------------- labels load


@dataclass
class LabelFile:
    """The labels of a file: ids and outcomes in row order, and the rows skipped."""

    ids: list[str]
    is_fraud: list[bool]
    shape: str  # "teta", "kaggle" (transactions with labels) or "labels" (ids and labels only)
    rows_read: int = 0
    errors: list[str] = field(default_factory=list)  # "line N, column C: reason"


def _header(path: Path) -> list[str]:
    from fraudstream.loader import DataError, read_header

    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return read_header(path)


def read_label_file(path: str | Path) -> LabelFile:
    """The labels of ``path`` (see the module docstring for the shapes accepted); raises
    :class:`fraudstream.loader.DataError` for a file that has none."""
    import pandas as pd

    from fraudstream.identity import frame_transaction_ids
    from fraudstream.loader import KAGGLE_NAMES, REQUIRED, DataError, load_csv

    path = Path(path)
    header = set(_header(path))
    transactions = set(REQUIRED) <= header or {KAGGLE_NAMES[c] for c in REQUIRED} <= header
    if transactions:
        # the loader's rows and ids, as `fraudstream replay` sends the same file
        result = load_csv(path, require_target=True)
        frame = result.frame
        return LabelFile(
            ids=frame_transaction_ids(frame),
            is_fraud=[bool(v) for v in frame["target"].tolist()],
            shape=result.shape,
            rows_read=result.rows_read,
            errors=[str(e) for e in result.errors],
        )
    for id_column, label_column in LABEL_COLUMNS:
        if {id_column, label_column} <= header:
            break
    else:
        raise DataError(
            f"{path}: no labels: expected a labelled transactions file (TETA or Kaggle) or the"
            " columns transaction_id,target or trans_num,is_fraud"
        )
    raw = pd.read_csv(
        path,
        usecols=[id_column, label_column],
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        encoding="utf-8-sig",
        skipinitialspace=True,
    )
    out = LabelFile(ids=[], is_fraud=[], shape="labels", rows_read=len(raw))
    for line, (tx_id, target) in enumerate(
        zip(raw[id_column].str.strip(), raw[label_column].str.strip(), strict=True), start=2
    ):
        if not tx_id:
            out.errors.append(f"line {line}, column {id_column}: missing value")
        elif len(tx_id) > 64:
            out.errors.append(f"line {line}, column {id_column}: longer than 64 characters")
        elif target not in ("0", "1"):
            out.errors.append(f"line {line}, column {label_column}: label must be 0 or 1")
        else:
            out.ids.append(tx_id)
            out.is_fraud.append(target == "1")
    if not out.ids:
        raise DataError(f"{path}: no valid rows: all {out.rows_read} rejected")
    return out


def send_labels(
    producer: Any,
    topic: str,
    ids: list[str],
    is_fraud: list[bool],
    source: str,
    labelled_at: datetime | None = None,
) -> int:
    """Produce one :class:`Label` per id (key = transaction_id); return how many were sent.
    A label the contract refuses (e.g. control characters in an id) raises ``ValidationError``."""
    from fraudstream.kafka_runner import wait_delivered

    at = labelled_at or datetime.now(UTC)
    futures = []
    for tx_id, fraud in zip(ids, is_fraud, strict=True):
        label = Label(transaction_id=tx_id, is_fraud=fraud, labelled_at=at, source=source)
        futures.append(
            producer.send(topic, key=tx_id.encode(), value=label.model_dump_json().encode())
        )
        if len(futures) >= 10_000:
            wait_delivered(producer, futures)
            futures = []
    wait_delivered(producer, futures)
    return len(ids)


def run_load(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from fraudstream.kafka_runner import make_producer
    from fraudstream.loader import DataError
    from fraudstream.settings import KafkaSettings

    kafka = KafkaSettings()
    try:
        labels = read_label_file(args.file)
    except DataError as err:
        print(f"fraudstream labels load: {err}", file=sys.stderr)
        return 1
    for line in labels.errors[:20]:
        print(f"skipped {line}", file=sys.stderr)
    if len(labels.errors) > 20:
        print(f"... and {len(labels.errors) - 20} more", file=sys.stderr)
    started = time.monotonic()
    producer = make_producer(args.bootstrap or kafka.kafka_bootstrap_servers)
    try:
        sent = send_labels(producer, kafka.topic_labels, labels.ids, labels.is_fraud, args.source)
    except ValidationError as err:
        print(f"fraudstream labels load: {validation_poison(err)[1]}", file=sys.stderr)
        return 1
    finally:
        producer.close()
    frauds = sum(labels.is_fraud)
    print(
        f"sent {sent:,} label(s) ({frauds:,} fraud) from {labels.rows_read:,} row(s) of"
        f" {args.file} ({labels.shape} shape) to {kafka.topic_labels} in"
        f" {time.monotonic() - started:.1f} s; skipped {len(labels.errors):,} row(s)"
    )
    return 0


# --------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    load = actions.add_parser(
        "load",
        help="send a CSV's labels (Kaggle trans_num/is_fraud, TETA transaction_id/target) to"
        " the labels topic",
    )
    load.add_argument("file", help="labelled transactions, or only the id and label columns")
    load.add_argument("--source", default="csv", help="who confirmed them (default: csv)")
    load.add_argument("--bootstrap", default=None, help="default: $KAFKA_BOOTSTRAP_SERVERS")
    consume = actions.add_parser(
        "consume",
        help="store the labels topic in PostgreSQL and export the live quality gauges",
    )
    consume.add_argument("--database-url", help="default: $DATABASE_URL")
    consume.add_argument("--metrics-port", type=int, help="default: $METRICS_PORT (9104)")


def run(args: argparse.Namespace) -> int:
    if args.action == "consume":
        return run_consume(args)
    from fraudstream.logs import setup_logging
    from fraudstream.settings import LogSettings

    logs = LogSettings()
    setup_logging(logs.log_level, logs.log_format)
    return run_load(args)
