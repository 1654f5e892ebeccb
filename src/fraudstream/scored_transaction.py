"""The result contract, defined once: one scored transaction.

The bridge builds a :class:`ScoredTransaction` for every transaction it scores and publishes it
as JSON on the ``scoring`` topic (key: ``transaction_id``); the writer validates every message
with it and stores its fields as one row of the table ``scores``; the analyst page reads those
rows (:mod:`fraudstream.results`). The table (``migrations/0002_scores.sql``) holds the fields
plus two columns PostgreSQL fills in (:data:`TABLE_COLUMNS`); a test checks the migration
against it.

No personal data: only the transaction's amount, category, merchant and time, and what the model
said about it. Every string is bounded and free of control characters, and the reasons are JSON
that ``jsonb`` takes, so whatever validates can be stored.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from fraudstream.schema import CONTROL_CHARACTERS, NOT_PRINTABLE_MESSAGE, PRINTABLE, TIME_FORMAT


class ScoredTransaction(BaseModel):
    """A value on the ``scoring`` topic and a row of ``scores`` (fields in column order)."""

    model_config = ConfigDict(extra="ignore")

    transaction_id: str = Field(min_length=1, max_length=64, pattern=PRINTABLE)
    score: float = Field(ge=0, le=1)
    fraud_flag: bool
    threshold: float
    model_version: str = Field(max_length=200, pattern=PRINTABLE)
    reasons: list[dict[str, Any]] = Field(default_factory=list, max_length=100)
    amount: float
    category: str = Field(max_length=200, pattern=PRINTABLE)
    merchant: str = Field(max_length=200, pattern=PRINTABLE)
    event_time: datetime  # the transaction's local time, "YYYY-MM-DD HH:MM:SS" on the wire
    produced_at: datetime | None = None  # Kafka timestamp of the record on ``transactions``
    scored_at: datetime  # when the bridge got the score

    @field_validator("reasons")
    @classmethod
    def _storable_json(cls, reasons: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """jsonb takes neither NaN/Infinity nor \\u0000: no control characters at all, as
        everywhere else, and finite numbers only."""
        for reason in reasons:
            _check_json(reason)
        return reasons

    @field_serializer("event_time", when_used="json")
    def _local_time(self, value: datetime) -> str:
        return value.strftime(TIME_FORMAT)

    @field_serializer("produced_at", "scored_at", when_used="json-unless-none")
    def _instant(self, value: datetime) -> str:
        return value.isoformat(timespec="milliseconds")

    def row(self) -> tuple[Any, ...]:
        """The values of its ``scores`` row, in field order, as psycopg2 sends them: reasons as
        JSON text, event_time without a time zone (the column is a local ``timestamp``)."""
        values = dict(self)
        values["reasons"] = json.dumps(self.reasons)
        values["event_time"] = self.event_time.replace(tzinfo=None)
        return tuple(values.values())


# The columns of ``scores``, in table order: the row's number (an identity, so newer rows have
# higher ones), the fields, and when the row was committed; PostgreSQL fills in the first and last.
TABLE_COLUMNS: tuple[str, ...] = ("id", *ScoredTransaction.model_fields, "written_at")


def _check_json(value: Any) -> None:
    if isinstance(value, str):
        if CONTROL_CHARACTERS.search(value):
            raise ValueError(NOT_PRINTABLE_MESSAGE)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must hold finite numbers only")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json(key)
            _check_json(item)
    elif isinstance(value, list):
        for item in value:
            _check_json(item)
