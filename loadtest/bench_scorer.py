"""Benchmarks of the fraud scorer's targets; prints the figures (it is not a pass/fail test).

    .venv/bin/python loadtest/bench_scorer.py all              # start a scorer, run everything
    .venv/bin/python loadtest/bench_scorer.py rate --rate 400 --duration 60
    .venv/bin/python loadtest/bench_scorer.py max --p99-ms 100  # highest /score rate, p99 < 100 ms
    .venv/bin/python loadtest/bench_scorer.py batch --size 500  # /score_batch transactions/s
    .venv/bin/python loadtest/bench_scorer.py coldstart          # start -> /readyz 200, RSS

Without ``--url`` the script starts its own ``bentoml serve`` (``make serve``'s service) with
``--workers`` workers on a free port, serving MODEL_TAG (default fraud-model:latest) from
BENTOML_HOME; with ``--url`` it loads an already running scorer. Load comes from
``loadtest/httpload.py`` (open loop: latency counts from when a request was due). Payloads are
simulated transactions (``fraudstream.simulator``), each with a fresh ``transaction_id``.
The machine's load average is printed with every figure: other work on the machine skews them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from httpload import LoadResult, closed_loop, open_loop  # noqa: E402

from fraudstream.local.scorer import ScorerServer  # noqa: E402


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} on {os.cpu_count()} cores"


def sample_transactions(count: int, seed: int = 21) -> list[dict]:
    """Simulated transactions in time order, JSON-ready (no label)."""
    from fraudstream.simulator import simulate

    customers = max(50, count // 150)
    frame = simulate(customers, date(2020, 7, 1), date(2020, 9, 30), seed=seed)
    frame = frame.drop(columns=["target"]).sort_values("transaction_time")
    frame["transaction_time"] = frame["transaction_time"].dt.strftime("%Y-%m-%d %H:%M:%S")
    rows = frame.to_dict("records")
    while len(rows) < count:
        rows = rows + rows
    return rows[:count]


class Payloads:
    """Pre-serialised request bodies with a unique ``transaction_id`` in each."""

    def __init__(self, rows: list[dict]) -> None:
        run = uuid.uuid4().hex[:8]
        self.rows = rows
        self.singles = [
            json.dumps({**row, "transaction_id": f"bench-{run}-{i}"}).encode()
            for i, row in enumerate(rows)
        ]

    def single(self, i: int) -> bytes:
        return self.singles[i % len(self.singles)]

    def batches(self, size: int) -> Callable[[int], bytes]:
        count = max(1, len(self.singles) // size)
        bodies = [
            b'{"transactions":[' + b",".join(self.singles[k * size : (k + 1) * size]) + b"]}"
            for k in range(count)
        ]
        return lambda i: bodies[i % len(bodies)]


def rss_mb(server: ScorerServer) -> dict[int, float]:
    out = {}
    for pid in server.pids():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                out[pid] = int(line.split()[1]) / 1024
    return out


def cpu_seconds(server: ScorerServer | None) -> float:
    """CPU time (user + system) used so far by the server's processes."""
    if server is None:
        return 0.0
    ticks = 0
    for pid in server.pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


SERVER: ScorerServer | None = None  # set when this script started the scorer


def report(title: str, result: LoadResult, extra: str = "", cpu: float = 0.0) -> None:
    s = result.summary()
    print(
        f"{title}: sent {s['sent']}, ok {s['ok']}, errors {s['errors']} {s['error_kinds'] or ''}, "
        f"achieved {s['achieved_rps']}/s, p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms, "
        f"p99 {s['p99_ms']} ms, max {s['max_ms']} ms{extra}"
        + (f", server CPU {cpu * 1000 / max(result.ok, 1):.2f} ms/request" if cpu else "")
        + f" [{load_average()}]",
        flush=True,
    )


def warm_up(url: str, payloads: Payloads) -> None:
    asyncio.run(open_loop(f"{url}/score", payloads.single, rate=100, duration=3))


def run_rate(url: str, payloads: Payloads, rate: float, duration: float) -> LoadResult:
    cpu = cpu_seconds(SERVER)
    result = asyncio.run(open_loop(f"{url}/score", payloads.single, rate, duration))
    report(f"/score at {rate:g}/s for {duration:g} s", result, cpu=cpu_seconds(SERVER) - cpu)
    return result


def run_max(
    url: str, payloads: Payloads, start: float, step: float, duration: float, p99_ms: float
) -> float:
    best = 0.0
    rate = start
    while True:
        cpu = cpu_seconds(SERVER)
        result = asyncio.run(open_loop(f"{url}/score", payloads.single, rate, duration))
        ok = result.error_count == 0 and result.percentile(99) < p99_ms
        verdict = "holds" if ok else "fails"
        report(
            f"/score at {rate:g}/s for {duration:g} s {verdict}",
            result,
            cpu=cpu_seconds(SERVER) - cpu,
        )
        if not ok:
            break
        best = rate
        rate += step
        time.sleep(2)
    print(f"highest /score rate with p99 < {p99_ms:g} ms and no errors: {best:g}/s", flush=True)
    return best


def run_batch(
    url: str, payloads: Payloads, size: int, concurrency: int, duration: float
) -> LoadResult:
    cpu = cpu_seconds(SERVER)
    result = asyncio.run(
        closed_loop(f"{url}/score_batch", payloads.batches(size), concurrency, duration)
    )
    tx_rate = result.ok * size / result.elapsed if result.elapsed else 0.0
    report(
        f"/score_batch of {size}, {concurrency} in flight, {duration:g} s",
        result,
        f", {tx_rate:,.0f} transactions/s",
        cpu=cpu_seconds(SERVER) - cpu,
    )
    return result


def start_server(args: argparse.Namespace, log_dir: Path) -> ScorerServer:
    env = {"WORKERS": str(args.workers), "DATABASE_URL": args.database_url}
    if args.model_tag:
        env["MODEL_TAG"] = args.model_tag
    server = ScorerServer(log_dir / "scorer.log", env=env)
    server.start(timeout=120)
    print(
        f"scorer started with {args.workers} worker(s): /readyz = 200 after "
        f"{server.ready_after:.1f} s [{load_average()}]",
        flush=True,
    )
    return server


def print_rss(server: ScorerServer | None, when: str) -> None:
    if server is None:
        return
    sizes = rss_mb(server)
    listed = ", ".join(f"{mb:.0f} MB" for mb in sizes.values())
    print(f"RSS {when}: {listed} (arbiter + workers)", flush=True)


def main(argv: list[str] | None = None) -> int:
    global SERVER
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "what", choices=["all", "rate", "max", "batch", "coldstart"], default="all", nargs="?"
    )
    parser.add_argument("--url", help="an already running scorer (default: start one)")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "2")))
    parser.add_argument("--model-tag", default=os.environ.get("MODEL_TAG", ""))
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    parser.add_argument("--rate", type=float, default=400)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--start", type=float, default=200, help="max: first rate")
    parser.add_argument("--step", type=float, default=100, help="max: rate increment")
    parser.add_argument("--step-duration", type=float, default=20, help="max: seconds per step")
    parser.add_argument("--p99-ms", type=float, default=100)
    parser.add_argument("--size", type=int, default=500, help="batch: transactions per call")
    parser.add_argument("--concurrency", type=int, default=4, help="batch: calls in flight")
    parser.add_argument("--batch-duration", type=float, default=30)
    parser.add_argument("--transactions", type=int, default=60_000)
    args = parser.parse_args(argv)

    print(f"preparing {args.transactions:,} simulated transactions ...", flush=True)
    payloads = Payloads(sample_transactions(args.transactions))
    server: ScorerServer | None = None
    with tempfile.TemporaryDirectory(prefix="bench-scorer-") as tmp:
        try:
            if args.url:
                url = args.url.rstrip("/")
            else:
                server = SERVER = start_server(args, Path(tmp))
                url = server.url
                print_rss(server, "after start")
            if args.what == "coldstart":
                return 0
            warm_up(url, payloads)
            if args.what in ("all", "rate"):
                run_rate(url, payloads, args.rate, args.duration)
            if args.what in ("all", "max"):
                run_max(url, payloads, args.start, args.step, args.step_duration, args.p99_ms)
            if args.what in ("all", "batch"):
                run_batch(url, payloads, args.size, args.concurrency, args.batch_duration)
            print_rss(server, "after the load")
        finally:
            if server is not None:
                code = server.stop()
                print(f"scorer stopped (exit code {code})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
