"""A challenger in shadow: the bridge also sends each batch to a second scorer, best effort.

**Sending** (:class:`ShadowScorer`, in ``fraudstream bridge`` when ``SCORER_SHADOW_URL`` is set):
after the champion's batch is scored and published, its transactions are put on a bounded queue
(``BRIDGE_SHADOW_QUEUE_SIZE`` batches) without waiting; one background thread takes them off,
calls the challenger's ``POST /score_batch`` once with its own short timeout
(``SCORER_SHADOW_TIMEOUT_S``) and publishes the results, as the same
:class:`fraudstream.scored_transaction.ScoredTransaction` contract, to ``TOPIC_SCORING_SHADOW``
(``scoring.shadow``). The champion's path never waits for it and never fails because of it:

- the queue is full (the challenger is slower than the stream): the batch is dropped
  (``reason="queue_full"``);
- the challenger times out, is unreachable, answers anything but 200 or an answer that does not
  fit the contract: the batch is dropped (``timeout``, ``unreachable``, ``http_error``,
  ``bad_answer``), never retried;
- a result the broker does not take (``produce_error``), batches still queued at shutdown
  (``shutdown``).

Each drop counts its transactions in ``fraudstream_bridge_shadow_dropped_total{reason}``;
transactions published are counted in ``fraudstream_bridge_shadow_scored_total``.

Shadow results are **best effort**: plain (non-transactional, idempotent) sends, no retries, a
re-read batch is scored again (``scores_shadow`` keeps each id once). A second writer
(``WRITER_TABLE=scores_shadow``, ``TOPIC_SCORING=scoring.shadow``, its own group) stores them in
``scores_shadow`` (``migrations/0006_scores_shadow.sql``), pruned with ``scores``.

**Comparing** (:func:`compare`, ``fraudstream shadow compare --since 7d``): champion and
challenger on the same labelled transactions (``scores`` x ``scores_shadow`` x ``labels``): each
model's recall and false-positive rate at its own operating threshold (its ``fraud_flag``),
precision, and PR AUC (average precision over its scores).
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fraudstream.quality import parse_since_argument

log = logging.getLogger(__name__)

DROP_REASONS = (
    "queue_full",
    "timeout",
    "unreachable",
    "http_error",
    "bad_answer",
    "produce_error",
    "shutdown",
)
LOG_EVERY_S = 60.0  # a drop is logged at most once a minute per reason (the counter has all)
# one transaction of a shadow batch: its JSON body, and how to turn the challenger's result for
# it (and when it was scored) into the result contract
ShadowItem = tuple[bytes, str, Callable[[dict, datetime], Any]]


@dataclass
class ShadowMetrics:
    dropped: Any  # Counter, label reason
    scored: Any  # Counter
    latency: Any  # Histogram

    @classmethod
    def create(cls) -> ShadowMetrics:
        from prometheus_client import Counter, Histogram

        dropped = Counter(
            "fraudstream_bridge_shadow_dropped",
            "transactions not shadow-scored (queue full, challenger slow or broken, ...)",
            ["reason"],
        )
        for reason in DROP_REASONS:
            dropped.labels(reason)  # every series at 0 from the start
        return cls(
            dropped=dropped,
            scored=Counter(
                "fraudstream_bridge_shadow_scored",
                "transactions the challenger scored, published to the shadow topic",
            ),
            latency=Histogram(
                "fraudstream_bridge_shadow_request_seconds",
                "HTTP latency of the challenger's POST /score_batch",
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            ),
        )


class ShadowScorer:
    """A bounded queue and one worker thread that score batches on the challenger and publish
    the results; :meth:`submit` never blocks (see the module docstring)."""

    def __init__(
        self,
        url: str,
        producer: Any,
        topic: str,
        timeout_s: float = 2.0,
        queue_size: int = 4,
        metrics: ShadowMetrics | None = None,
    ) -> None:
        import httpx

        self._httpx = httpx
        self.url = url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 1.0)),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            headers={"content-type": "application/json"},
        )
        self.producer = producer
        self.topic = topic
        self.metrics = metrics
        self.queue: queue.Queue[list[ShadowItem]] = queue.Queue(maxsize=queue_size)
        self.stop = threading.Event()
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.scored = 0
        self._logged: dict[str, float] = {}  # reason -> when a drop was last logged
        self._partitions: list[int] = []
        self.thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self.thread.start()

    # ----------------------------------------------------------------- champion's side

    def submit(self, items: list[ShadowItem]) -> bool:
        """Queue a batch for the challenger without waiting; False (and counted) when the
        queue is full."""
        if not items:
            return True
        try:
            self.queue.put_nowait(items)
        except queue.Full:
            self._drop("queue_full", len(items))
            return False
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the worker (a call in flight ends within its timeout), count what is still
        queued as dropped, flush what was sent."""
        self.stop.set()
        self.thread.join(timeout_s)
        while True:
            try:
                self._drop("shutdown", len(self.queue.get_nowait()))
            except queue.Empty:
                break
        try:
            self.producer.flush(timeout=timeout_s)
        except Exception as err:  # noqa: BLE001 - best effort
            log.warning("shadow results not flushed: %r", err)
        self.producer.close(timeout=timeout_s)
        self.client.close()
        log.info("shadow scorer closed", extra={"scored": self.scored, "dropped": self.dropped})

    # ----------------------------------------------------------------- worker thread

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                items = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._score(items)
            except Exception:  # noqa: BLE001 - the shadow must never take the bridge down
                log.exception("shadow batch failed")
                self._drop("bad_answer", len(items))

    def _score(self, items: list[ShadowItem]) -> None:
        payload = b'{"transactions":[' + b",".join(body for body, _, _ in items) + b"]}"
        started = time.perf_counter()
        try:
            response = self.client.post("/score_batch", content=payload)
        except self._httpx.TimeoutException:
            self._drop("timeout", len(items))
            return
        except self._httpx.TransportError:
            self._drop("unreachable", len(items))
            return
        if self.metrics:
            self.metrics.latency.observe(time.perf_counter() - started)
        if response.status_code != 200:
            self._drop("http_error", len(items))
            return
        scored_at = datetime.now(UTC)
        try:
            results = response.json()
            if not isinstance(results, list) or len(results) != len(items):
                raise ValueError("not one result per transaction")
            by_id = {r.get("transaction_id"): r for r in results if isinstance(r, dict)}
            if all(tx_id in by_id for _, tx_id, _ in items):
                pairs = [(by_id[tx_id], finish) for _, tx_id, finish in items]
            else:
                pairs = list(zip(results, (finish for _, _, finish in items), strict=True))
            scored = [finish(result, scored_at) for result, finish in pairs]
        except Exception as err:  # noqa: BLE001 - not JSON, not the contract: not its API
            log.warning("challenger answer dropped: %r", err)
            self._drop("bad_answer", len(items))
            return
        if not self._partitions:
            self._partitions = sorted(self.producer.partitions_for(self.topic) or [])
        for result in scored:
            key = result.transaction_id.encode()
            future = self.producer.send(
                self.topic,
                key=key,
                value=result.model_dump_json().encode(),
                partition=self._partitions[zlib.crc32(key) % len(self._partitions)],
            )
            future.add_errback(lambda _err: self._drop("produce_error", 1))
        self.scored += len(scored)
        if self.metrics:
            self.metrics.scored.inc(len(scored))

    def _drop(self, reason: str, count: int) -> None:
        self.dropped[reason] += count
        if self.metrics:
            self.metrics.dropped.labels(reason).inc(count)
        now = time.monotonic()
        if now - self._logged.get(reason, -LOG_EVERY_S) >= LOG_EVERY_S:  # one line a minute
            self._logged[reason] = now
            log.warning(
                "shadow batch dropped (%s); %d transaction(s) dropped for this reason so far",
                reason,
                self.dropped[reason],
                extra={"reason": reason, "records": count},
            )


def from_settings(bootstrap: str, topic: str, settings: Any) -> ShadowScorer | None:
    """The bridge's shadow scorer from its settings (:class:`BridgeSettings`); None when
    ``SCORER_SHADOW_URL`` is empty."""
    if not settings.scorer_shadow_url:
        return None
    from fraudstream.kafka_runner import make_producer

    # plain sends (no transaction): shadow results are best effort; short waits on the broker
    producer = make_producer(
        bootstrap, request_timeout_ms=10000, delivery_timeout_ms=30000, max_block_ms=5000
    )
    return ShadowScorer(
        settings.scorer_shadow_url,
        producer,
        topic,
        timeout_s=settings.scorer_shadow_timeout_s,
        queue_size=settings.bridge_shadow_queue_size,
        metrics=ShadowMetrics.create(),
    )


# --------------------------------------------------------------------------- comparison


@dataclass
class ModelQuality:
    """One model on the labelled transactions both models scored."""

    model_versions: list[str]
    transactions: int
    frauds: int
    tp: int
    fp: int
    fn: int
    tn: int
    recall: float | None  # at its operating threshold (its fraud_flag)
    fpr: float | None
    precision: float | None
    pr_auc: float | None  # average precision over its scores


@dataclass
class ShadowComparison:
    since: datetime
    until: datetime
    champion: ModelQuality
    challenger: ModelQuality

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["since"], out["until"] = self.since.isoformat(), self.until.isoformat()
        return out

    def table(self) -> str:
        rows = [
            ("model", "champion", "challenger"),
            (
                "version",
                ",".join(self.champion.model_versions) or "-",
                ",".join(self.challenger.model_versions) or "-",
            ),
        ]
        for name in ("transactions", "frauds", "tp", "fp", "fn", "tn"):
            rows.append(
                (name, str(getattr(self.champion, name)), str(getattr(self.challenger, name)))
            )
        for name in ("recall", "fpr", "precision", "pr_auc"):
            rows.append(
                (name, _fmt(getattr(self.champion, name)), _fmt(getattr(self.challenger, name)))
            )
        width = [max(len(r[i]) for r in rows) for i in range(3)]
        span = f"{self.since:%Y-%m-%d %H:%M} .. {self.until:%Y-%m-%d %H:%M} UTC"
        lines = [f"labelled transactions the champion scored {span}"]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)) for r in rows]
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


COMPARE_SQL = """
SELECT c.score, c.fraud_flag, c.model_version, s.score, s.fraud_flag, s.model_version, l.is_fraud
FROM scores c
JOIN scores_shadow s ON s.transaction_id = c.transaction_id
JOIN labels l ON l.transaction_id = c.transaction_id
WHERE c.scored_at >= %(since)s AND c.scored_at < %(until)s AND l.is_fraud IS NOT NULL
ORDER BY c.scored_at DESC
LIMIT %(max_rows)s
"""


def compare(
    conn: Any, since: datetime, until: datetime | None = None, max_rows: int | None = None
) -> ShadowComparison:
    """Champion (``scores``) and challenger (``scores_shadow``) on the transactions both scored
    and that have a label (``labels``), the champion having scored them in [since, until); the
    ``max_rows`` most recently scored at most (all when None)."""
    until = until or datetime.now(UTC)
    with conn.cursor() as cur:
        cur.execute(COMPARE_SQL, {"since": since, "until": until, "max_rows": max_rows})
        rows = cur.fetchall()
    conn.rollback()  # end the read-only transaction: no snapshot held
    labels = [bool(r[6]) for r in rows]
    champion = quality([r[0] for r in rows], [r[1] for r in rows], labels, [r[2] for r in rows])
    challenger = quality([r[3] for r in rows], [r[4] for r in rows], labels, [r[5] for r in rows])
    return ShadowComparison(since, until, champion, challenger)


def quality(
    scores: Sequence[float],
    flags: Sequence[bool],
    labels: Sequence[bool],
    versions: Sequence[str] = (),
) -> ModelQuality:
    """Confusion matrix at the operating threshold (``flags``), rates, and PR AUC."""
    tp = sum(f and y for f, y in zip(flags, labels, strict=True))
    fp = sum(f and not y for f, y in zip(flags, labels, strict=True))
    fn = sum(not f and y for f, y in zip(flags, labels, strict=True))
    tn = len(labels) - tp - fp - fn
    return ModelQuality(
        model_versions=sorted(set(versions)),
        transactions=len(labels),
        frauds=tp + fn,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        recall=tp / (tp + fn) if tp + fn else None,
        fpr=fp / (fp + tn) if fp + tn else None,
        precision=tp / (tp + fp) if tp + fp else None,
        pr_auc=average_precision(scores, labels),
    )


def average_precision(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the precision-recall curve as average precision (sklearn's definition):
    sum over the distinct score thresholds, highest first, of (recall gained) x precision.
    None without a positive label."""
    positives = sum(labels)
    if not positives:
        return None
    pairs = sorted(zip(scores, labels, strict=True), key=lambda p: -p[0])
    tp = fp = 0
    ap = prev_recall = 0.0
    i = 0
    while i < len(pairs):
        threshold = pairs[i][0]
        while i < len(pairs) and pairs[i][0] == threshold:  # ties form one threshold
            tp += pairs[i][1]
            fp += not pairs[i][1]
            i += 1
        recall = tp / positives
        ap += (recall - prev_recall) * tp / (tp + fp)
        prev_recall = recall
    return ap


# --------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    cmp = actions.add_parser(
        "compare",
        help="champion vs challenger on the same labelled transactions (recall, FPR, PR AUC)",
    )
    cmp.add_argument(
        "--since",
        type=parse_since_argument,
        default=("7d", timedelta(days=7)),
        help="window of scored transactions, e.g. 30m, 12h, 7d (default: 7d)",
    )
    cmp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    cmp.add_argument("--database-url", help="default: $DATABASE_URL")


def run(args: argparse.Namespace) -> int:
    from fraudstream.database import read_for_command

    code, result = read_for_command(
        args.database_url,
        "shadow compare",
        "fraudstream-shadow",
        lambda conn: compare(conn, datetime.now(UTC) - args.since[1]),
    )
    if result is None:
        return code
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.table())
    return 0
