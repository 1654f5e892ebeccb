"""``fraudstream bridge``: transactions -> scorer ``POST /score_batch`` -> scoring (+ DLQ).

One consumer group on ``transactions``. For each batch (``BRIDGE_BATCH_SIZE`` records or
``BRIDGE_BATCH_MAX_WAIT_MS`` after the first) the step:

1. parses and validates every record with :class:`fraudstream.schema.Transaction`; records that
   can never succeed (not JSON, failing validation) go to the DLQ (:mod:`fraudstream.dlq`) with
   their original bytes, the reason and the source offset;
2. scores the rest in one HTTP call (pooled connections, timeouts). The scorer's answer decides:

   - refused, timed out, 408/429/502/503/504: it is busy or away; wait with exponential backoff
     and try again, for as long as it takes;
   - 4xx with the scorer's own ``reason`` (``{error, field, reason}``): a record is bad; halve
     the batch until it is found, it goes to the DLQ as ``scorer_rejected``;
   - any other error (e.g. 500) ``SCORER_MAX_ATTEMPTS`` times in a row for the same batch: a
     record may make the scorer fail; halve the batch until it is found, it goes to the DLQ as
     ``scorer_error``;
   - 401/403/404/405/415, a redirect, a 4xx without ``reason``, a malformed answer (one that
     does not fit the result contract too): this is not our scorer or not its API (a broken
     deployment); stop with exit code 4, nothing skipped.

   A record is blamed only when the scorer still scores a known-good transaction (the last one
   it accepted, re-scored: idempotent on its id); if it fails that too, the scorer is broken and
   the bridge waits; if it rejects it too, the deployment is, and the bridge stops (exit 4);
3. produces one result per transaction to ``scoring`` (key = transaction_id; the value is a
   :class:`fraudstream.scored_transaction.ScoredTransaction` as JSON) and waits until every
   record is acknowledged (acks=all, idempotent producer).

Poison of both kinds counts once per record in the DLQ ratio guard, judged before anything is
sent. Only then are the batch's offsets marked done; :mod:`fraudstream.kafka_runner` commits
them. With ``BRIDGE_TRANSACTIONS`` (the default) the batch is one Kafka transaction: results,
DLQ records and the input offsets are committed together, so a crash anywhere re-scores the
batch but ``read_committed`` readers see its results once. Without it a crash between 3 and
the commit can publish a batch's results twice; the scorer is idempotent on ``transaction_id``
and the writer's insert ignores ids it already has, so ``scores`` holds them once either way.

With ``SCORER_SHADOW_URL`` each scored batch is also handed to a challenger scorer in the
background (:mod:`fraudstream.shadow`): best effort, never waited for, dropped and counted when
the challenger is slow or broken.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fraudstream import health
from fraudstream.kafka_runner import (
    ConsumerHaltError,
    ConsumerParts,
    ShutdownRequestedError,
    backoff_delays,
)
from fraudstream.scored_transaction import ScoredTransaction

if TYPE_CHECKING:
    from fraudstream.settings import BridgeSettings

log = logging.getLogger(__name__)

# Namespace for ids derived from (topic, partition, offset) when a record carries none: the same
# record always gets the same id, so a re-read does not create a second row.
_ID_NAMESPACE = uuid.UUID("6f1c4e2a-9b7d-4c53-8e1f-2a7b9c0d4e51")
# The scorer is busy, restarting or behind a proxy that is: try again later, forever.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 502, 503, 504})
# Not the scorer, not allowed, or not its API: no record can change that.
DEPLOYMENT_STATUSES = frozenset({401, 403, 404, 405, 407, 415})
# Scored when nothing else has been yet, to tell "the scorer is broken" from "a record breaks it".
CANARY_ID = "fraudstream-bridge-canary"


class ScorerRejectedError(Exception):
    """The scorer refused the input with a 4xx carrying its own ``reason``: a record is bad and
    retrying it cannot help."""

    def __init__(self, status: int, field: str, reason: str) -> None:
        super().__init__(f"scorer answered {status} ({reason}) for {field}")
        self.status = status
        self.field = field
        self.reason = reason


class ScorerFailedError(Exception):
    """The scorer failed on the same input (a non-transient error such as 500) every time."""

    def __init__(self, status: int, attempts: int) -> None:
        super().__init__(f"scorer answered {status} {attempts} time(s) in a row")
        self.status = status
        self.attempts = attempts


class ScorerDeploymentError(ConsumerHaltError):
    """The scorer refuses every call for reasons no record can fix (wrong URL, credentials, API):
    stop (exit code 4) without committing or dead-lettering anything."""

    exit_code = 4
    error_type = "scorer_misconfigured"


class ScorerClient:
    """``POST /score_batch`` with pooled connections, timeouts and patient retries."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float,
        backoff_max_s: float,
        stop: threading.Event,
        max_connections: int = 4,
        metrics: BridgeMetrics | None = None,
    ) -> None:
        import httpx

        self._httpx = httpx
        self.client = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 3.0)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"content-type": "application/json"},
        )
        self.backoff_max_s = backoff_max_s
        self.stop = stop
        self.metrics = metrics

    def close(self) -> None:
        self.client.close()

    def pause(self, seconds: float) -> None:
        """Wait ``seconds``; :class:`ShutdownRequestedError` when shutdown is requested."""
        health.beat()  # waiting for the scorer on purpose is progress (/healthz)
        if self.stop.wait(seconds):
            raise ShutdownRequestedError("shutdown while waiting for the scorer")

    def score_batch(self, bodies: list[bytes], max_attempts: int | None = None) -> list[dict]:
        """Scores for the transaction JSON documents ``bodies``, in order.

        Transient failures are retried for as long as it takes. Raises
        :class:`ScorerRejectedError` on a record-level 4xx, :class:`ScorerFailedError` after
        ``max_attempts`` other errors in a row (None: never), :class:`ScorerDeploymentError`
        when the answer shows a broken deployment, and :class:`ShutdownRequestedError` when
        shutdown is requested while waiting.
        """
        payload = b'{"transactions":[' + b",".join(bodies) + b"]}"
        delays = backoff_delays(0.1, self.backoff_max_s)
        attempt = failures = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            status = 0
            try:
                response = self.client.post("/score_batch", content=payload)
            except self._httpx.TransportError as err:  # refused, reset, timeout
                problem, kind = type(err).__name__, "scorer_unreachable"
            else:
                if self.metrics:
                    self.metrics.http_latency.observe(time.perf_counter() - started)
                status = response.status_code
                if status == 200:
                    if attempt > 1:
                        log.info("scorer answered again after %d attempts", attempt)
                    return _results(response, len(bodies))
                problem, kind = f"HTTP {status}", f"scorer_http_{status}"
            if self.metrics:
                self.metrics.errors.labels(kind).inc()
            if status and status not in TRANSIENT_STATUSES:
                if status < 500:
                    raise _refusal(response)
                failures += 1
                if max_attempts is not None and failures >= max_attempts:
                    raise ScorerFailedError(status, failures)
            if self.metrics:
                self.metrics.retries.inc()
            delay = next(delays)
            if attempt == 1 or attempt % 10 == 0:
                log.warning(
                    "scorer call failed (%s); retrying in %.1fs",
                    problem,
                    delay,
                    extra={"attempt": attempt},
                )
            if self.stop.wait(delay):
                raise ShutdownRequestedError("shutdown while waiting for the scorer")


def _refusal(response: Any) -> Exception:
    """What an answer other than 200 and 5xx means: a record-level rejection only when it is a
    4xx with the scorer's own ``reason`` (the rest of its body is never copied: it could echo
    input)."""
    status = response.status_code
    if 400 <= status < 500 and status not in DEPLOYMENT_STATUSES:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("reason"), str) and body["reason"]:
            field = body.get("field")
            return ScorerRejectedError(
                status, field[:200] if isinstance(field, str) else "?", body["reason"][:100]
            )
    return ScorerDeploymentError(
        f"the scorer answered {status} to POST /score_batch, which no record can cause "
        "(wrong SCORER_URL, credentials, proxy or API version?)"
    )


def _results(response: Any, expected: int) -> list[dict]:
    try:
        results = response.json()
    except ValueError:
        results = None
    if not isinstance(results, list) or len(results) != expected:
        got = f"{len(results)} results" if isinstance(results, list) else "no JSON array"
        raise ScorerDeploymentError(
            f"the scorer answered 200 with {got} for {expected} transactions (not its API?)"
        )
    return results


@dataclass
class BridgeMetrics:
    errors: Any
    retries: Any
    http_latency: Any


@dataclass
class _Valid:
    index: int  # position in the batch
    record: Any
    body: bytes
    tx: Any  # Transaction
    transaction_id: str


Scored = list[tuple[_Valid, dict]]  # (item, the scorer's result)
Failed = list[tuple[_Valid, str, str]]  # (item, error_type, error) for the DLQ


class BridgeStep:
    """The business step of the bridge: ``step(records)`` scores and publishes one batch."""

    def __init__(
        self,
        scorer: ScorerClient,
        producer: Any,
        scoring_topic: str,
        dead_letters: Any,  # dlq.DeadLetters
        metrics: Any = None,  # kafka_runner.ConsumerMetrics
        max_attempts: int = 5,
        shadow: Any = None,  # shadow.ShadowScorer: the challenger, best effort
    ) -> None:
        from fraudstream.schema import EXAMPLE_TRANSACTION, Transaction

        self.shadow = shadow

        self.Transaction = Transaction
        self.scorer = scorer
        self.producer = producer
        self.scoring_topic = scoring_topic
        self.dlq = dead_letters
        self.metrics = metrics
        self.max_attempts = max(1, max_attempts)
        # a transaction the scorer is known to accept: the last one it did (re-scoring it
        # changes nothing, the scorer is idempotent on its id), the schema's example until then
        self.canary = json.dumps({**EXAMPLE_TRANSACTION, "transaction_id": CANARY_ID}).encode()

    def parse(self, index: int, record: Any) -> _Valid | tuple[str, str]:
        """A valid transaction, or (error_type, error) for a poison record."""
        from pydantic import ValidationError

        from fraudstream.dlq import origin_of
        from fraudstream.schema import validation_poison

        value = record.value
        if value is None:
            return ("empty", "record has no value")
        try:
            tx = self.Transaction.model_validate_json(value)
        except ValidationError as err:
            return validation_poison(err)
        body = value
        if not tx.transaction_id:
            # from where the record was first read, so a replay from the DLQ gets the same id
            topic, partition, offset = origin_of(record)
            tx_id = str(uuid.uuid5(_ID_NAMESPACE, f"{topic}:{partition}:{offset}"))
            tx.transaction_id = tx_id
            doc = json.loads(value)
            doc["transaction_id"] = tx_id
            body = json.dumps(doc).encode()
        return _Valid(index, record, body, tx, tx.transaction_id)

    def __call__(self, records: list[Any]) -> None:
        valid: list[_Valid] = []
        poison: dict[int, tuple[str, str]] = {}  # batch position -> (error_type, error)
        for index, record in enumerate(records):
            parsed = self.parse(index, record)
            if isinstance(parsed, _Valid):
                valid.append(parsed)
            else:
                poison[index] = parsed
        # A batch of garbage stops here, before the scorer sees it.
        self.dlq.check([i in poison for i in range(len(records))], record=False)

        results, failed = self._score(valid)
        for item, error_type, error in failed:
            poison[item.index] = (error_type, error)
        scored_at = datetime.now(UTC)
        scored = [self._scored(item, result, scored_at) for item, result in results]
        # The guard, each record counted once, before any side effect: a batch that trips it
        # stays uncommitted.
        self.dlq.check([i in poison for i in range(len(records))])
        futures = [self.dlq.send(records[i], *poison[i]) for i in sorted(poison)]

        # Keys are unique ids, so any stable hash spreads them; crc32 is C, murmur2 here is not.
        partitions = sorted(self.producer.partitions_for(self.scoring_topic))
        for result in scored:
            key = result.transaction_id.encode()
            futures.append(
                self.producer.send(
                    self.scoring_topic,
                    key=key,
                    value=result.model_dump_json().encode(),
                    partition=partitions[zlib.crc32(key) % len(partitions)],
                )
            )
        from fraudstream.kafka_runner import wait_delivered

        wait_delivered(self.producer, futures)
        if self.metrics:
            self.metrics.messages_out.inc(len(scored))
        if self.shadow is not None:  # queued, never waited for (fraudstream.shadow)
            self.shadow.submit(
                [(i.body, i.transaction_id, functools.partial(self._scored, i)) for i, _ in results]
            )

    def _scored(self, item: _Valid, result: dict, scored_at: datetime) -> ScoredTransaction:
        """The result contract for ``item``: the scorer's answer and the transaction's
        non-personal fields. An answer that does not fit it is no record's fault: the scorer is
        not ours or not its API (:class:`ScorerDeploymentError`)."""
        from pydantic import ValidationError

        tx = item.tx
        try:
            return ScoredTransaction(
                transaction_id=item.transaction_id,
                score=result.get("score"),
                fraud_flag=result.get("fraud_flag"),
                threshold=result.get("threshold"),
                model_version=result.get("model_version"),
                reasons=result.get("reasons") or [],
                amount=tx.amount,
                category=tx.cat_id,
                merchant=tx.merch,
                event_time=tx.transaction_time,
                produced_at=datetime.fromtimestamp(item.record.timestamp / 1000, UTC),
                scored_at=scored_at,
            )
        except ValidationError as err:
            errors = err.errors(include_url=False, include_input=False)
            fields = ", ".join(sorted({str(e["loc"][0]) for e in errors if e["loc"]}))
            raise ScorerDeploymentError(
                f"the scorer answered 200 with a result that does not fit the result contract "
                f"({fields}): not its API?"
            ) from err

    def _score(self, items: list[_Valid]) -> tuple[Scored, Failed]:
        """Score ``items`` with the full retry budget; find the records to blame if it fails.

        The scorer is first asked to score a known-good transaction (:meth:`_canary`): if it
        fails that too, it is broken, not the records, and the batch waits and is tried again;
        if it rejects that too, the deployment is broken (:class:`ScorerDeploymentError`).
        """
        if not items:
            return [], []
        while True:
            try:
                return self._call(items, self.max_attempts), []
            except ScorerRejectedError as err:
                error_type, error = "scorer_rejected", str(err)
            except ScorerFailedError as err:
                error_type, error = "scorer_error", str(err)
            canary = self._canary()
            if canary == "rejected":
                raise ScorerDeploymentError(
                    "the scorer also rejects a transaction it accepted before (or the schema's "
                    "example): its schema or API does not match this bridge"
                )
            if canary == "ok":
                break
            log.warning(
                "the scorer fails a known-good transaction too (%s): it is broken, not the "
                "records; waiting %.0fs",
                error,
                self.scorer.backoff_max_s,
            )
            self.scorer.pause(self.scorer.backoff_max_s)
        if len(items) == 1:
            return [], [(items[0], error_type, error)]
        return self._bisect(items)

    def _bisect(self, items: list[_Valid]) -> tuple[Scored, Failed]:
        """Halve a batch the scorer refused until the records it refuses are found: halves get
        one attempt each (a failure only means "halve again"), single records the full budget
        and the known-good check of :meth:`_score`."""
        mid = len(items) // 2
        scored: Scored = []
        failed: Failed = []
        for half in (items[:mid], items[mid:]):
            if len(half) == 1:
                ok, bad = self._score(half)
            else:
                try:
                    ok, bad = self._call(half, 1), []
                except (ScorerRejectedError, ScorerFailedError):
                    ok, bad = self._bisect(half)
            scored += ok
            failed += bad
        return scored, failed

    def _canary(self) -> str:
        """How the scorer answers a transaction it accepted before: "ok", "rejected" or
        "failed" (transient failures are waited out; a broken deployment raises)."""
        try:
            self.scorer.score_batch([self.canary], max_attempts=1)
        except ScorerRejectedError:
            return "rejected"
        except ScorerFailedError:
            return "failed"
        return "ok"

    def _call(self, items: list[_Valid], max_attempts: int) -> Scored:
        """One ``score_batch`` call; (item, result) pairs in input order."""
        results = self.scorer.score_batch([i.body for i in items], max_attempts=max_attempts)
        self.canary = items[0].body
        by_id = {r.get("transaction_id"): r for r in results}
        if all(i.transaction_id in by_id for i in items):
            return [(i, by_id[i.transaction_id]) for i in items]
        # Ids don't match (a scorer that rewrites ids): fall back to input order.
        log.warning("scorer results do not carry the input ids; using input order")
        return list(zip(items, results, strict=True))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scorer-url", help="default: $SCORER_URL")
    parser.add_argument("--metrics-port", type=int, help="default: $METRICS_PORT (9101)")


def run(args: argparse.Namespace) -> int:
    from fraudstream.kafka_runner import run_consumer
    from fraudstream.settings import BridgeSettings, KafkaSettings

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    kafka = KafkaSettings()
    settings = BridgeSettings()
    scorer_url = args.scorer_url or settings.scorer_url

    def build(parts: ConsumerParts) -> tuple[BridgeStep, list[Any]]:
        from prometheus_client import Counter, Histogram

        from fraudstream.shadow import from_settings as shadow_from_settings

        bridge_metrics = BridgeMetrics(
            errors=parts.metrics.errors,
            retries=Counter("fraudstream_bridge_scorer_retries", "scorer calls retried"),
            http_latency=Histogram(
                "fraudstream_bridge_scorer_request_seconds",
                "HTTP latency of POST /score_batch",
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            ),
        )
        scorer = ScorerClient(
            scorer_url,
            timeout_s=settings.scorer_timeout_s,
            backoff_max_s=settings.scorer_backoff_max_s,
            stop=parts.stop,
            max_connections=settings.scorer_max_connections,
            metrics=bridge_metrics,
        )
        step = BridgeStep(
            scorer,
            parts.producer,
            kafka.topic_scoring,
            parts.dead_letters,
            parts.metrics,
            max_attempts=settings.scorer_max_attempts,
            shadow=shadow_from_settings(
                kafka.kafka_bootstrap_servers, kafka.topic_scoring_shadow, settings
            ),
        )
        return step, [scorer] + ([step.shadow] if step.shadow else [])

    return run_consumer(
        "bridge",
        kafka.topic_transactions,
        build,
        group_id=settings.bridge_group_id,
        group_instance_id=settings.bridge_group_instance_id,
        batch_size=settings.bridge_batch_size,
        batch_max_wait_ms=settings.bridge_batch_max_wait_ms,
        commit_interval_ms=settings.bridge_commit_interval_ms,
        metrics_port=args.metrics_port if args.metrics_port is not None else settings.metrics_port,
        transactional_id=transactional_id(settings) if settings.bridge_transactions else "",
        transaction_timeout_ms=settings.bridge_transaction_timeout_ms,
        topic_out=kafka.topic_scoring,
        scorer_url=scorer_url,
        scorer_shadow_url=settings.scorer_shadow_url,
    )


def transactional_id(settings: BridgeSettings) -> str:
    """This bridge's transactional id: ``<group>-<BRIDGE_GROUP_INSTANCE_ID>`` when set (stable
    across restarts: the restarted process aborts what its predecessor left open at once), else
    ``<group>-<host name>-<pid>`` (unique per process; a pod restarted in place keeps both, a new
    pod's predecessor's open transaction ends after ``BRIDGE_TRANSACTION_TIMEOUT_MS``)."""
    import os
    import socket

    instance = settings.bridge_group_instance_id or f"{socket.gethostname()}-{os.getpid()}"
    return f"{settings.bridge_group_id}-{instance}"
