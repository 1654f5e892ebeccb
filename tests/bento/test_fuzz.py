"""Fuzzing the scorer's HTTP API.

1. Driven by the scorer's own OpenAPI document (schemathesis): valid and invalid bodies for
   /score and /score_batch must never get a 5xx, and documented answers must match their schema.
   Strategies come from ``APIOperation.as_strategy`` with a plain ``@given`` (schemathesis' pytest
   loader ``from_fixture`` does not run on pytest 9).
2. Hypothesis strategies of our own for what the OpenAPI document cannot express and what once
   got through: control characters in any string (psycopg2 cannot store a NUL; the writer crashed
   on it), integers far beyond 64 bits (the scorer answered 500), event times in the future. Each
   must get a 400 that names the field and gives a ``reason``; and transactions just inside every
   bound must still be scored.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from fraudstream.schema import CATEGORIES, EXAMPLE_TRANSACTION

pytestmark = pytest.mark.integration

FUZZ_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


@pytest.fixture(scope="module")
def operations(scorer_url: str) -> dict:
    schema = schemathesis.openapi.from_url(f"{scorer_url}/docs.json")
    ops = {}
    for result in schema.include(path=["/score", "/score_batch"]).get_all_operations():
        op = result.ok()
        ops[op.path] = op
    assert set(ops) == {"/score", "/score_batch"}
    return ops


@pytest.mark.parametrize("path", ["/score", "/score_batch"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors_and_no_schema_violations(operations, scorer_url, path, mode):
    seen: list[int] = []

    @given(case=operations[path].as_strategy(generation_mode=mode))
    @FUZZ_SETTINGS
    def check(case) -> None:
        response = case.call_and_validate(
            base_url=scorer_url, checks=[not_a_server_error, response_schema_conformance]
        )
        seen.append(response.status_code)

    check()
    assert seen and max(seen) < 500


# --------------------------------------------------------------------------- our strategies

STRING_FIELDS = ("transaction_id", "merch", "name_1", "name_2", "street", "one_city", "us_state")
STRING_FIELDS += ("jobs",)
INTEGER_FIELDS = ("post_code", "population_city")
NUMBER_FIELDS = ("amount", "lat", "lon", "merchant_lat", "merchant_lon")
# C0, DEL and C1: what psycopg2, terminals and log readers choke on
CONTROL_CHARACTERS = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))]
MAX_POPULATION = 10**10  # the schema's (and the loader's) bound
HUGE_INTEGERS = st.one_of(
    st.sampled_from([10**400, -(10**400), 2**63, 2**64, -(2**63) - 1, 10**19]),
    st.integers(min_value=2**63, max_value=10**400),
    st.integers(min_value=-(10**400), max_value=-(2**63)),
)


def fresh_example() -> dict:
    return {**EXAMPLE_TRANSACTION, "transaction_id": f"fuzz-{uuid.uuid4()}"}


@st.composite
def with_control_characters(draw: st.DrawFn) -> tuple[str, dict]:
    """(field, transaction) with control characters inside one string field (inside: leading
    and trailing whitespace is stripped, which is fine)."""
    field = draw(st.sampled_from(STRING_FIELDS))
    tx = fresh_example()
    value = str(tx[field])
    for char in draw(st.lists(st.sampled_from(CONTROL_CHARACTERS), min_size=1, max_size=3)):
        at = draw(st.integers(1, len(value) - 1))
        value = value[:at] + char + value[at:]
    tx[field] = value
    return field, tx


@st.composite
def with_huge_number(draw: st.DrawFn) -> tuple[str, dict]:
    """(field, transaction) with an integer far outside 64 bits in one numeric field."""
    field = draw(st.sampled_from(INTEGER_FIELDS + NUMBER_FIELDS))
    return field, {**fresh_example(), field: draw(HUGE_INTEGERS)}


@st.composite
def in_the_future(draw: st.DrawFn) -> tuple[str, dict]:
    """(field, transaction) dated more than the default tolerance (1 day) ahead of now."""
    earliest = (datetime.now() + timedelta(days=2)).replace(microsecond=0)
    when = draw(st.datetimes(min_value=earliest, max_value=datetime(2099, 12, 31)))
    return "transaction_time", {**fresh_example(), "transaction_time": f"{when:%Y-%m-%d %H:%M:%S}"}


def text(max_size: int) -> st.SearchStrategy[str]:
    """Any printable text (no control characters, no lone surrogates), as sent: not padded."""
    chars = st.characters(exclude_categories=("Cc", "Cs"))
    return st.text(chars, min_size=1, max_size=max_size).filter(lambda s: s == s.strip())


@st.composite
def valid_transactions(draw: st.DrawFn) -> dict:
    """Transactions anywhere inside the schema's bounds, strings of any printable text."""
    when = draw(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime.now()))
    return {
        "transaction_id": f"fuzz-{uuid.uuid4()}",
        "transaction_time": f"{when:%Y-%m-%d %H:%M:%S}",
        "merch": draw(text(200)),
        "cat_id": draw(st.sampled_from(CATEGORIES)),
        "amount": draw(st.floats(min_value=0.01, max_value=1_000_000)),
        "name_1": draw(text(100)),
        "name_2": draw(text(100)),
        "gender": draw(st.sampled_from(["F", "M"])),
        "street": draw(text(200)),
        "one_city": draw(text(200)),
        "us_state": draw(st.from_regex(r"\A[A-Z]{2}\Z")),
        "post_code": draw(st.integers(0, 99999)),
        "lat": draw(st.floats(-90, 90)),
        "lon": draw(st.floats(-180, 180)),
        "population_city": draw(st.integers(0, MAX_POPULATION)),
        "jobs": draw(text(200)),
        "merchant_lat": draw(st.floats(-90, 90)),
        "merchant_lon": draw(st.floats(-180, 180)),
    }


BAD_INPUTS = {
    "control-characters": with_control_characters(),
    "huge-numbers": with_huge_number(),
    "future-times": in_the_future(),
}
# Tried before anything generated, so every field is covered in every run (a generated run
# may draw one field often and another not at all).
EXPLICIT: dict[str, list[tuple[str, dict]]] = {
    "control-characters": [
        (f, {**EXAMPLE_TRANSACTION, f: f"{str(EXAMPLE_TRANSACTION[f])[:1]}\x00x"})
        for f in STRING_FIELDS
    ],
    "huge-numbers": [
        (f, {**EXAMPLE_TRANSACTION, f: 10**400}) for f in INTEGER_FIELDS + NUMBER_FIELDS
    ],
    "future-times": [
        ("transaction_time", {**EXAMPLE_TRANSACTION, "transaction_time": "2099-12-31 23:59:59"})
    ],
}


@pytest.fixture(scope="module")
def client(scorer_url: str):
    with httpx.Client(base_url=scorer_url, timeout=30) as c:
        yield c


def post(client: httpx.Client, path: str, body: object) -> httpx.Response:
    return client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


@pytest.mark.parametrize("path", ["/score", "/score_batch"])
@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_values_the_pipeline_cannot_handle_get_a_400_naming_the_field(client, path, kind):
    @FUZZ_SETTINGS
    def check(bad: tuple[str, dict], size: int, position: int) -> None:
        field, tx = bad
        if path == "/score":
            body: object = tx
            named = field
        else:
            at = min(position, size - 1)
            batch = [fresh_example() for _ in range(size)]
            batch[at] = tx
            body, named = {"transactions": batch}, f"transactions.{at}.{field}"
        response = post(client, path, body)
        assert response.status_code == 400, (kind, field, response.status_code)
        error = response.json()
        assert error["field"] == named, (error, named)
        assert error["reason"] in ("invalid_value", "invalid_type"), error
        assert error["error"].startswith(named)

    check = given(bad=BAD_INPUTS[kind], size=st.integers(1, 3), position=st.integers(0, 2))(check)
    for bad in EXPLICIT[kind]:
        check = example(bad=bad, size=2, position=1)(check)
    check()


@pytest.mark.parametrize("path", ["/score", "/score_batch"])
def test_transactions_inside_every_bound_are_scored(client, path):
    @given(tx=valid_transactions())
    @FUZZ_SETTINGS
    def check(tx: dict) -> None:
        body = tx if path == "/score" else {"transactions": [tx]}
        response = post(client, path, body)
        assert response.status_code == 200, (response.status_code, response.text[:300])

    check()
