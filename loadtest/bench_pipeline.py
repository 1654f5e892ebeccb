"""Benchmark of the whole streaming path on this machine: replay -> Kafka -> bridge -> scorer ->
Kafka -> writer -> PostgreSQL, every part a real local process.

    # the target: 400 transactions/s for 5 minutes, p99 end-to-end < 1 s, bounded lag
    .venv/bin/python loadtest/bench_pipeline.py --rate 400 --duration 300

    # the highest sustained rate: steps of 60 s at rising rates until one is not sustained
    .venv/bin/python loadtest/bench_pipeline.py --ramp 800,1200,1600,2000,2500,3000 --duration 60

    # the same with a challenger in shadow (a second scorer, $CHALLENGER_MODEL_TAG or the same
    # model; the bridge's SCORER_SHADOW_URL; a second writer into scores_shadow): compare the
    # champion's p99 with a run without --shadow
    .venv/bin/python loadtest/bench_pipeline.py --rate 400 --duration 120 --shadow

End-to-end latency is ``written_at - produced_at`` per row of ``scores`` (Kafka timestamp of the
transaction -> commit of its row). Lag is sampled every 2 s from committed offsets against end
offsets of both consumer groups. A step is *sustained* when rows were written at >= 95 % of the
offered rate (the drain after the replay counts against it) and p99 < 1 s. CPU per process
(psutil, over the step) shows where the time goes; the busiest process is named as the
bottleneck. Exit code 0 when every step was sustained (or, with ``--ramp``,
when at least one was).

Uses the BentoML store's ``$MODEL_TAG`` (default fraud-model:latest), training a small one into
a private store first when it is missing. Everything else (Kafka, PostgreSQL with fsync on, the
scorer, topics) is started here under a temporary directory and stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import psutil
import psycopg2

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "fraudstream.cli"]


@dataclass
class Step:
    rate: float
    duration: float
    rows: int = 0
    achieved: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    # produced -> scored by the bridge (the champion's path without the writer)
    scored_p50: float = 0.0
    scored_p99: float = 0.0
    lag_max: int = 0
    lag_end: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    load: str = ""
    shadow: dict[str, float] = field(default_factory=dict)  # --shadow: rows, drops

    @property
    def sustained(self) -> bool:
        return self.achieved >= 0.95 * self.rate and self.p99 < 1.0

    @property
    def bottleneck(self) -> str:
        return max(self.cpu, key=self.cpu.get) if self.cpu else "?"


def proc_tree_cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system) per named group of processes, children included."""
    out: dict[str, float] = {}
    for name, roots in pids.items():
        total = 0.0
        for pid in roots:
            try:
                proc = psutil.Process(pid)
                for p in [proc, *proc.children(recursive=True)]:
                    try:
                        t = p.cpu_times()
                        total += t.user + t.system
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
        out[name] = total
    return out


HISTOGRAMS = {
    "bridge batch": ("bridge", "fraudstream_bridge_batch_latency_seconds"),
    "scorer HTTP": ("bridge", "fraudstream_bridge_scorer_request_seconds"),
    "writer batch": ("writer", "fraudstream_writer_batch_latency_seconds"),
    "db write": ("writer", "fraudstream_writer_db_write_seconds"),
}
SIZES = {"bridge": "fraudstream_bridge_batch_size", "writer": "fraudstream_writer_batch_size"}


def scrape(ports: dict[str, int]) -> dict[str, float]:
    """Sums and counts of our histograms from the consumers' /metrics."""
    import urllib.request

    out: dict[str, float] = {}
    for port in ports.values():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("fraudstream_") and ("_sum " in line or "_count " in line):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
    return out


def breakdown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean of each histogram over the step (seconds, or records for batch sizes)."""
    out: dict[str, float] = {}
    series = {label: metric for label, (_, metric) in HISTOGRAMS.items()}
    series |= {f"{part} batch size": metric for part, metric in SIZES.items()}
    for label, metric in series.items():
        count = after.get(f"{metric}_count", 0) - before.get(f"{metric}_count", 0)
        total = after.get(f"{metric}_sum", 0) - before.get(f"{metric}_sum", 0)
        if count > 0:
            out[label] = total / count
    return out


def postgres_pids(data_dir: Path) -> list[int]:
    pid_file = data_dir / "postmaster.pid"
    return [int(pid_file.read_text().split()[0])] if pid_file.exists() else []


class Lag:
    """Samples both groups' lag every ``interval`` seconds in a thread."""

    def __init__(self, bootstrap: str, groups: dict[str, str], interval: float = 2.0) -> None:
        from kafka import KafkaConsumer

        # end offsets as read_committed readers see them (an open transaction of the bridge is
        # not yet work for the writer)
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
        self.groups = groups  # group -> topic
        # a group's committed offsets, read through a member-less consumer of that group
        self.readers = {
            g: KafkaConsumer(bootstrap_servers=bootstrap, group_id=g, enable_auto_commit=False)
            for g in groups
        }
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def current(self) -> int:
        from kafka import TopicPartition

        total = 0
        for group, topic in self.groups.items():
            parts = [TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic)]
            end = self.consumer.end_offsets(parts)
            for tp in parts:
                total += end[tp] - (self.readers[group].committed(tp) or 0)
        return total

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a missed sample is fine
                self.samples.append((time.monotonic(), self.current()))

    def start(self) -> Lag:
        self.thread.start()
        return self

    def window(self, since: float) -> list[int]:
        return [lag for at, lag in self.samples if at >= since]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.consumer.close()
        for reader in self.readers.values():
            reader.close(autocommit=False)


def ensure_model(env: dict[str, str], work: Path) -> dict[str, str]:
    tag = env.get("MODEL_TAG", "fraud-model:latest")
    probe = f"import bentoml; bentoml.models.get({tag!r})"
    if subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode == 0:
        return env
    print("no model in the BentoML store: training a small one into a private store", flush=True)
    env = {**env, "BENTOML_HOME": str(work / "bentoml")}
    data = work / "train.csv"
    subprocess.run(
        [*CLI, "generate", "--customers", "300", "--episodes-per-year", "2"]
        + ["--start", "2019-01-01", "--end", "2019-06-30", "-o", str(data)],
        env=env,
        check=True,
    )
    subprocess.run([*CLI, "train", "--data", str(data)], env=env, check=True)
    return env


def run_step(
    step: Step,
    csv: Path,
    env: dict[str, str],
    dsn: str,
    lag: Lag,
    pids: dict,
    work: Path,
    metric_ports: dict[str, int],
) -> Step:
    limit = int(step.rate * step.duration)
    before_cpu = proc_tree_cpu(pids)
    before_metrics = scrape(metric_ports)
    before_drops = (
        scrape_lines(metric_ports["bridge"], "fraudstream_bridge_shadow_dropped_total")
        if "challenger" in pids
        else {}
    )
    with open(work / f"replay-{step.rate:g}.log", "wb") as out:
        replay = subprocess.Popen(
            [*CLI, "replay", str(csv), "--rate", str(step.rate), "--limit", str(limit)]
            + ["--no-progress", "--fresh-ids"],  # every step resends the file's first rows
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    replay_pid = replay.pid
    began_wall = time.time()
    began = time.monotonic()
    peak_replay_cpu = 0.0
    try:
        proc = psutil.Process(replay_pid)
    except psutil.Error:
        proc = None
    while replay.poll() is None:
        time.sleep(0.5)
        if proc is not None:
            try:
                t = proc.cpu_times()
                peak_replay_cpu = t.user + t.system
            except psutil.Error:
                pass
    if replay.returncode != 0:
        raise RuntimeError(f"replay failed: {(work / f'replay-{step.rate:g}.log').read_text()}")
    # wait for the tail of the step to drain (bounded)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and lag.current() > 0:
        time.sleep(0.5)
    ended = time.monotonic()
    after_cpu = proc_tree_cpu(pids)
    step.means = breakdown(before_metrics, scrape(metric_ports))
    elapsed = ended - began
    step.cpu = {k: (after_cpu[k] - before_cpu.get(k, 0.0)) / elapsed for k in after_cpu}
    step.cpu["replay"] = peak_replay_cpu / elapsed
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            """
            SELECT count(*),
                   extract(epoch FROM max(written_at) - min(produced_at)),
                   percentile_cont(ARRAY[0.5, 0.95, 0.99])
                       WITHIN GROUP (ORDER BY extract(epoch FROM written_at - produced_at)),
                   max(extract(epoch FROM written_at - produced_at)),
                   percentile_cont(ARRAY[0.5, 0.99])
                       WITHIN GROUP (ORDER BY extract(epoch FROM scored_at - produced_at))
            FROM scores WHERE produced_at >= to_timestamp(%s)
            """,
            (began_wall - 1,),
        )
        rows, span, pcts, worst, scored_pcts = cur.fetchone()
    step.rows = int(rows)
    replay_span = max(limit / step.rate, 1e-9)
    step.achieved = rows / max(float(span or replay_span), replay_span)
    step.p50, step.p95, step.p99 = (float(x) for x in (pcts or [0, 0, 0]))
    step.max = float(worst or 0)
    step.scored_p50, step.scored_p99 = (float(x) for x in (scored_pcts or [0, 0]))
    window = lag.window(began)
    step.lag_max = max(window, default=0)
    step.lag_end = lag.current()
    step.load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if "challenger" in pids:
        time.sleep(2)  # the shadow path is best effort and a little behind
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM scores_shadow WHERE produced_at >= to_timestamp(%s)",
                (began_wall - 1,),
            )
            step.shadow["rows"] = cur.fetchone()[0]
        after = scrape_lines(metric_ports["bridge"], "fraudstream_bridge_shadow_dropped_total")
        step.shadow |= {k: v - before_drops.get(k, 0) for k, v in after.items()}
    return step


def scrape_lines(port: int, prefix: str) -> dict[str, float]:
    """Every sample of one metric family on ``port`` (label set -> value)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            key, value = line.rsplit(" ", 1)
            out[key.removeprefix(prefix)] = float(value)
    return out


def report(step: Step) -> str:
    cpu = "  ".join(f"{k} {v:.0%}" for k, v in sorted(step.cpu.items(), key=lambda kv: -kv[1]))
    means = "  ".join(
        f"{k} {v:.0f}" if "size" in k else f"{k} {v * 1000:.0f} ms" for k, v in step.means.items()
    )
    return (
        f"rate {step.rate:>6g}/s x {step.duration:g} s: {step.rows:,} rows, "
        f"achieved {step.achieved:,.0f}/s; e2e p50 {step.p50 * 1000:.0f} ms "
        f"p95 {step.p95 * 1000:.0f} ms p99 {step.p99 * 1000:.0f} ms max {step.max * 1000:.0f} ms; "
        f"lag max {step.lag_max:,} end {step.lag_end:,}; "
        f"scored p50 {step.scored_p50 * 1000:.0f} ms p99 {step.scored_p99 * 1000:.0f} ms; "
        f"{'SUSTAINED' if step.sustained else 'NOT sustained'}\n"
        f"    CPU (1.0 = one core): {cpu}   bottleneck: {step.bottleneck}   "
        f"load {step.load}\n"
        f"    means: {means}" + (f"\n    shadow: {step.shadow}" if step.shadow else "")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=400.0)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds per step")
    parser.add_argument("--ramp", default="", help="comma-separated rates (overrides --rate)")
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="run every --ramp step, also after one was not sustained (what the rest achieve)",
    )
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--bridge-batch-size", default="500")
    parser.add_argument("--bridge-max-wait-ms", default="50")
    parser.add_argument("--scorer-workers", default="1")
    parser.add_argument("--bridges", type=int, default=1, help="bridge processes (one group)")
    parser.add_argument(
        "--shadow",
        action="store_true",
        help="also run a challenger scorer in shadow ($CHALLENGER_MODEL_TAG, default the same"
        " model) and a writer into scores_shadow",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "src"))
    from fraudstream.local.kafka import KafkaBroker
    from fraudstream.local.paths import free_port
    from fraudstream.local.postgres import PostgresServer
    from fraudstream.local.scorer import ScorerServer
    from fraudstream.migrations import migrate
    from fraudstream.topics import create_topics

    rates = [float(r) for r in args.ramp.split(",") if r] or [args.rate]
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    print(f"work directory {work}", flush=True)
    started: list = []
    parts: list[subprocess.Popen] = []
    lag: Lag | None = None
    steps: list[Step] = []
    try:
        env = ensure_model({**os.environ, "LOG_FORMAT": "json"}, work)
        needed = int(max(rates) * args.duration)
        csv = work / "stream.csv"
        days = max(31, int(needed / (args.customers * 2.0)) + 31)
        end = (date(2020, 1, 1) + timedelta(days=days)).isoformat()
        subprocess.run(
            [*CLI, "generate", "--customers", str(args.customers), "--seed", "3"]
            + ["--start", "2020-01-01", "--end", end, "-o", str(csv)],
            env=env,
            check=True,
        )
        kafka = KafkaBroker(work / "kafka", heap="768m").start()
        started.append(kafka)
        postgres = PostgresServer(work / "postgres", durable=True).start()
        started.append(postgres)
        migrate(postgres.url)
        create_topics(
            kafka.bootstrap,
            ["transactions", "scoring", "transactions.dlq", "scoring.shadow"],
            6,
            3600_000,
            1,
        )
        scorer = ScorerServer(
            work / "scorer.log",
            env={**env, "DATABASE_URL": "", "WORKERS": args.scorer_workers, "ACCESS_LOG": "false"},
        ).start(timeout=180)
        started.append(scorer)
        challenger = None
        if args.shadow:
            tag = os.environ.get("CHALLENGER_MODEL_TAG") or env.get("MODEL_TAG", "")
            challenger = ScorerServer(
                work / "challenger.log",
                env={
                    **env,
                    "DATABASE_URL": "",
                    "WORKERS": args.scorer_workers,
                    "ACCESS_LOG": "false",
                    **({"MODEL_TAG": tag} if tag else {}),
                },
            ).start(timeout=180)
            started.append(challenger)
        env = {
            **env,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "DATABASE_URL": postgres.url,
            "SCORER_URL": scorer.url,
            "BRIDGE_BATCH_SIZE": args.bridge_batch_size,
            "BRIDGE_BATCH_MAX_WAIT_MS": args.bridge_max_wait_ms,
        }
        if challenger is not None:
            env["SCORER_SHADOW_URL"] = challenger.url
        shadow_writer_env = {
            "TOPIC_SCORING": "scoring.shadow",
            "WRITER_TABLE": "scores_shadow",
            "WRITER_GROUP_ID": "fraudstream-writer-shadow",
        }
        metric_ports = {"writer": free_port(), "bridge": free_port()}
        names = ["writer", "bridge"] + [f"bridge{i}" for i in range(2, args.bridges + 1)]
        if challenger is not None:
            names.append("writer-shadow")
        for name in names:
            port = metric_ports.get(name, 0)
            command = "writer" if name == "writer-shadow" else name.rstrip("0123456789")
            with open(work / f"{name}.log", "wb") as out:
                parts.append(
                    subprocess.Popen(
                        [*CLI, command, "--metrics-port", str(port)],
                        env={**env, **shadow_writer_env} if name == "writer-shadow" else env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        pids = {
            "kafka": [kafka.proc.pid],
            "postgres": postgres_pids(postgres.data),
            "scorer": [scorer.proc.pid],
            "writer": [parts[0].pid],
            "bridge": [p.pid for p in parts[1 : args.bridges + 1]],
        }
        if challenger is not None:
            pids |= {"challenger": [challenger.proc.pid], "writer-shadow": [parts[-1].pid]}
        lag = Lag(
            kafka.bootstrap,
            {"fraudstream-bridge": "transactions", "fraudstream-writer": "scoring"},
        ).start()
        # warm-up: the first transactions pay for JIT-free Python imports and connections
        subprocess.run(
            [*CLI, "replay", str(csv), "--rate", "0", "--limit", "2000", "--no-progress"]
            + ["--fresh-ids"],
            env=env,
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and lag.current() > 0:
            time.sleep(0.5)
        for rate in rates:
            step = run_step(
                Step(rate, args.duration), csv, env, postgres.url, lag, pids, work, metric_ports
            )
            steps.append(step)
            print(report(step), flush=True)
            for part in parts:
                if part.poll() is not None:
                    raise RuntimeError(f"a consumer died (exit {part.returncode}); see {work}")
            if args.ramp and not step.sustained and not args.keep_going:
                break
    finally:
        if lag is not None:
            lag.close()
        for part in parts:
            if part.poll() is None:
                part.terminate()
                part.wait(30)
        for service in reversed(started):
            service.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    sustained = [s for s in steps if s.sustained]
    if sustained:
        best = max(sustained, key=lambda s: s.rate)
        print(
            f"highest sustained rate: {best.rate:g}/s (p99 {best.p99 * 1000:.0f} ms); "
            f"bottleneck there: {best.bottleneck}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps([{**s.__dict__, "sustained": s.sustained} for s in steps], indent=2)
        )
    ok = bool(sustained) if args.ramp else all(s.sustained for s in steps)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
