"""The data contract: one typed ``Transaction`` (TETA-ML-1-2025 shape), shared by every component.

See "Data and model" in this folder's README.md for the Kaggle column mapping. Personal fields
(names, street, home coordinates) are inputs for features only: never stored in result tables,
never logged.

Everything the schema accepts must be something every component can handle: strings are bounded
and free of control characters (psycopg2 cannot store a NUL; escapes corrupt terminals and
logs), integers are bounded (a 400-digit population made the scorer fail with a 500), and the
event time is not later than now + ``MAX_EVENT_TIME_SKEW_S`` (:class:`SchemaSettings`, 1 day).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fraudstream.identity import card_key
from fraudstream.settings import SchemaSettings

Category = Literal[
    "entertainment",
    "food_dining",
    "gas_transport",
    "grocery_net",
    "grocery_pos",
    "health_fitness",
    "home",
    "kids_pets",
    "misc_net",
    "misc_pos",
    "personal_care",
    "shopping_net",
    "shopping_pos",
    "travel",
]
CATEGORIES: tuple[str, ...] = get_args(Category)

# The columns of a transaction in the TETA shape, in file order (``target`` comes after them in
# labelled data); the loader maps the Kaggle names onto these.
TETA_COLUMNS: tuple[str, ...] = (
    "transaction_time",
    "merch",
    "cat_id",
    "amount",
    "name_1",
    "name_2",
    "gender",
    "street",
    "one_city",
    "us_state",
    "post_code",
    "lat",
    "lon",
    "population_city",
    "jobs",
    "merchant_lat",
    "merchant_lon",
)

MAX_AMOUNT = 1_000_000.0
MAX_POPULATION = 10**10
EARLIEST = datetime(1990, 1, 1)
LATEST = datetime(2100, 1, 1)
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# how far ahead of the clock an event time may be (transaction times are local, naive)
MAX_EVENT_TIME_SKEW = timedelta(seconds=SchemaSettings().max_event_time_skew_s)
# no control characters (C0, DEL, C1) anywhere in a string; checked by pydantic's own (Rust)
# regex engine, so it costs next to nothing per field
_CONTROL = r"\x00-\x1f\x7f-\x9f"
PRINTABLE = rf"^[^{_CONTROL}]*$"
CONTROL_CHARACTERS = re.compile(rf"[{_CONTROL}]")
NOT_PRINTABLE_MESSAGE = "must not contain control characters"

# Fields that identify a person; never stored in result tables or written to logs.
PERSONAL_FIELDS: frozenset[str] = frozenset({"name_1", "name_2", "street", "lat", "lon"})


class Transaction(BaseModel):
    """One card transaction in the TETA shape (``target`` present only in labelled data)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    transaction_id: str | None = Field(
        default=None,
        max_length=64,
        pattern=PRINTABLE,
        description="unique id; when absent, derived from the content (the same every time)",
    )
    transaction_time: datetime = Field(
        description="local time, 'YYYY-MM-DD HH:MM:SS'; not later than now + MAX_EVENT_TIME_SKEW_S"
    )
    merch: str = Field(min_length=1, max_length=200, pattern=PRINTABLE, description="merchant")
    cat_id: Category = Field(description="spending category (one of 14)")
    amount: float = Field(gt=0, le=MAX_AMOUNT, description="amount in USD")
    name_1: str = Field(min_length=1, max_length=100, pattern=PRINTABLE, description="first name")
    name_2: str = Field(min_length=1, max_length=100, pattern=PRINTABLE, description="last name")
    gender: Literal["F", "M"]
    street: str = Field(min_length=1, max_length=200, pattern=PRINTABLE)
    one_city: str = Field(min_length=1, max_length=200, pattern=PRINTABLE)
    us_state: str = Field(pattern=r"^[A-Z]{2}$")
    post_code: int = Field(ge=0, le=99999)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    population_city: int = Field(ge=0, le=MAX_POPULATION)
    jobs: str = Field(min_length=1, max_length=200, pattern=PRINTABLE)
    merchant_lat: float = Field(ge=-90, le=90)
    merchant_lon: float = Field(ge=-180, le=180)
    target: Literal[0, 1] | None = Field(default=None, description="label; absent when scoring")

    @field_validator("amount", "lat", "lon", "merchant_lat", "merchant_lon")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("transaction_time")
    @classmethod
    def _plausible_time(cls, value: datetime) -> datetime:
        value = value.replace(tzinfo=None)
        if not EARLIEST <= value < LATEST:
            raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
        if value > datetime.now(UTC).replace(tzinfo=None) + MAX_EVENT_TIME_SKEW:
            skew = MAX_EVENT_TIME_SKEW.total_seconds()
            raise ValueError(f"must not be later than now + {skew:g} s (MAX_EVENT_TIME_SKEW_S)")
        return value

    @property
    def card_key(self) -> str:
        """Pseudonymous card-holder key (:func:`fraudstream.identity.card_key`)."""
        return card_key(self.name_1, self.name_2, self.street)


def error_message(detail: Any) -> str:
    """The message of one pydantic error (``ValidationError.errors()`` item), in words: never
    the input value, and "must not contain control characters" instead of the regex."""
    if detail.get("type") == "string_pattern_mismatch" and (
        (detail.get("ctx") or {}).get("pattern") == PRINTABLE
    ):
        return NOT_PRINTABLE_MESSAGE
    return str(detail.get("msg", ""))


def validation_poison(err: Any) -> tuple[str, str]:
    """(error_type, error) for the DLQ from a pydantic ``ValidationError``: ``not_json`` with
    the parser's message, else ``invalid`` with the fields and what is wrong with them (at most
    five), never their values."""
    errors = err.errors(include_url=False, include_input=False)
    if errors and errors[0].get("type") == "json_invalid":
        return "not_json", f"not JSON: {errors[0].get('msg')}"
    return "invalid", "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {error_message(e)}" for e in errors[:5]
    )


EXAMPLE_TRANSACTION: dict = {
    "transaction_id": "7f9c2b4e-0000-4000-8000-000000000001",
    "transaction_time": "2020-06-21 22:41:07",
    "merch": "fraud_Kirlin and Sons",
    "cat_id": "shopping_net",
    "amount": 912.35,
    "name_1": "Jane",
    "name_2": "Doe",
    "gender": "F",
    "street": "351 Darlene Green",
    "one_city": "Columbia",
    "us_state": "SC",
    "post_code": 29209,
    "lat": 33.9659,
    "lon": -80.9355,
    "population_city": 333497,
    "jobs": "Mechanical engineer",
    "merchant_lat": 33.986391,
    "merchant_lon": -81.200714,
}
