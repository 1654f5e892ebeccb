"""Configuration read once from environment variables into typed settings objects.

Every component reads its settings through one of these classes; the Helm chart sets exactly
these variable names (a test compares them). Field name upper-cased = environment variable,
unless a class sets ``env_prefix``. Defaults are the embedded local defaults used by ``make up``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Base(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)


class KafkaSettings(_Base):
    """Where the broker is and what the topics are called."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    topic_transactions: str = "transactions"
    topic_scoring: str = "scoring"
    # results of the challenger scorer (best effort, see fraudstream.shadow)
    topic_scoring_shadow: str = "scoring.shadow"
    topic_dlq: str = "transactions.dlq"
    # confirmed outcomes (fraudstream.labels.Label; key = transaction_id)
    topic_labels: str = "labels"
    topic_partitions: int = 6
    topic_retention_ms: int = 7 * 24 * 3600 * 1000
    # most bytes kept per partition before the oldest segments go (-1 = no size limit, Kafka's
    # default); whichever of time and size is reached first applies
    topic_retention_bytes: int = -1


class DatabaseSettings(_Base):
    """PostgreSQL connection; empty means 'no database' where that is allowed (the scorer).

    The ``db_*`` limits go on every connection :func:`fraudstream.database.connect` makes (as
    libpq options), so no wait on PostgreSQL is unbounded: a server that does not answer, a
    query or a lock wait that does not end, a peer that vanished without closing the socket.
    """

    database_url: str = ""
    # seconds to wait for a connection to be made (libpq connect_timeout; 0 = no limit)
    db_connect_timeout_s: int = Field(default=5, ge=0)
    # longest a statement may run before the server cancels it (0 = no limit)
    db_statement_timeout_ms: int = Field(default=10_000, ge=0)
    # longest a statement may wait for a lock (a row another transaction holds; 0 = no limit)
    db_lock_timeout_ms: int = Field(default=2_000, ge=0)
    # TCP keepalives: an idle connection whose peer is gone is noticed after about
    # idle + interval x count seconds (10 + 5 x 3 = 25 s)
    db_keepalives: bool = True
    db_keepalives_idle_s: int = Field(default=10, ge=1)
    db_keepalives_interval_s: int = Field(default=5, ge=1)
    db_keepalives_count: int = Field(default=3, ge=1)
    # longest sent data may stay unacknowledged before the connection is dropped (a peer gone
    # in the middle of a query, where keepalives do not apply; libpq tcp_user_timeout; 0 = the
    # kernel's default, about 15 minutes)
    db_tcp_user_timeout_ms: int = Field(default=30_000, ge=0)


class HistorySettings(_Base):
    """The scorer's in-memory history store (:class:`fraudstream.history.InMemoryHistoryStore`,
    used without ``DATABASE_URL``): how much it keeps, per worker. Measured with
    ``loadtest/bench_history.py``: 4.5 kB of Python memory per simulated card (a month, ~2
    transactions a day), 27 kB per card at the per-card caps, 0.7 kB per remembered id. A
    store filled to the defaults grew the process by 251 MB RSS (simulated cards; about 750 MB
    if every card were at the caps), within the chart's scorer memory limit next to the
    ~280 MB the scorer itself takes."""

    # most cards kept; the least recently used one is forgotten first (its next transaction
    # starts a new history)
    history_max_cards: int = Field(default=20_000, ge=1)
    # most transaction ids remembered for idempotent re-scoring; the oldest are forgotten first
    history_max_ids: int = Field(default=200_000, ge=1)


class RetentionSettings(_Base):
    """``fraudstream history prune`` and ``fraudstream scores prune`` (the chart's CronJob)."""

    # transaction ids (card_history_seen) are kept this long after they were scored: a retry or
    # a replay of the same transaction within it is counted once, later it would count again
    history_dedupe_days: float = Field(default=30.0, gt=0)
    # rows of `scores` are kept this long after they were written
    scores_retention_days: float = Field(default=90.0, gt=0)
    # rows of `labels` are kept this long after they were last stored (pruned with the scores)
    labels_retention_days: float = Field(default=90.0, gt=0)
    # rows deleted per transaction (short transactions: no long locks, no long vacuum debt)
    prune_batch_size: int = Field(default=5_000, ge=1)


class LogSettings(_Base):
    log_level: str = "INFO"
    log_format: str = "json"  # json | text


class ScorerSettings(_Base):
    """The BentoML fraud scorer (``bentos/fraud_scorer``); ``DATABASE_URL`` comes from
    :class:`DatabaseSettings` (empty = in-memory history store)."""

    # an empty variable (e.g. THRESHOLD="" in a chart) means "use the default"
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, env_ignore_empty=True)

    # model in the BentoML store (name:version); "latest" = the newest saved version
    model_tag: str = "fraud-model:latest"
    # a BentoML home shared with `fraudstream retrain`/`promote` (the chart's retrain volume):
    # when it holds champion.json, the scorer serves that model from <home>/models instead of
    # MODEL_TAG, which stays the fallback (no file, or it cannot be loaded). Empty = MODEL_TAG.
    champion_home: str = ""
    # override the decision threshold saved with the model (empty = use the model's own)
    threshold: float | None = None
    # most transactions accepted in one POST /score_batch call
    max_batch_size: int = 1000
    # merging of concurrent POST /score calls (fraudstream.call_merger; no gathering wait):
    # most calls in one model call ...
    adaptive_max_batch_size: int = Field(default=256, ge=1)
    # ... the longest (ms) a call may wait for its batch to start before it is refused with 503
    # (a load-shedding deadline, not a wait) ...
    adaptive_max_latency_ms: int = Field(default=1000, ge=1)
    # ... and the most calls queued at once (more are refused with 503)
    max_pending_calls: int = Field(default=4096, ge=1)
    # HTTP worker processes (each loads its own copy of the model)
    workers: int = 1
    # HTTP port
    port: int = 3000
    # BentoML's per-request access log (method, path, status, latency; never bodies)
    access_log: bool = False
    # OpenTelemetry spans for /score and /score_batch (costly per request; the exporter is set
    # in BentoML's own configuration, BENTOML_CONFIG)
    trace_requests: bool = False
    # CatBoost SHAP algorithm behind `reasons`: Approximate (fast) | Regular | Exact
    shap_calc_type: Literal["Approximate", "Regular", "Exact"] = "Approximate"
    # drift (fraudstream.drift): PSI of the score and of the model's top features over the last
    # this many scored transactions, per worker (0 = no PSI gauges)
    drift_window: int = Field(default=10_000, ge=0)
    # the PSI gauges appear once the window holds this many transactions (fewer are too noisy)
    drift_min_transactions: int = Field(default=1_000, ge=1)
    # the PSI gauges are recomputed after a scored batch, at most once per this many seconds
    drift_update_interval_s: float = Field(default=15.0, ge=0)


def env_names(*classes: type[BaseSettings]) -> set[str]:
    """Environment variable names a settings class reads (used by chart/env consistency tests)."""
    names: set[str] = set()
    for cls in classes:
        prefix = cls.model_config.get("env_prefix", "") or ""
        for name, field in cls.model_fields.items():
            alias = field.validation_alias or field.alias
            names.add(str(alias).upper() if isinstance(alias, str) else (prefix + name).upper())
    return names


class BridgeSettings(_Base):
    """``fraudstream bridge``: transactions -> scorer ``/score_batch`` -> scoring (+ DLQ)."""

    scorer_url: str = "http://127.0.0.1:3000"
    scorer_timeout_s: float = 10.0
    scorer_backoff_max_s: float = 10.0  # retries never stop; the wait between them is capped
    scorer_max_connections: int = 4
    bridge_group_id: str = "fraudstream-bridge"
    # static group membership (e.g. the StatefulSet pod name): a restarted member gets its
    # partitions back at once instead of after the session timeout; empty = dynamic membership
    bridge_group_instance_id: str = ""
    bridge_batch_size: int = 500
    bridge_batch_max_wait_ms: int = 50
    bridge_commit_interval_ms: int = 1000
    # one Kafka transaction per batch: its results, its DLQ records and its input offsets are
    # committed together (exactly once into `scoring` for read_committed readers); off for a
    # broker without transactions (then a crash can repeat a batch's results in `scoring`)
    bridge_transactions: bool = True
    # the broker aborts a transaction left open this long (a killed bridge's); until then
    # read_committed readers of its partitions wait. At most the broker's
    # transaction.max.timeout.ms (15 min by default)
    bridge_transaction_timeout_ms: int = Field(default=10000, ge=1000)
    dlq_max_ratio: float = 0.5  # stop when more than this share of a window goes to the DLQ
    dlq_window: int = 200  # messages in the window the ratio is measured over
    # a non-transient scorer error (e.g. 500) for the same batch this many times in a row: find
    # the record(s) it fails on (bisection) and send them to the DLQ as scorer_error
    scorer_max_attempts: int = 5
    # shadow scoring (fraudstream.shadow): a challenger scorer's URL, empty = off. Each batch is
    # also sent there from a background thread, results to TOPIC_SCORING_SHADOW; a shadow
    # batch the challenger does not answer within SCORER_SHADOW_TIMEOUT_S (one attempt), or
    # that finds BRIDGE_SHADOW_QUEUE_SIZE batches already waiting, is dropped and counted
    scorer_shadow_url: str = ""
    scorer_shadow_timeout_s: float = Field(default=2.0, gt=0)
    bridge_shadow_queue_size: int = Field(default=4, ge=1)
    metrics_port: int = 9101


class WriterSettings(_Base):
    """``fraudstream writer``: scoring -> PostgreSQL table ``scores``."""

    writer_group_id: str = "fraudstream-writer"
    writer_group_instance_id: str = ""  # static membership, as BRIDGE_GROUP_INSTANCE_ID
    writer_batch_size: int = 1000
    writer_batch_max_wait_ms: int = 50
    writer_commit_interval_ms: int = 1000
    db_retry_max_s: float = 10.0  # reconnect/retry backoff cap while PostgreSQL is away
    # an unexpected database error (not a lost connection, not a refused row) for the same
    # batch this many times in a row: bisect it and send the rows it fails on to the DLQ
    db_max_attempts: int = 5
    # the table written: `scores`, or `scores_shadow` for a second writer that reads the
    # challenger's results (TOPIC_SCORING=scoring.shadow, its own WRITER_GROUP_ID)
    writer_table: Literal["scores", "scores_shadow"] = "scores"
    metrics_port: int = 9102


class LabelsSettings(_Base):
    """``fraudstream labels consume``: labels -> PostgreSQL table ``labels``, and the live quality
    gauges (:mod:`fraudstream.quality`) it refreshes from ``scores`` x ``labels``."""

    labels_group_id: str = "fraudstream-labels"
    labels_group_instance_id: str = ""  # static membership, as BRIDGE_GROUP_INSTANCE_ID
    labels_batch_size: int = Field(default=1000, ge=1)
    labels_batch_max_wait_ms: int = Field(default=50, ge=0)
    labels_commit_interval_ms: int = Field(default=1000, ge=0)
    # the quality gauges cover the transactions scored (written to `scores`) this long ago or
    # less that have a label ...
    quality_window_s: float = Field(default=7 * 86400.0, gt=0)
    # ... at most this many of them, the most recently scored (a bounded query) ...
    quality_max_rows: int = Field(default=1_000_000, ge=1)
    # ... and are computed again every this many seconds (0 = never: no quality gauges)
    quality_refresh_s: float = Field(default=60.0, ge=0)
    metrics_port: int = 9104


class IdentitySettings(_Base):
    """Card keys and derived transaction ids (:mod:`fraudstream.identity`): wherever they are
    computed (scorer, replay, the analyst page, the load test)."""

    # an empty variable means "use the default"
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, env_ignore_empty=True)

    # HMAC key of card-holder keys (name + street) and of ids derived from a transaction's
    # content; the default is a fixed development value (a WARNING is logged when it is used)
    card_key_secret: str = "fraudstream-development-card-key"


class SchemaSettings(_Base):
    """The data contract (:class:`fraudstream.schema.Transaction`), wherever it is checked."""

    # an event time later than now + this is refused (transaction times are local, so the
    # default day also covers every time zone)
    max_event_time_skew_s: float = 86400.0


class HealthSettings(_Base):
    """``/healthz`` of the consumers (:mod:`fraudstream.health`)."""

    # 503 once the consumer loop has made no progress (poll, batch, retry wait) for this long
    liveness_max_age_s: float = 60.0


class ReplaySettings(_Base):
    """``fraudstream replay``: CSV rows -> topic ``transactions``."""

    replay_rate: float = 50.0  # transactions per second; 0 = as fast as possible
    metrics_port: int = 0  # 0 = no /metrics endpoint (replay is usually a one-off)


class UiSettings(_Base):
    """The Streamlit analyst page (``ui/app.py``); Kafka and database come from their classes."""

    ui_result_timeout_s: float = 120.0  # how long an upload waits for its scores to be written
    ui_max_rows: int = 50_000  # larger uploads are refused with a message
