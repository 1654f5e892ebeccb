"""``fraudstream replay FILE.csv``: a CSV's transactions onto the ``transactions`` topic.

The file is read with the shared loader (:func:`fraudstream.loader.load_csv`, TETA or Kaggle
shape); every row is validated again as a :class:`fraudstream.schema.Transaction`, keeps the
file's own ``transaction_id`` (Kaggle's ``trans_num``) or gets one derived from its content
(:func:`fraudstream.identity.frame_transaction_ids`: the same file replayed again sends the same
ids, so the scorer and the writer count each transaction once; ``--fresh-ids`` sends random UUIDs
instead, for load tests that send a file more than once) and is produced as JSON keyed by the
card-holder key, so one holder's transactions stay in order in one partition.
``--rate`` paces the sending (transactions per second; 0 = as fast as possible); ``--limit``
stops after that many. A progress bar runs on a terminal; the last line counts sent (acknowledged
by Kafka) and rejected rows. :func:`replay_frame` is the same thing for the UI's upload.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
CHUNK = 2000


@dataclass
class ReplayResult:
    rows: int = 0  # rows considered (read from the file, up to --limit)
    sent: int = 0  # acknowledged by Kafka
    rejected: int = 0  # failed validation (the loader's or the schema's)
    failed: int = 0  # valid but not delivered
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # first few reasons, for people

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def transaction_message(tx: Any) -> tuple[bytes, bytes]:
    """(key, value) of one transaction: pseudonymous card key, TETA-shaped JSON without label."""
    from fraudstream.schema import TIME_FORMAT

    doc = tx.model_dump(exclude={"target"}, exclude_none=True)
    doc["transaction_time"] = tx.transaction_time.strftime(TIME_FORMAT)
    return tx.card_key.encode(), json.dumps(doc, separators=(",", ":")).encode()


class _Pacer:
    """Sleeps so that the n-th send happens no earlier than start + n / rate.

    Only sleeps once it is 10 ms ahead: a sleep per record would cost more than the send at
    a few hundred records a second, and 10 ms bursts are still a steady rate downstream.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()

    def wait(self, n: int) -> None:
        if self.rate <= 0:
            return
        due = self.start + n / self.rate
        delay = due - time.monotonic()
        if delay > 0.01:
            time.sleep(delay)


class _Progress:
    """A one-line bar on a terminal, a line every 10 s otherwise, nothing when disabled."""

    def __init__(self, total: int, enabled: bool, stream: Any = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.started = time.monotonic()
        self.last = 0.0

    def update(self, result: ReplayResult, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.last < (0.25 if self.tty else 10.0):
            return
        self.last = now
        done = result.sent + result.rejected + result.failed
        share = done / self.total if self.total else 1.0
        elapsed = max(now - self.started, 1e-9)
        bar = "#" * int(share * 30)
        line = (
            f"replay [{bar:<30}] {done:,}/{self.total:,} {share:4.0%} "
            f"{result.sent / elapsed:,.0f}/s sent {result.sent:,} rejected {result.rejected:,}"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def replay_frame(
    frame: pd.DataFrame,
    producer: Any,
    topic: str,
    *,
    rate: float = 0.0,
    limit: int | None = None,
    keep_ids: bool = True,
    fresh_ids: bool = False,
    result: ReplayResult | None = None,
    on_progress: Callable[[ReplayResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    metrics: Any = None,
) -> ReplayResult:
    """Produce the loader's ``frame`` (TETA columns) to ``topic``; return the counts.

    Ids: the frame's own ``transaction_id`` where it has one, else derived from the content
    (``keep_ids`` is kept for old callers: a source id always wins); ``fresh_ids``: random
    UUIDs for every row instead.
    """
    from pydantic import ValidationError

    from fraudstream.identity import frame_transaction_ids
    from fraudstream.loader import to_transactions

    result = result or ReplayResult()
    started = time.monotonic()
    pacer = _Pacer(rate)
    total = len(frame) if limit is None else min(limit, len(frame))
    ids = None if fresh_ids else frame_transaction_ids(frame.iloc[:total])

    def delivered(_meta: Any) -> None:
        result.sent += 1
        if metrics:
            metrics["sent"].inc()

    def failed(err: Exception) -> None:
        result.failed += 1
        if len(result.errors) < 20:
            result.errors.append(f"not delivered: {err!r}")
        if metrics:
            metrics["errors"].inc()

    queued = 0
    for begin in range(0, total, CHUNK):
        if should_stop and should_stop():
            break
        chunk = frame.iloc[begin : min(begin + CHUNK, total)]
        if ids is not None:
            chunk = chunk.assign(transaction_id=ids[begin : begin + len(chunk)])
        try:
            transactions = to_transactions(chunk)
        except ValidationError:
            transactions = []
            for pos in range(len(chunk)):  # find the bad rows one by one
                try:
                    transactions.extend(to_transactions(chunk.iloc[pos : pos + 1]))
                except ValidationError as err:
                    result.rejected += 1
                    if metrics:
                        metrics["rejected"].inc()
                    if len(result.errors) < 20:
                        result.errors.append(f"row {begin + pos + 1}: {err.errors()[0]['msg']}")
        # one urandom call per chunk: random UUID 4s without a system call each
        entropy = os.urandom(16 * len(transactions)) if fresh_ids else b""
        for i, tx in enumerate(transactions):
            if should_stop and should_stop():
                break
            if fresh_ids:
                tx.transaction_id = str(uuid.UUID(bytes=entropy[16 * i : 16 * i + 16], version=4))
            key, value = transaction_message(tx)
            pacer.wait(queued)
            future = producer.send(topic, key=key, value=value)
            future.add_callback(delivered)
            future.add_errback(failed)
            queued += 1
            result.rows += 1
            if on_progress:
                on_progress(result)
    producer.flush()
    result.seconds = time.monotonic() - started
    if on_progress:
        on_progress(result)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="CSV in the TETA or Kaggle shape")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="transactions/s; 0 = flat out (default $REPLAY_RATE)",
    )
    parser.add_argument("--limit", type=int, default=None, help="send at most N transactions")
    parser.add_argument(
        "--fresh-ids",
        action="store_true",
        help="a random transaction id for every row, even where the file has one"
        " (load tests that send a file more than once)",
    )
    # ids in the file are always kept now; the flag stays for old scripts
    parser.add_argument("--keep-ids", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--topic", default=None, help="default: $TOPIC_TRANSACTIONS")
    parser.add_argument("--bootstrap", default=None, help="default: $KAFKA_BOOTSTRAP_SERVERS")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from fraudstream.kafka_runner import make_producer, start_metrics_server
    from fraudstream.loader import DataError, load_csv, report_errors
    from fraudstream.logs import setup_logging
    from fraudstream.settings import KafkaSettings, LogSettings, ReplaySettings

    logs = LogSettings()
    setup_logging(logs.log_level, logs.log_format)
    kafka = KafkaSettings()
    settings = ReplaySettings()
    rate = settings.replay_rate if args.rate is None else args.rate
    topic = args.topic or kafka.topic_transactions

    metrics = None
    if settings.metrics_port:
        from prometheus_client import Counter

        metrics = {
            "sent": Counter("fraudstream_replay_sent", "transactions acknowledged by Kafka"),
            "rejected": Counter("fraudstream_replay_rejected", "rows failing validation"),
            "errors": Counter("fraudstream_replay_errors", "transactions not delivered"),
        }
        start_metrics_server(settings.metrics_port)

    try:
        loaded = load_csv(args.file)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if loaded.errors:
        print(report_errors(loaded, limit=5), file=sys.stderr)
    skipped = len({e.line for e in loaded.errors})
    rows = len(loaded.frame) if args.limit is None else min(args.limit, len(loaded.frame))

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    result = ReplayResult(rejected=skipped)
    if metrics and skipped:
        metrics["rejected"].inc(skipped)
    progress = _Progress(rows + skipped, enabled=not args.no_progress)
    producer = make_producer(args.bootstrap or kafka.kafka_bootstrap_servers)
    try:
        replay_frame(
            loaded.frame,
            producer,
            topic,
            rate=rate,
            limit=args.limit,
            fresh_ids=args.fresh_ids,
            result=result,
            on_progress=progress.update,
            should_stop=stop.is_set,
            metrics=metrics,
        )
    finally:
        producer.close()
    progress.update(result, final=True)
    for line in result.errors[:5]:
        print(f"  {line}", file=sys.stderr)
    print(
        f"sent {result.sent:,}, rejected {result.rejected:,}"
        + (f", not delivered {result.failed:,}" if result.failed else "")
        + f" to {topic} in {result.seconds:.1f} s ({result.rate:,.0f}/s)",
        flush=True,
    )
    return 1 if result.failed else 0
