"""Fuzzing driven by the scorer's own OpenAPI document (schemathesis): valid and invalid bodies
for /score and /score_batch must never get a 5xx, and documented answers must match their schema.

Strategies come from ``APIOperation.as_strategy`` with a plain ``@given`` (schemathesis' pytest
loader ``from_fixture`` does not run on pytest 9).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

pytestmark = pytest.mark.integration


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
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case) -> None:
        response = case.call_and_validate(
            base_url=scorer_url, checks=[not_a_server_error, response_schema_conformance]
        )
        seen.append(response.status_code)

    check()
    assert seen and max(seen) < 500
