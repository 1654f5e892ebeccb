"""Liveness of a long-running process: a heartbeat from its loop, and ``/healthz`` next to
``/metrics`` on one HTTP port.

A consumer's ``/metrics`` keeps answering while its loop is stuck (a hung poll, a deadlock), so
it cannot tell Kubernetes to restart the pod. The loop calls :func:`beat` whenever it makes
progress (every poll, idle ones included, every batch, every retry wait); ``/healthz`` answers
503 once the last beat is older than ``LIVENESS_MAX_AGE_S`` (:class:`HealthSettings`, 60 s).
The clock starts when the heartbeat is created, so a loop that never starts fails too.

    from fraudstream import health
    health.serve(9101)        # GET /metrics (Prometheus text), GET /healthz (200 or 503)
    ...
    health.beat()             # in the loop
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"


class Heartbeat:
    """When the loop last made progress (monotonic clock)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        self._last = self._clock()

    def age(self) -> float:
        """Seconds since the last beat (or since creation, before the first one)."""
        return max(0.0, self._clock() - self._last)


HEARTBEAT = Heartbeat()


def beat() -> None:
    """Record progress of this process's loop."""
    HEARTBEAT.beat()


def make_app(
    max_age_s: float, heartbeat: Heartbeat = HEARTBEAT, registry: Any = None
) -> Callable[..., Iterable[bytes]]:
    """WSGI app: ``/healthz`` from ``heartbeat``, every other path Prometheus' exposition."""
    from prometheus_client import REGISTRY, make_wsgi_app

    metrics_app = make_wsgi_app(registry if registry is not None else REGISTRY)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != HEALTH_PATH:
            return metrics_app(environ, start_response)
        age = heartbeat.age()
        healthy = age <= max_age_s
        status = "200 OK" if healthy else "503 Service Unavailable"
        verdict = "ok" if healthy else "stuck"
        body = f"{verdict}: last progress {age:.1f} s ago (limit {max_age_s:g} s)\n".encode()
        start_response(
            status, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
        )
        return [body]

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow scrape never delays a probe."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log line per probe or scrape on stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(
    port: int,
    max_age_s: float | None = None,
    heartbeat: Heartbeat = HEARTBEAT,
    registry: Any = None,
    addr: str = "0.0.0.0",
) -> WSGIServer:
    """Serve ``/metrics`` and ``/healthz`` on ``port`` from a daemon thread; return the server
    (``shutdown()`` stops it). ``max_age_s`` defaults to ``LIVENESS_MAX_AGE_S``."""
    if max_age_s is None:
        from fraudstream.settings import HealthSettings

        max_age_s = HealthSettings().liveness_max_age_s
    app = make_app(max_age_s, heartbeat, registry)
    server = make_server(addr, port, app, _ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
