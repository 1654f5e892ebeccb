"""The dead-letter topic (``transactions.dlq``): what goes in, the guard, and ``fraudstream dlq``.

A consumer sends a record there only when it can never succeed as it is (poison): its original
key and bytes, with headers ``error`` (what is wrong, naming fields, never values),
``error_type`` (``not_json``, ``invalid``, ``empty``, ``scorer_rejected``, ``scorer_error``,
``write_error``), ``source_topic``, ``source_partition``, ``source_offset``. A record replayed
from the DLQ also carries ``origin_topic``, ``origin_partition``, ``origin_offset``: where it was
first read, which stays the same however often it goes round.

:class:`DeadLetters` guards the ratio: when more than ``max_ratio`` of the last ``window``
records (or of the batch, when a batch is larger) are poison, :class:`DlqRatioExceededError`
stops the consumer before it sends anything, so a bad deploy cannot drain a topic into the DLQ.

``fraudstream dlq list`` counts the records per error type (offsets and times, never contents:
they hold personal data); ``fraudstream dlq replay --reason <error_type> [--dry-run]`` sends
them back to the topic they came from, once per original record. Replaying twice is safe: the
records keep their ``transaction_id`` (or the bridge derives the same one from their origin),
the scorer is idempotent on it and the writer inserts with ``ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from fraudstream.kafka_runner import ConsumerHaltError

log = logging.getLogger(__name__)

ORIGIN_HEADERS = ("origin_topic", "origin_partition", "origin_offset")


class DlqRatioExceededError(ConsumerHaltError):
    """Most recent traffic is poison: stop instead of draining the topic into the DLQ."""

    exit_code = 3
    error_type = "dlq_ratio"


def headers_of(record: Any) -> dict[str, str]:
    """A Kafka record's headers as text (a record without headers gives ``{}``)."""
    return {
        key: value.decode(errors="replace")
        for key, value in (getattr(record, "headers", None) or ())
        if value is not None
    }


def origin_of(record: Any) -> tuple[str, int, int]:
    """(topic, partition, offset) where ``record`` was first read: its ``origin_*`` headers
    when it was replayed from the DLQ, else its own position."""
    headers = headers_of(record)
    try:
        return (
            headers["origin_topic"],
            int(headers["origin_partition"]),
            int(headers["origin_offset"]),
        )
    except (KeyError, ValueError):
        return record.topic, record.partition, record.offset


def origin_headers(origin: tuple[str, int, int]) -> list[tuple[str, bytes]]:
    return [(name, str(value).encode()) for name, value in zip(ORIGIN_HEADERS, origin, strict=True)]


# --------------------------------------------------------------------------- consumers' side


# every ``error_type`` a record can be dead-lettered with
ERROR_TYPES = ("not_json", "invalid", "empty", "scorer_rejected", "scorer_error", "write_error")


class DeadLetters:
    """Poison records to the DLQ topic, behind the ratio guard (see the module docstring)."""

    def __init__(
        self,
        producer: Any,
        topic: str,
        max_ratio: float,
        window: int,
        metrics: Any = None,  # kafka_runner.ConsumerMetrics
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.max_ratio = max_ratio
        self.window: deque[bool] = deque(maxlen=max(window, 1))
        self.min_seen = min(max(window, 1), 50)
        self.metrics = metrics
        if metrics is not None:  # every reason a series from the start, so dashboards see 0
            for error_type in ERROR_TYPES:
                metrics.dlq.labels(error_type)

    def check(self, poison: Sequence[bool], *, record: bool = True) -> None:
        """Judge a batch: ``poison[i]`` tells whether its i-th record goes to the DLQ.

        Raises :class:`DlqRatioExceededError` when the window with this batch in it (or the
        batch alone, when it is larger than the window) is more than ``max_ratio`` poison and
        holds at least ``min(window, 50)`` records. Each record counts once: call it once per
        batch with every verdict in, or with ``record=False`` for an early look.
        """
        flags = [bool(p) for p in poison]
        if any(flags):
            keep = (self.window.maxlen or 1) - len(flags)
            seen = (list(self.window)[-keep:] if keep > 0 else []) + flags
            if len(seen) >= self.min_seen and sum(seen) / len(seen) > self.max_ratio:
                raise DlqRatioExceededError(
                    f"{sum(seen) / len(seen):.0%} of the last {len(seen)} records are poison "
                    f"(limit {self.max_ratio:.0%}): stopping instead of draining into the DLQ"
                )
        if record:
            self.window.extend(flags)

    def send(self, record: Any, error_type: str, error: str) -> Any:
        """Produce ``record`` (original key and bytes) to the DLQ; returns the send future."""
        headers = [
            ("error", error[:2000].encode()),
            ("error_type", error_type.encode()),
            ("source_topic", record.topic.encode()),
            ("source_partition", str(record.partition).encode()),
            ("source_offset", str(record.offset).encode()),
        ]
        if ORIGIN_HEADERS[0] in headers_of(record):  # a replayed record keeps its origin
            headers += origin_headers(origin_of(record))
        if self.metrics is not None:
            self.metrics.dlq.labels(error_type).inc()
        log.warning(
            "poison record to DLQ",
            extra={
                "error_type": error_type,
                "source_topic": record.topic,
                "source_partition": record.partition,
                "source_offset": record.offset,
            },
        )
        return self.producer.send(self.topic, key=record.key, value=record.value, headers=headers)


# --------------------------------------------------------------------------- fraudstream dlq


class DlqMissingError(Exception):
    """The DLQ topic does not exist."""


def read_all(bootstrap: str, topic: str, idle_timeout_s: float = 30.0) -> Iterator[Any]:
    """Every committed record of ``topic`` up to its end offsets at the start (no consumer
    group; ``read_committed``: the bridge writes dead letters in its transactions, and those of
    an aborted batch are sent again by the batch's next attempt)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        client_id="fraudstream-dlq",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        isolation_level="read_committed",
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise DlqMissingError(f"topic {topic} does not exist")
        parts = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)  # read_committed: the last stable offsets
        positions = {tp: consumer.position(tp) for tp in parts}
        progress = time.monotonic()
        while any(positions[tp] < end[tp] for tp in parts):
            # short polls: the last offsets may be transaction markers, which move the
            # position on without returning a record
            polled = consumer.poll(timeout_ms=500)
            for tp, records in polled.items():
                for record in records:
                    if record.offset < end[tp]:
                        yield record
            now = {tp: consumer.position(tp) for tp in parts}
            if now != positions:
                progress = time.monotonic()
            elif time.monotonic() - progress > idle_timeout_s:
                raise TimeoutError(f"no records from {topic} for {idle_timeout_s:.0f}s")
            positions = now
    finally:
        consumer.close(autocommit=False)


@dataclass
class DlqGroup:
    """Records of one error type from one source topic (no contents: they are personal)."""

    error_type: str
    source_topic: str
    count: int
    first_offset: str  # "partition:offset" in the DLQ topic of the earliest record
    last_offset: str  # ... and of the latest
    first_at: str  # when the earliest record was dead-lettered (UTC, ISO 8601)
    last_at: str


def summarize(records: Iterator[Any]) -> list[DlqGroup]:
    """Per (error_type, source_topic): count, first and last record (by DLQ timestamp)."""
    groups: dict[tuple[str, str], list[Any]] = {}  # key -> [count, first, last]
    for record in records:
        headers = headers_of(record)
        key = (headers.get("error_type", "?"), headers.get("source_topic", "?"))
        entry = (record.timestamp, record.partition, record.offset)
        if key not in groups:
            groups[key] = [1, entry, entry]
        else:
            group = groups[key]
            group[0] += 1
            group[1], group[2] = min(group[1], entry), max(group[2], entry)
    return [
        DlqGroup(
            error_type,
            source,
            count,
            f"{first[1]}:{first[2]}",
            f"{last[1]}:{last[2]}",
            _iso(first[0]),
            _iso(last[0]),
        )
        for (error_type, source), (count, first, last) in sorted(groups.items())
    ]


def _iso(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")


@dataclass
class ReplayReport:
    sent: Counter  # target topic -> records (would be) sent
    duplicates: int = 0  # the same original record dead-lettered more than once: sent once
    unknown_target: int = 0  # source topic is none of the pipeline's: left alone


def replay(
    bootstrap: str,
    dlq_topic: str,
    error_type: str,
    targets: set[str],
    dry_run: bool = False,
) -> ReplayReport:
    """Send the DLQ's ``error_type`` records back to their source topic (one of ``targets``),
    original key and bytes, headers ``origin_*``; each original record once."""
    from fraudstream.kafka_runner import make_producer, wait_delivered

    report = ReplayReport(Counter())
    seen: set[tuple[str, int, int]] = set()
    producer = None if dry_run else make_producer(bootstrap)
    futures: list[Any] = []
    try:
        for record in read_all(bootstrap, dlq_topic):
            headers = headers_of(record)
            if headers.get("error_type") != error_type:
                continue
            origin = _dead_letter_origin(headers)
            if origin is not None and origin in seen:
                report.duplicates += 1
                continue
            target = headers.get("source_topic", "")
            if target not in targets or origin is None:
                report.unknown_target += 1
                continue
            seen.add(origin)
            report.sent[target] += 1
            if producer is not None:
                futures.append(
                    producer.send(
                        target, key=record.key, value=record.value, headers=origin_headers(origin)
                    )
                )
                if len(futures) >= 10_000:
                    wait_delivered(producer, futures)
                    futures = []
        if producer is not None:
            wait_delivered(producer, futures)
    finally:
        if producer is not None:
            producer.close()
    return report


def _dead_letter_origin(headers: dict[str, str]) -> tuple[str, int, int] | None:
    """Where a DLQ record was first read: its ``origin_*`` headers, else its ``source_*``."""
    for prefix in ("origin", "source"):
        try:
            return (
                headers[f"{prefix}_topic"],
                int(headers[f"{prefix}_partition"]),
                int(headers[f"{prefix}_offset"]),
            )
        except (KeyError, ValueError):
            continue
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", default=None, help="default: $KAFKA_BOOTSTRAP_SERVERS")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", help="count the records per error type (never their contents)"
    )
    listing.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    again = actions.add_parser(
        "replay", help="send the records of one error type back to their source topic"
    )
    again.add_argument(
        "--reason", required=True, help="the error_type to replay, e.g. scorer_error"
    )
    again.add_argument("--dry-run", action="store_true", help="count what would be sent")


def run(args: argparse.Namespace) -> int:
    from fraudstream.logs import setup_logging
    from fraudstream.settings import KafkaSettings, LogSettings

    logs = LogSettings()
    setup_logging(logs.log_level, logs.log_format)
    kafka = KafkaSettings()
    bootstrap = args.bootstrap or kafka.kafka_bootstrap_servers
    try:
        if args.action == "list":
            groups = summarize(read_all(bootstrap, kafka.topic_dlq))
            print(_format_groups(groups, kafka.topic_dlq, as_json=args.json))
            return 0
        report = replay(
            bootstrap,
            kafka.topic_dlq,
            args.reason,
            {kafka.topic_transactions, kafka.topic_scoring, kafka.topic_labels},
            dry_run=args.dry_run,
        )
    except DlqMissingError as err:
        print(f"fraudstream dlq: {err}", file=sys.stderr)
        return 1
    print(_format_report(report, args.reason, args.dry_run))
    return 0


def _format_groups(groups: list[DlqGroup], topic: str, as_json: bool) -> str:
    if as_json:
        return json.dumps([asdict(g) for g in groups], indent=2)
    if not groups:
        return f"{topic}: empty"
    head = ("error_type", "source_topic", "count", "first_offset", "last_offset")
    rows = [head + ("first_at", "last_at")]
    rows += [
        (g.error_type, g.source_topic, str(g.count), g.first_offset, g.last_offset)
        + (g.first_at, g.last_at)
        for g in groups
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) + 2)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _format_report(report: ReplayReport, error_type: str, dry_run: bool) -> str:
    total = sum(report.sent.values())
    verb = "dry run: would replay" if dry_run else "replayed"
    where = ", ".join(f"{topic}: {n}" for topic, n in sorted(report.sent.items())) or "nothing"
    line = f"{verb} {total} record(s) with error_type {error_type} ({where})"
    if report.duplicates:
        line += f"; {report.duplicates} duplicate(s) of the same original record skipped"
    if report.unknown_target:
        line += f"; {report.unknown_target} from other topics left alone"
    return line
