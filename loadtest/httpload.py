"""A small open-loop HTTP/1.1 load generator for the scorer benchmarks (standard library only).

Requests are sent on a fixed schedule (request ``i`` is due at ``start + i / rate``) over a pool
of keep-alive connections, and each latency is measured from the moment the request was *due*,
not from when a free connection picked it up. A slow server therefore shows up as latency
instead of silently lowering the offered rate (no coordinated omission). It costs far less CPU
per request than Locust, which matters when the load generator shares 2 cores with the server.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    """What one run measured; latencies in seconds."""

    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def achieved_rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        """Latency at quantile ``q`` (0..100) in milliseconds (nearest-rank)."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
        return ordered[rank] * 1000

    def summary(self) -> dict[str, float | int | dict[str, int]]:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.error_count,
            "error_kinds": dict(self.errors),
            "achieved_rps": round(self.achieved_rate, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p95_ms": round(self.percentile(95), 2),
            "p99_ms": round(self.percentile(99), 2),
            "max_ms": round(self.percentile(100), 2),
        }


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def build_request(url: str, body: bytes, method: str = "POST") -> tuple[str, int, bytes]:
    """(host, port, raw request bytes) for a JSON request to ``url``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/"
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return host, port, head.encode() + body


async def open_loop(
    url: str,
    bodies: Callable[[int], bytes],
    rate: float,
    duration: float,
    connections: int = 64,
    timeout: float = 10.0,
    check: Callable[[int, bytes], str | None] | None = None,
) -> LoadResult:
    """Offer ``rate`` requests/s for ``duration`` s; ``bodies(i)`` is the i-th request body.

    ``check(status, body)`` returns an error kind or None; by default any non-2xx is an error.
    """
    result = LoadResult()
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(_Connection(host, port))

    async def one(i: int, due: float) -> None:
        conn = await idle.get()
        try:
            _, _, raw = build_request(url, bodies(i))
            status, body = await asyncio.wait_for(conn.request(raw), timeout)
            latency = time.perf_counter() - due
            kind = check(status, body) if check else (None if status < 300 else f"http_{status}")
            if kind:
                result.error(kind)
            else:
                result.ok += 1
                result.latencies.append(latency)
        except TimeoutError:
            conn.close()
            result.error("timeout")
        except (OSError, asyncio.IncompleteReadError, ValueError) as err:
            conn.close()
            result.error(type(err).__name__)
        finally:
            idle.put_nowait(conn)

    total = int(rate * duration)
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i, due)))
        result.sent += 1
    await asyncio.gather(*tasks)
    result.elapsed = max(time.perf_counter() - start, duration)
    while not idle.empty():
        idle.get_nowait().close()
    return result


async def closed_loop(
    url: str,
    bodies: Callable[[int], bytes],
    concurrency: int,
    duration: float,
    timeout: float = 30.0,
) -> LoadResult:
    """``concurrency`` clients each send the next request as soon as the previous one answers."""
    result = LoadResult()
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    counter = iter(range(10**12))
    stop_at = time.perf_counter() + duration

    async def client() -> None:
        conn = _Connection(host, port)
        while time.perf_counter() < stop_at:
            i = next(counter)
            _, _, raw = build_request(url, bodies(i))
            sent = time.perf_counter()
            result.sent += 1
            try:
                status, _ = await asyncio.wait_for(conn.request(raw), timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                conn.close()
                result.error("transport")
                continue
            if status < 300:
                result.ok += 1
                result.latencies.append(time.perf_counter() - sent)
            else:
                result.error(f"http_{status}")
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - start
    return result
