"""Configuration read once from environment variables into typed settings objects.

Every component reads its settings through one of these classes; the Helm chart sets exactly
these variable names (a test compares them). Field name upper-cased = environment variable,
unless a class sets ``env_prefix``. Defaults are the embedded local defaults used by ``make up``.
"""

from __future__ import annotations

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


class DatabaseSettings(_Base):
    """PostgreSQL connection; empty means 'no database' where that is allowed (the scorer)."""

    database_url: str = ""


class LogSettings(_Base):
    log_level: str = "INFO"
    log_format: str = "json"  # json | text


def env_names(*classes: type[BaseSettings]) -> set[str]:
    """Environment variable names a settings class reads (used by chart/env consistency tests)."""
    names: set[str] = set()
    for cls in classes:
        prefix = cls.model_config.get("env_prefix", "") or ""
        for name, field in cls.model_fields.items():
            alias = field.validation_alias or field.alias
            names.add(str(alias).upper() if isinstance(alias, str) else (prefix + name).upper())
    return names
