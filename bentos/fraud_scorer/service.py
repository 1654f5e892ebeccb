"""The fraud scorer: a BentoML 1.4 service around the CatBoost fraud model.

    POST /score        one transaction (flat TETA JSON)          -> one ScoreResult
    POST /score_batch  {"transactions": [...]} (1..MAX_BATCH_SIZE) -> [ScoreResult, ...] in order

Concurrent ``/score`` calls are merged into one scoring call without waiting to gather them
(:class:`fraudstream.call_merger.CallMerger`), so many single-transaction requests become one
model call and one history round trip. Bodies are parsed and validated by
:class:`RequestGate` (an ASGI middleware) before BentoML sees them, so bad input gets a 4xx
``{"error", "field", "reason"}`` naming the field, is counted in
``fraudstream_scorer_rejected_requests_total``, never reaches a log (personal fields), and never
enters a batch. Configuration: :class:`fraudstream.settings.ScorerSettings` (environment).

Run from the repository root: ``bentoml serve bentos.fraud_scorer.service:FraudScorer``
(or ``make serve``); build with ``bentoml build -f bentos/fraud_scorer/bentofile.yaml .``.
"""

from __future__ import annotations

import collections
import functools
import inspect
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import bentoml
from _bentoml_sdk.io_models import IORootModel
from bentoml.exceptions import ServiceUnavailable
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from fraudstream.call_merger import CallMerger, MergerOverloadedError
from fraudstream.drift import DriftReference, DriftWindow
from fraudstream.identity import transaction_id_of
from fraudstream.schema import CATEGORIES, EXAMPLE_TRANSACTION, Transaction, error_message
from fraudstream.scoring import ScoreResult
from fraudstream.settings import DatabaseSettings, LogSettings, ScorerSettings

if TYPE_CHECKING:
    import numpy as np
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("fraudstream.scorer")

SETTINGS = ScorerSettings()
DATABASE_URL = DatabaseSettings().database_url

SCORE_ROUTE = "/score"
BATCH_ROUTE = "/score_batch"
# request bodies larger than this are refused unread (413); a transaction is < 2 kB of JSON
MAX_SCORE_BYTES = 16 * 1024
MAX_BATCH_BYTES = 4096 * SETTINGS.max_batch_size + 1024
# batch bodies larger than this are validated in a worker thread, not on the event loop
THREAD_PARSE_BYTES = 64 * 1024
PARSED_KEY = "fraudstream.parsed"  # where the gate leaves the validated input in the ASGI scope

# OpenTelemetry middleware skips these (it costs ~10 % of a small request's CPU)
UNTRACED = ["/livez", "/readyz", "/metrics"]
if not SETTINGS.trace_requests:
    UNTRACED += [SCORE_ROUTE, BATCH_ROUTE]

SCORE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class ScorerMetrics:
    """Our Prometheus metrics (BentoML's own ``bentoml_service_*`` ones come for free)."""

    score: Any
    fraud_flags: Any
    transactions: Any
    model_info: Any
    rejected: Any
    merged: Any
    psi: Any


MERGED_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@functools.cache
def metrics() -> ScorerMetrics:
    """Created on first use, inside the worker: BentoML sets ``PROMETHEUS_MULTIPROC_DIR`` only
    after importing this module, and prometheus_client must see it at import time."""
    import prometheus_client as prom

    return ScorerMetrics(
        score=prom.Histogram(
            "fraudstream_scorer_score",
            "Fraud scores returned (one observation per scored transaction)",
            ["endpoint"],
            buckets=SCORE_BUCKETS,
        ),
        fraud_flags=prom.Counter(
            "fraudstream_scorer_fraud_flags",
            "Transactions flagged as fraud, by merchant category",
            ["endpoint", "category"],
        ),
        transactions=prom.Counter(
            "fraudstream_scorer_transactions",
            "Transactions scored, by merchant category",
            ["endpoint", "category"],
        ),
        model_info=prom.Gauge(
            "fraudstream_scorer_model_info",
            "The model being served (value 1); labels carry its version and threshold",
            ["model_version", "threshold"],
            multiprocess_mode="livemax",
        ),
        rejected=prom.Counter(
            "fraudstream_scorer_rejected_requests",
            "Requests refused before scoring, by reason",
            ["endpoint", "reason"],
        ),
        merged=prom.Histogram(
            "fraudstream_scorer_merged_calls",
            "POST /score calls merged into one scoring call",
            buckets=MERGED_BUCKETS,
        ),
        psi=prom.Gauge(
            "fraudstream_scorer_psi",
            "Population stability index of the score / a top feature over the last DRIFT_WINDOW "
            "scored transactions against the model's training reference (worst worker)",
            ["feature"],
            multiprocess_mode="livemax",
        ),
    )


def drift_window_of(
    metadata: dict[str, Any], feature_names: list[str], version: str
) -> DriftWindow | None:
    """The model's :class:`DriftWindow` (``DRIFT_WINDOW`` transactions), or None with a log
    line: a model saved without a drift reference (older ones) is served without PSI gauges."""
    if not SETTINGS.drift_window:
        return None
    try:
        reference = DriftReference.from_metadata(metadata)
        if reference is not None:
            return DriftWindow(reference, feature_names, SETTINGS.drift_window)
        log.warning("model %s has no drift reference: no PSI gauges (retrain to get them)", version)
    except ValueError as err:
        log.warning("model %s: unusable drift reference, no PSI gauges: %s", version, err)
    return None


# --------------------------------------------------------------------------- input validation


class BatchRequest(BaseModel):
    """Body of ``POST /score_batch``."""

    model_config = ConfigDict(extra="forbid")

    transactions: list[Transaction] = Field(
        min_length=1,
        max_length=SETTINGS.max_batch_size,
        description=f"1 to {SETTINGS.max_batch_size} transactions; results come in this order",
    )


@dataclass(frozen=True)
class Rejection:
    """Why a request body cannot be scored; becomes a 4xx JSON answer."""

    status: int
    reason: str
    field: str
    message: str
    errors: tuple[dict[str, str], ...] = ()

    def response(self) -> Response:
        body: dict[str, Any] = {
            "error": self.message,
            "field": self.field,
            "reason": self.reason,
        }
        if len(self.errors) > 1:
            body["errors"] = list(self.errors)
        return Response(json.dumps(body), status_code=self.status, media_type="application/json")


_TYPE_ERRORS = ("_type", "_parsing")


def rejection_from(error: ValidationError, batch: bool) -> Rejection:
    """The first problem of a validation error, as a Rejection that names the field.

    Built only from pydantic's location, type and message, never from the input value, so a
    rejection can be returned and logged without leaking personal fields.
    """
    details = error.errors(include_url=False, include_input=False)  # context: bounds, no input
    listed = tuple(
        {"field": _field_name(d["loc"]), "message": error_message(d)} for d in details[:20]
    )
    first = details[0]
    field, kind, msg = _field_name(first["loc"]), first["type"], error_message(first)
    status = 400
    if kind == "json_invalid":
        reason, field = "invalid_json", "body"
    elif batch and first["loc"] == ("transactions",) and kind == "too_short":
        reason = "empty_batch"
    elif batch and first["loc"] == ("transactions",) and kind == "too_long":
        reason, status = "batch_too_large", 413
    elif kind == "missing":
        reason = "missing_field"
    elif kind == "extra_forbidden":
        reason = "unknown_field"
    elif kind in ("model_type", "model_attributes_type", "dict_type") and not first["loc"]:
        reason, field, msg = "invalid_type", "body", "the body must be a JSON object"
    elif kind.endswith(_TYPE_ERRORS):
        reason = "invalid_type"
    else:
        reason = "invalid_value"
    return Rejection(status, reason, field, f"{field}: {msg}", listed)


def _field_name(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def parse_transaction(body: bytes) -> list[Transaction] | Rejection:
    """A ``/score`` body -> [Transaction] (a batch of one, as the batcher wants) or why not."""
    try:
        return [Transaction.model_validate_json(body)]
    except ValidationError as err:
        return rejection_from(err, batch=False)


def parse_batch(body: bytes) -> BatchRequest | Rejection:
    """A ``/score_batch`` body -> BatchRequest, or why not."""
    try:
        return BatchRequest.model_validate_json(body)
    except ValidationError as err:
        return rejection_from(err, batch=True)


@dataclass(frozen=True)
class _Route:
    endpoint: str
    max_bytes: int
    parse: Callable[[bytes], Any]


ROUTES: dict[str, _Route] = {
    SCORE_ROUTE: _Route("score", MAX_SCORE_BYTES, parse_transaction),
    BATCH_ROUTE: _Route("score_batch", MAX_BATCH_BYTES, parse_batch),
}


class RequestGate:
    """ASGI middleware in front of the scoring APIs: size, media type, JSON and schema checks.

    A valid body is parsed once and handed to the API through the ASGI scope; an invalid one
    is answered here with a 4xx naming the field.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = ROUTES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        outcome = await self._read_and_parse(scope, receive, route)
        if isinstance(outcome, Rejection):
            metrics().rejected.labels(route.endpoint, outcome.reason).inc()
            await outcome.response()(scope, receive, send)
            return
        scope[PARSED_KEY] = outcome
        await self.app(scope, _empty_body, send)

    async def _read_and_parse(self, scope: Scope, receive: Receive, route: _Route) -> Any:
        headers = dict(scope.get("headers") or ())
        media_type = headers.get(b"content-type", b"application/json").split(b";")[0].strip()
        if media_type and media_type != b"application/json" and not media_type.endswith(b"+json"):
            return Rejection(
                415,
                "unsupported_media_type",
                "content-type",
                "content-type: the body must be application/json",
            )
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > route.max_bytes:
            return _too_large(route)
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                return Rejection(400, "disconnected", "body", "body: the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > route.max_bytes:
                return _too_large(route)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if not body.strip():
            return Rejection(400, "invalid_json", "body", "body: expected a JSON object")
        if size > THREAD_PARSE_BYTES:
            import anyio.to_thread

            return await anyio.to_thread.run_sync(route.parse, body)
        return route.parse(body)


def _too_large(route: _Route) -> Rejection:
    return Rejection(413, "body_too_large", "body", f"body: larger than {route.max_bytes} bytes")


async def _empty_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _parsed(request: Request, parse: Callable[[bytes], Any]) -> Any:
    """The gate's result, or (when the gate is not installed) a parse of the body here."""
    if PARSED_KEY in request.scope:
        return request.scope[PARSED_KEY]
    outcome = parse(await request.body())
    if isinstance(outcome, Rejection):  # BentoML answers InvalidArgument with a 400
        raise bentoml.exceptions.InvalidArgument(outcome.message)
    return outcome


# --------------------------------------------------------------------------- HTTP I/O specs


def openapi30(schema: Any) -> Any:
    """Rewrite pydantic's JSON Schema (2020-12) into the OpenAPI 3.0 dialect BentoML declares:
    numeric ``exclusiveMinimum``/``exclusiveMaximum`` become ``minimum`` + boolean, and a
    ``{"type": "null"}`` alternative becomes ``nullable``."""
    if isinstance(schema, list):
        return [openapi30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: openapi30(value) for key, value in schema.items()}
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(bound)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[plain], out[bound] = value, True
    alternatives = out.get("anyOf")
    if isinstance(alternatives, list) and {"type": "null"} in alternatives:
        rest = [alt for alt in alternatives if alt != {"type": "null"}]
        out.pop("anyOf")
        if len(rest) == 1:
            out.update(rest[0])
        else:
            out["anyOf"] = rest
        out["nullable"] = True
    return out


class OpenAPI30:
    """Mixin for the I/O specs: their JSON Schema in the OpenAPI 3.0 dialect."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return openapi30(super().model_json_schema(*args, **kwargs))  # type: ignore[misc]


class ScoreInput(OpenAPI30, bentoml.IODescriptor, Transaction):
    """``POST /score`` body: one flat transaction. Documented as the Transaction schema; the API
    receives it as a one-element list, the unit the call merger concatenates."""

    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE_TRANSACTION})
    __root_input__: ClassVar[bool] = True

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> Any:
        return await _parsed(request, parse_transaction)


class ScoreOutput(OpenAPI30, bentoml.IODescriptor, ScoreResult):
    """``POST /score`` answer: the one result of this request's slice of the merged batch."""

    @classmethod
    async def to_http_response(cls, obj: Any, serde: Any) -> Response:
        (result,) = obj
        return Response(result.model_dump_json(), media_type="application/json")


class BatchInput(OpenAPI30, bentoml.IODescriptor, BatchRequest):
    """``POST /score_batch`` body."""

    model_config = ConfigDict(
        json_schema_extra={"example": {"transactions": [EXAMPLE_TRANSACTION]}}
    )

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> Any:
        return await _parsed(request, parse_batch)


class BatchOutput(OpenAPI30, IORootModel[list[ScoreResult]]):
    """``POST /score_batch`` answer: one result per transaction, in input order."""

    @classmethod
    async def to_http_response(cls, obj: Any, serde: Any) -> Response:
        body = b"[" + b",".join(r.model_dump_json().encode() for r in obj) + b"]"
        return Response(body, media_type="application/json")


# --------------------------------------------------------------------------- the service


@bentoml.service(
    name="fraud_scorer",
    workers=SETTINGS.workers,
    threads=1,  # model calls of a worker run one at a time; batching gives the throughput
    traffic={"timeout": 30},
    http={"port": SETTINGS.port},
    endpoints={"livez": "/livez", "readyz": "/readyz"},
    logging={"access": {"enabled": SETTINGS.access_log}},
    tracing={"excluded_urls": UNTRACED},
    labels={"owner": "fraudstream", "component": "scorer"},
)
class FraudScorer:
    """Scores card transactions for fraud (CatBoost), with per-card history features."""

    model = bentoml.models.BentoModel(SETTINGS.model_tag)

    def __init__(self) -> None:
        from fraudstream.history import InMemoryHistoryStore, PostgresHistoryStore
        from fraudstream.logs import setup_logging
        from fraudstream.scoring import Scorer

        log_settings = LogSettings()
        setup_logging(log_settings.log_level, log_settings.log_format)
        # uvicorn's own per-request log would now reach our handler: BentoML's access log
        # (ACCESS_LOG) is the one to use
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
        started = time.perf_counter()
        ref = self._model_ref()
        classifier = bentoml.catboost.load_model(ref)
        metadata = dict(ref.info.metadata)
        version = str(ref.tag)
        self.database_url = DATABASE_URL
        # PostgreSQL waits are bounded (DB_LOCK_TIMEOUT_MS, DB_STATEMENT_TIMEOUT_MS, ...:
        # fraudstream.database): a card locked too long by another replica fails the call with
        # 503 (see _score), it never holds the worker; in memory, HISTORY_MAX_* cap the size
        history = (
            PostgresHistoryStore(DATABASE_URL)
            if DATABASE_URL
            else InMemoryHistoryStore.from_settings()
        )
        self.scorer = Scorer(
            classifier, metadata, history, threshold=SETTINGS.threshold, model_version=version
        )
        self.scorer.shap_calc_type = SETTINGS.shap_calc_type
        self.metrics = metrics()
        self.merger: CallMerger[Transaction, ScoreResult] = CallMerger(
            functools.partial(self._run, endpoint="score"),
            max_batch=SETTINGS.adaptive_max_batch_size,
            max_wait_s=SETTINGS.adaptive_max_latency_ms / 1000,
            max_pending=SETTINGS.max_pending_calls,
            on_batch=lambda calls, _items: self.metrics.merged.observe(calls),
        )
        self.metrics.model_info.labels(version, f"{self.scorer.threshold:.6g}").set(1)
        self.drift: DriftWindow | None = drift_window_of(
            metadata, self.scorer.feature_names, version
        )
        self._drift_due = 0.0  # time.monotonic() of the next PSI gauge update
        if self.drift is not None:
            self.scorer.on_scored = self._count_drift
            log.info(
                "drift: PSI of %s over the last %d transactions",
                ", ".join(self.drift.reference.names),
                self.drift.size,
            )
        for endpoint in ("score", "score_batch"):  # every series exists from the start at 0
            for category in CATEGORIES:
                self.metrics.transactions.labels(endpoint, category)
                self.metrics.fraud_flags.labels(endpoint, category)
        log.info(
            "model %s loaded (threshold %.6g, history %s) in %.1f s",
            version,
            self.scorer.threshold,
            "postgresql" if DATABASE_URL else "in-memory",
            time.perf_counter() - started,
        )
        if SETTINGS.workers > 1 and not DATABASE_URL:
            log.warning(
                "%d workers without DATABASE_URL: each keeps its own history", SETTINGS.workers
            )

    def _model_ref(self) -> Any:
        """The champion promoted into CHAMPION_HOME (``fraudstream promote``) if there is one,
        else the model baked into the Bento (MODEL_TAG)."""
        from fraudstream.promotion import champion_model

        if not SETTINGS.champion_home:
            return self.model
        try:
            ref = champion_model(SETTINGS.champion_home)
        except Exception:  # noqa: BLE001 - any failure: serve the baked model, say why
            log.exception("cannot load the champion from %s", SETTINGS.champion_home)
            ref = None
        if ref is None:
            log.warning(
                "no usable champion in %s: serving the baked model %s",
                SETTINGS.champion_home,
                self.model.tag,
            )
            return self.model
        log.info("serving the champion %s from %s", ref.tag, SETTINGS.champion_home)
        return ref

    @bentoml.api(route=SCORE_ROUTE, input_spec=ScoreInput, output_spec=ScoreOutput)
    async def score(self, transactions: list[Transaction]) -> list[ScoreResult] | Response:
        """Score one transaction. Concurrent calls are merged into one model call."""
        # one call holds one transaction: without an id it gets the one derived from its
        # content (occurrence 0, whatever else shares the batch), so a client retry is idempotent
        for transaction in transactions:
            if not transaction.transaction_id:
                transaction.transaction_id = transaction_id_of(transaction)
        try:
            return await self.merger.call(transactions)
        except MergerOverloadedError as err:
            return self._unavailable("score", "overloaded", f"scorer overloaded ({err})")
        except ServiceUnavailable as err:
            return self._unavailable("score", "history_unavailable", str(err))

    @bentoml.api(route=BATCH_ROUTE, input_spec=BatchInput, output_spec=BatchOutput)
    async def score_batch(self, transactions: list[Transaction]) -> list[ScoreResult] | Response:
        """Score up to MAX_BATCH_SIZE transactions; results come in input order."""
        try:
            return await self._run(transactions, "score_batch")
        except ServiceUnavailable as err:
            return self._unavailable("score_batch", "history_unavailable", str(err))

    def _unavailable(self, endpoint: str, reason: str, message: str) -> Response:
        """A 503 that says why and when to retry (BentoML would log a traceback for each and
        answer a generic message), counted with the rejected requests."""
        self.metrics.rejected.labels(endpoint, reason).inc()
        body = {"error": f"{message}; retry later", "field": "", "reason": reason}
        return Response(
            json.dumps(body),
            status_code=503,
            media_type="application/json",
            headers={"Retry-After": "1"},
        )

    async def _run(self, transactions: list[Transaction], endpoint: str) -> list[ScoreResult]:
        """Score on the event loop when the history is in memory (pure CPU, well under a
        millisecond per transaction: a hop to a worker thread would cost more than it saves);
        in a worker thread when the history store does blocking I/O to PostgreSQL."""
        if not self.database_url:
            return self._score(transactions, endpoint)
        return await anyio.to_thread.run_sync(self._score, transactions, endpoint)

    def _score(self, transactions: Sequence[Transaction], endpoint: str) -> list[ScoreResult]:
        try:
            results = self.scorer.score(transactions)
        except Exception as err:
            if not _is_store_error(err):
                raise
            log.error("history store unavailable: %s", type(err).__name__)
            raise ServiceUnavailable("history store unavailable") from None
        m = self.metrics
        observe = m.score.labels(endpoint).observe
        scored: collections.Counter[str] = collections.Counter()
        flagged: collections.Counter[str] = collections.Counter()
        for transaction, result in zip(transactions, results, strict=False):
            observe(result.score)
            scored[transaction.cat_id] += 1
            if result.fraud_flag:
                flagged[transaction.cat_id] += 1
        for category, count in scored.items():
            m.transactions.labels(endpoint, category).inc(count)
        for category, count in flagged.items():
            m.fraud_flags.labels(endpoint, category).inc(count)
        return results

    def _count_drift(self, rows: np.ndarray, scores: np.ndarray) -> None:
        """Count a scored batch into the drift window; refresh the PSI gauges when due."""
        assert self.drift is not None
        self.drift.add(rows, scores)
        now = time.monotonic()
        if now < self._drift_due or len(self.drift) < SETTINGS.drift_min_transactions:
            return
        self._drift_due = now + SETTINGS.drift_update_interval_s
        for feature, value in self.drift.psi().items():
            self.metrics.psi.labels(feature).set(value)

    @bentoml.on_startup
    def prepare_for_serving(self) -> None:
        """In the server process only (not when the class is used directly): one warm-up call
        so the first requests stay fast, then the start-up objects out of the collector's sight.
        """
        import gc

        from fraudstream.history import InMemoryHistoryStore
        from fraudstream.scoring import Scorer

        warm = Scorer(self.scorer.model, self.scorer.metadata, InMemoryHistoryStore(), 0.0)
        warm.shap_calc_type = SETTINGS.shap_calc_type
        warm.score([Transaction.model_validate(EXAMPLE_TRANSACTION)])
        # everything loaded so far (BentoML, pandas, CatBoost, the model) lives as long as the
        # process: out of the collector's sight, a full collection stops ~10 ms instead of ~90 ms
        gc.collect()
        gc.freeze()

    # PostgreSQL has answered a readiness check once (see __is_ready__)
    _database_answered = False

    def __is_ready__(self) -> bool:
        """Ready once the model is loaded (``__init__`` done) and, with ``DATABASE_URL``,
        PostgreSQL has answered once. A later outage does not make the pod unready: it would
        take every replica out of the Service at the same moment. Scoring calls answer 503
        meanwhile (the bridge retries them), and the pod stays ready for when it is back."""
        if not self.database_url or self._database_answered:
            return True
        import psycopg2

        from fraudstream.database import connect

        quick = DatabaseSettings(db_connect_timeout_s=2)  # a probe must answer within its timeout
        try:
            conn = connect(self.database_url, quick, application_name="fraudstream-readyz")
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
            finally:
                conn.close()
        except psycopg2.Error:
            return False
        self._database_answered = True
        return True

    @bentoml.on_shutdown
    def close(self) -> None:
        self.scorer.history.close()


def _is_store_error(err: Exception) -> bool:
    try:
        import psycopg2
    except ImportError:  # pragma: no cover - psycopg2 is a dependency
        return isinstance(err, OSError)
    return isinstance(err, (psycopg2.Error, OSError))


FraudScorer.add_asgi_middleware(RequestGate)

# BentoML calls inspect.signature() on the API function for every request; with the signature
# stored on the function that call returns at once (~8 % of a /score request's CPU).
for _api in FraudScorer.apis.values():
    _api.func.__signature__ = inspect.signature(_api.func)  # type: ignore[attr-defined]
