"""fraudstream.health: the heartbeat and the /healthz + /metrics WSGI app, without a network."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
from prometheus_client import CollectorRegistry, Counter

from fraudstream import health
from fraudstream.settings import HealthSettings

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def call(app: Callable[..., Iterable[bytes]], path: str) -> tuple[int, str, dict[str, str]]:
    """GET ``path`` on a WSGI app; (status code, body, headers)."""
    seen: dict[str, object] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": ""}
    body = b"".join(app(environ, start_response)).decode()
    return int(str(seen["status"]).split()[0]), body, seen["headers"]  # type: ignore[return-value]


def test_heartbeat_age_counts_from_creation_then_from_the_last_beat() -> None:
    clock = FakeClock()
    beat = health.Heartbeat(clock)
    clock.now += 5
    assert beat.age() == 5  # a loop that never starts ages too
    beat.beat()
    assert beat.age() == 0
    clock.now += 2.5
    assert beat.age() == 2.5


def test_healthz_is_200_while_beats_are_recent_and_503_once_they_stop() -> None:
    clock = FakeClock()
    beat = health.Heartbeat(clock)
    app = health.make_app(60, beat, CollectorRegistry())
    clock.now += 60
    status, body, headers = call(app, "/healthz")
    assert status == 200 and body.startswith("ok")
    assert headers["Cache-Control"] == "no-store"
    clock.now += 0.5
    status, body, _ = call(app, "/healthz")
    assert status == 503 and "stuck" in body and "60.5 s" in body
    beat.beat()
    assert call(app, "/healthz")[0] == 200


def test_every_other_path_is_the_prometheus_exposition() -> None:
    registry = CollectorRegistry()
    Counter("fraudstream_test_things", "things", registry=registry).inc(3)
    app = health.make_app(60, health.Heartbeat(), registry)
    status, body, headers = call(app, "/metrics")
    assert status == 200
    assert "fraudstream_test_things_total 3.0" in body
    assert headers["Content-Type"].startswith("text/plain")


def test_the_module_beat_feeds_the_process_heartbeat() -> None:
    health.HEARTBEAT._last -= 100
    assert health.HEARTBEAT.age() >= 100
    health.beat()
    assert health.HEARTBEAT.age() < 1


def test_liveness_max_age_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert HealthSettings().liveness_max_age_s == 60
    monkeypatch.setenv("LIVENESS_MAX_AGE_S", "2.5")
    assert HealthSettings().liveness_max_age_s == 2.5
