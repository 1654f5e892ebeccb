"""The load test's verdict (``loadtest/gate.py``): fed Locust-shaped statistics, it passes a
run that met the targets and names each target a run missed."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

GATE_PATH = Path(__file__).resolve().parents[1] / "loadtest" / "gate.py"
START = 1_700_000_000.0


def _load_gate():
    spec = importlib.util.spec_from_file_location("loadtest_gate", GATE_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gate = _load_gate()


@dataclass
class Entry:
    """The attributes of a Locust ``StatsEntry`` that the gate reads."""

    method: str
    name: str
    num_requests: int = 0
    num_failures: int = 0
    num_none_requests: int = 0
    response_times: dict[int, int] = field(default_factory=dict)
    start_time: float = START
    last_request_timestamp: float | None = None


def entry(method: str, name: str, rate: float, seconds: float, ms: float, **kw) -> Entry:
    """``rate`` x ``seconds`` requests, all taking ``ms`` except those given in ``slow``."""
    slow: dict[int, int] = kw.pop("slow", {})
    n = int(rate * seconds)
    times = {round(ms): n - sum(slow.values()), **slow}
    return Entry(
        method,
        name,
        num_requests=n,
        response_times=times,
        last_request_timestamp=START + seconds,
        **kw,
    )


def http(rate: float = 400, seconds: float = 300, ms: float = 5, **kw) -> Entry:
    return entry("POST", "/score", rate, seconds, ms, **kw)


def kafka(rate: float = 400, seconds: float = 300, ms: float = 8, **kw) -> Entry:
    return entry("kafka", "transactions", rate, seconds, ms, **kw)


def e2e(rate: float = 400, seconds: float = 300, ms: float = 300, **kw) -> Entry:
    return entry("e2e", "kafka->scores", rate, seconds, ms, **kw)


LIMITS = gate.Limits(target_rate=400, http_p99_ms=100, e2e_p99_ms=1000)


def test_http_run_at_the_target_passes_with_its_figures():
    result = gate.summarize([http(slow={40: 1000, 90: 1000})], LIMITS)
    assert result["passed"], result["problems"]
    assert result["problems"] == []
    assert result["rate"] == pytest.approx(400)
    assert result["requests"] == 120_000 and result["failures"] == 0
    figures = result["types"]["http"]
    assert (figures["p50_ms"], figures["p99_ms"], figures["max_ms"]) == (5, 40, 90)
    assert figures["rate"] == pytest.approx(400)


def test_kafka_run_passes_and_e2e_does_not_count_as_offered_load():
    result = gate.summarize([kafka(), e2e()], LIMITS)
    assert result["passed"], result["problems"]
    assert result["requests"] == 120_000  # produces only; e2e follows them
    assert result["types"]["e2e"]["p99_ms"] == 300
    assert result["types"]["kafka"]["p50_ms"] == 8


def test_any_failure_fails():
    result = gate.summarize([http(num_failures=1)], LIMITS)
    assert not result["passed"]
    assert result["problems"] == ["1 failures"]
    missing = gate.summarize([kafka(), e2e(num_failures=3)], LIMITS)
    assert missing["problems"] == ["3 failures"]


def test_errors_in_the_load_test_code_fail():
    result = gate.summarize([http()], LIMITS, exceptions=2)
    assert result["problems"] == ["2 errors in the load test's own code"]


def test_low_rate_fails_and_95_percent_passes():
    assert gate.summarize([http(rate=380)], LIMITS)["passed"]
    result = gate.summarize([http(rate=370)], LIMITS)
    assert not result["passed"]
    assert "370.0/s, below 95% of the target 400/s" in result["problems"][0]


def test_rate_is_offered_http_and_kafka_together():
    both = gate.summarize([http(rate=200), kafka(rate=200), e2e(rate=200)], LIMITS)
    assert both["passed"], both["problems"]
    assert both["rate"] == pytest.approx(400)


def test_http_p99_at_or_above_the_limit_fails():
    # 1.5 % of the calls at 100 ms: p99 is 100 ms, not below 100 ms
    result = gate.summarize([http(slow={100: 1800})], LIMITS)
    assert result["types"]["http"]["p99_ms"] == 100
    assert result["problems"] == ["HTTP p99 100 ms, not below 100 ms"]
    # 0.5 % of the calls slow: p99 unaffected
    assert gate.summarize([http(slow={500: 600})], LIMITS)["passed"]


def test_e2e_p99_above_the_limit_fails():
    result = gate.summarize([kafka(), e2e(slow={1500: 2000})], LIMITS)
    assert result["problems"] == ["end-to-end p99 1500 ms, not below 1000 ms"]


def test_kafka_without_end_to_end_measurement_fails():
    result = gate.summarize([kafka()], LIMITS)
    assert not result["passed"]
    assert "no end-to-end measurement" in result["problems"][0]


def test_nothing_sent_fails():
    result = gate.summarize([], LIMITS)
    assert not result["passed"]
    assert "no requests were made" in result["problems"]


def test_percentile_follows_locust():
    """Locust's rule: counted down from the slowest until at most (1 - q) of the samples are
    left above (so the p99 of 100 samples is the slowest one)."""
    assert gate.percentile({}, 0.99) == 0
    thousand = {1: 990, 50: 9, 70: 1}
    assert gate.percentile(thousand, 0.99) == 50
    assert gate.percentile(thousand, 0.999) == 70
    assert gate.percentile(thousand, 0.5) == 1
    assert gate.percentile({1: 98, 50: 1, 70: 1}, 0.99) == 70


def test_a_tight_limit_fails_a_fast_run():
    tight = gate.Limits(target_rate=400, http_p99_ms=0.001)
    assert not gate.summarize([http(ms=1)], tight)["passed"]
