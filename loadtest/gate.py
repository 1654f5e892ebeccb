"""The verdict of a Locust run of ``locustfile.py``: figures per request type and pass/fail.

Kept free of Locust imports (importing ``locust`` monkey-patches the process with gevent), so
the gate can be unit-tested on its own. It reads Locust ``StatsEntry`` objects, or anything with
the same attributes: ``method`` (the request type), ``name``, ``num_requests``, ``num_failures``,
``num_none_requests``, ``response_times`` ({rounded ms: count}), ``start_time`` and
``last_request_timestamp`` (epoch seconds).

Request types: ``kafka`` is a produce to the ``transactions`` topic (acknowledged by Kafka),
``e2e`` is a transaction's end-to-end latency until its score is stored in PostgreSQL, and any
other type (``POST``) is an HTTP call to the scorer. The offered load is HTTP + ``kafka``; ``e2e``
only follows it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

KAFKA = "kafka"
E2E = "e2e"
RESULT_PREFIX = "LOADTEST_RESULT "


@dataclass(frozen=True)
class Limits:
    """What a run must reach; ``target_rate`` is users x rate per user (requests/s)."""

    target_rate: float
    http_p99_ms: float = 100.0
    e2e_p99_ms: float = 1000.0
    min_rate_ratio: float = 0.95


def group_of(request_type: str) -> str:
    """``http``, ``kafka`` or ``e2e``: the three kinds of figures a run reports."""
    if request_type in (KAFKA, E2E):
        return request_type
    return "http"


def percentile(response_times: dict[Any, int], q: float) -> float:
    """The response time that a share ``q`` of the samples did not exceed (Locust's rule:
    counted down from the slowest, over Locust's rounded response times); 0 without samples."""
    total = sum(response_times.values())
    if not total:
        return 0.0
    allowed_above = int(total * q)
    seen = 0
    for value in sorted(response_times, reverse=True):
        seen += response_times[value]
        if total - seen <= allowed_above:
            return float(value)
    return 0.0


def _figures(entries: list[Any]) -> dict[str, Any]:
    times: dict[Any, int] = {}
    for entry in entries:
        for value, count in entry.response_times.items():
            times[value] = times.get(value, 0) + count
    requests = sum(e.num_requests for e in entries)
    starts = [e.start_time for e in entries if e.num_requests]
    ends = [e.last_request_timestamp for e in entries if e.last_request_timestamp]
    seconds = max(ends) - min(starts) if starts and ends else 0.0
    return {
        "requests": requests,
        "failures": sum(e.num_failures for e in entries),
        "seconds": round(seconds, 3),
        "rate": round(requests / seconds, 2) if seconds > 0 else 0.0,
        "p50_ms": percentile(times, 0.50),
        "p95_ms": percentile(times, 0.95),
        "p99_ms": percentile(times, 0.99),
        "max_ms": float(max(times)) if times else 0.0,
        "_starts": starts,
        "_ends": ends,
    }


def summarize(entries: Iterable[Any], limits: Limits, exceptions: int = 0) -> dict[str, Any]:
    """Figures per kind (``http``, ``kafka``, ``e2e``), the offered rate, and the verdict:
    ``passed`` and the list of ``problems`` (empty when passed)."""
    grouped: dict[str, list[Any]] = {}
    for entry in entries:
        grouped.setdefault(group_of(entry.method), []).append(entry)
    kinds = {kind: _figures(grouped[kind]) for kind in sorted(grouped)}

    # the offered load: HTTP calls and produces, over the span from the first to the last one
    offered = [kinds[k] for k in ("http", KAFKA) if k in kinds]
    starts = [t for f in offered for t in f["_starts"]]
    ends = [t for f in offered for t in f["_ends"]]
    seconds = max(ends) - min(starts) if starts and ends else 0.0
    requests = sum(f["requests"] for f in offered)
    rate = requests / seconds if seconds > 0 else 0.0
    for figures in kinds.values():
        del figures["_starts"], figures["_ends"]

    failures = sum(f["failures"] for f in kinds.values())
    problems = []
    if not requests:
        problems.append("no requests were made")
    if failures:
        problems.append(f"{failures} failures")
    if exceptions:
        problems.append(f"{exceptions} errors in the load test's own code")
    if limits.target_rate and rate < limits.min_rate_ratio * limits.target_rate:
        problems.append(
            f"achieved {rate:.1f}/s, below {limits.min_rate_ratio:.0%} of the target "
            f"{limits.target_rate:g}/s"
        )
    if "http" in kinds and kinds["http"]["p99_ms"] >= limits.http_p99_ms:
        problems.append(
            f"HTTP p99 {kinds['http']['p99_ms']:g} ms, not below {limits.http_p99_ms:g} ms"
        )
    if KAFKA in kinds:
        e2e = kinds.get(E2E)
        if not e2e or not e2e["requests"]:
            problems.append("no end-to-end measurement (is DATABASE_URL set on the master?)")
        elif e2e["p99_ms"] >= limits.e2e_p99_ms:
            problems.append(
                f"end-to-end p99 {e2e['p99_ms']:g} ms, not below {limits.e2e_p99_ms:g} ms"
            )
    return {
        "passed": not problems,
        "problems": problems,
        "target_rate": limits.target_rate,
        "rate": round(rate, 2),
        "seconds": round(seconds, 3),
        "requests": requests,
        "failures": failures,
        "exceptions": exceptions,
        "limits": {
            "min_rate_ratio": limits.min_rate_ratio,
            "http_p99_ms": limits.http_p99_ms,
            "e2e_p99_ms": limits.e2e_p99_ms,
        },
        "types": kinds,
    }
