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
    topic_dlq: str = "transactions.dlq"
    topic_partitions: int = 6
    topic_retention_ms: int = 7 * 24 * 3600 * 1000
    # most bytes kept per partition before the oldest segments go (-1 = no size limit, Kafka's
    # default); whichever of time and size is reached first applies
    topic_retention_bytes: int = -1


class DatabaseSettings(_Base):
    """PostgreSQL connection; empty means 'no database' where that is allowed (the scorer)."""

    database_url: str = ""


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
    dlq_max_ratio: float = 0.5  # stop when more than this share of a window goes to the DLQ
    dlq_window: int = 200  # messages in the window the ratio is measured over
    # a non-transient scorer error (e.g. 500) for the same batch this many times in a row: find
    # the record(s) it fails on (bisection) and send them to the DLQ as scorer_error
    scorer_max_attempts: int = 5
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
    metrics_port: int = 9102


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
