"""``fraudstream up`` (``make up``): the whole pipeline on one machine with embedded defaults.

Starts, in order: a local Kafka broker and PostgreSQL (state under ``.run/``), the migrations
and topics, the scorer (``bentoml serve``; the default model is trained first if the BentoML
store lacks it), ``fraudstream bridge`` and ``fraudstream writer``, and a replay of generated
transactions at a steady rate (``--rate``, default ``$REPLAY_RATE`` or 50/s). It prints where
each part listens, then one live line of counts (sent, scored, written, DLQ). Every process
logs to ``.run/logs/<part>.log``; a part that dies is reported with the tail of its log and
everything is stopped. Ctrl-C / SIGTERM stop everything cleanly, producers first.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fraudstream.local.paths import REPO_ROOT
from fraudstream.local.process import stop_group

log = logging.getLogger(__name__)

MODEL_TAG = "fraud-model:latest"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", default=".run", help="state and logs (default: .run)")
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--scorer-port", type=int, default=3000)
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="transactions per second replayed (default: $REPLAY_RATE or 50)",
    )
    parser.add_argument(
        "--customers", type=int, default=1000, help="card holders in the generated stream"
    )
    parser.add_argument("--no-replay", action="store_true", help="start the pipeline only")
    parser.add_argument("--ui-port", type=int, default=8501, help="the analyst page (Streamlit)")
    parser.add_argument("--no-ui", action="store_true", help="do not start the analyst page")


def _port(wanted: int) -> int:
    """``wanted`` when nothing listens there, otherwise a free port."""
    from fraudstream.local.paths import free_port

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", wanted))
            return wanted
        except OSError:
            return free_port()


def _tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Part:
    """One child process of the pipeline, in its own session, logging to its own file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> Part:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(f"--- fraudstream up: {self.name} starting at {time.ctime()}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None:
            stop_group(self.proc, timeout)


def _model_present(env: dict[str, str]) -> bool:
    probe = (
        "import sys, bentoml\n"
        "try:\n"
        f"    bentoml.models.get({os.environ.get('MODEL_TAG', MODEL_TAG)!r})\n"
        "except Exception:\n"
        "    sys.exit(1)\n"
    )
    return subprocess.run([sys.executable, "-c", probe], env=env).returncode == 0


def _run_step(argv: list[str], env: dict[str, str], log_path: Path) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        code = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RuntimeError(f"{' '.join(argv[2:4])} failed ({code}):\n{_tail(log_path)}")


class Counts:
    """sent from the end offsets of ``transactions``, written from the table, scored / DLQ by
    counting the records of those topics as a read_committed reader gets them: the bridge
    writes them in transactions, whose commit markers (and aborted records) take offsets too,
    so end offsets would overcount."""

    def __init__(self, bootstrap: str, dsn: str, topics: dict[str, str]) -> None:
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.tally = KafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            client_id="fraudstream-up-counts",
        )
        self.tallied = {topics["scoring"]: 0, topics["dlq"]: 0}
        self.assigned = False
        self.dsn = dsn
        self.topics = topics
        self.conn: Any = None

    def _tally(self) -> dict[str, int]:
        """Records of ``scoring`` and the DLQ so far (counted from the start, a bounded number
        per call, so a long existing topic is caught up with over a few calls)."""
        from kafka import TopicPartition

        if not self.assigned:
            parts = [
                TopicPartition(topic, p)
                for topic in self.tallied
                for p in self.consumer.partitions_for_topic(topic) or ()
            ]
            if not parts:
                return self.tallied
            self.tally.assign(parts)
            self.tally.seek_to_beginning(*parts)
            self.assigned = True
        for _ in range(20):
            polled = self.tally.poll(timeout_ms=50, max_records=5000)
            if not polled:
                break
            for tp, records in polled.items():
                self.tallied[tp.topic] += len(records)
        return self.tallied

    def _end(self, topic: str) -> int:
        from kafka import TopicPartition

        parts = self.consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        return sum(self.consumer.end_offsets(tps).values()) if tps else 0

    def _written(self) -> int:
        import psycopg2

        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg2.connect(self.dsn, connect_timeout=2)
                self.conn.autocommit = True
            with self.conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM scores")
                return int(cur.fetchone()[0])
        except psycopg2.Error:
            self.conn = None
            return -1

    def read(self) -> dict[str, int]:
        tallied = self._tally()
        return {
            "sent": self._end(self.topics["transactions"]),
            "scored": tallied[self.topics["scoring"]],
            "written": self._written(),
            "dlq": tallied[self.topics["dlq"]],
        }

    def close(self) -> None:
        self.consumer.close(autocommit=False)
        self.tally.close(autocommit=False)
        if self.conn is not None:
            self.conn.close()


def run(args: argparse.Namespace) -> int:
    from fraudstream.local.kafka import KafkaBroker, MissingToolError
    from fraudstream.local.postgres import PostgresServer
    from fraudstream.settings import KafkaSettings, ReplaySettings

    run_dir = Path(args.run_dir).resolve()
    logs = run_dir / "logs"
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    rate = ReplaySettings().replay_rate if args.rate is None else args.rate
    kafka_settings = KafkaSettings()
    topics = {
        "transactions": kafka_settings.topic_transactions,
        "scoring": kafka_settings.topic_scoring,
        "dlq": kafka_settings.topic_dlq,
        "labels": kafka_settings.topic_labels,
    }

    services: list = []  # Kafka, PostgreSQL: stopped last
    parts: list[Part] = []  # our processes, stopped first (in reverse order of start)
    counts: Counts | None = None
    code = 0
    try:
        kafka = KafkaBroker(run_dir / "kafka", port=_port(args.kafka_port))
        print(f"starting Kafka (KRaft) ...      logs: {kafka.log_path}", flush=True)
        services.append(kafka.start())
        postgres = PostgresServer(run_dir / "postgres", port=_port(args.pg_port), durable=True)
        print(f"starting PostgreSQL 16 ...      logs: {postgres.log_path}", flush=True)
        services.append(postgres.start())
        if stop.is_set():
            return 130

        from fraudstream.migrations import migrate
        from fraudstream.topics import create_topics

        applied = migrate(postgres.url)
        print(f"migrations: {', '.join(applied) or 'up to date'}", flush=True)
        created = create_topics(
            kafka.bootstrap,
            list(topics.values()),
            partitions=kafka_settings.topic_partitions,
            retention_ms=kafka_settings.topic_retention_ms,
        )
        print("topics: " + ", ".join(f"{n} ({s})" for n, s in created.items()), flush=True)

        base_env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "DATABASE_URL": postgres.url,
            "LOG_FORMAT": os.environ.get("LOG_FORMAT", "json"),
        }
        cli = [sys.executable, "-m", "fraudstream.cli"]
        data = run_dir / "data"

        if not _model_present(base_env):
            # the same model as `make model`
            train_csv = run_dir / "model" / "transactions-2019.csv"
            print("no model in the BentoML store: training the default one ...", flush=True)
            print(f"                                logs: {logs / 'train.log'}", flush=True)
            if not train_csv.exists():
                train_csv.parent.mkdir(parents=True, exist_ok=True)
                _run_step(
                    [*cli, "generate", "--customers", "500", "--seed", "42"]
                    + ["--start", "2019-01-01", "--end", "2019-12-31", "-o", str(train_csv)],
                    base_env,
                    logs / "train.log",
                )
            _run_step(
                [*cli, "train", "--data", str(train_csv), "--threads", "2", "--seed", "0"],
                base_env,
                logs / "train.log",
            )
        if stop.is_set():
            return 130

        from fraudstream.local.scorer import ScorerServer

        scorer = ScorerServer(
            logs / "scorer.log",
            env={**base_env, "WORKERS": "1"},
            port=_port(args.scorer_port),
        )
        print(f"starting the scorer ...         logs: {scorer.log_path}", flush=True)
        services.append(scorer.start(timeout=180))

        ports = {name: _port(p) for name, p in (("bridge", 9101), ("writer", 9102))}
        pipeline_env = {**base_env, "SCORER_URL": scorer.url}
        for name in ("writer", "bridge"):
            part = Part(
                name,
                [*cli, name, "--metrics-port", str(ports[name])],
                pipeline_env,
                logs / f"{name}.log",
            )
            parts.append(part.start())
        ports["labels"] = _port(9104)
        labels_argv = [*cli, "labels", "consume", "--metrics-port", str(ports["labels"])]
        parts.append(Part("labels", labels_argv, pipeline_env, logs / "labels.log").start())

        if not args.no_ui:
            ports["ui"] = _port(args.ui_port)
            ui_argv = [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "ui" / "app.py")]
            ui_argv += ["--server.port", str(ports["ui"]), "--server.headless", "true"]
            ui_argv += ["--browser.gatherUsageStats", "false"]
            parts.append(Part("ui", ui_argv, pipeline_env, logs / "ui.log").start())

        stream_csv = data / "stream.csv"
        if not args.no_replay and not stream_csv.exists():
            print("generating transactions to replay ...", flush=True)
            stream_csv.parent.mkdir(parents=True, exist_ok=True)
            _run_step(
                [*cli, "generate", "--customers", str(args.customers), "--seed", "1"]
                + ["--start", "2020-01-01", "--end", "2020-03-31", "-o", str(stream_csv)],
                base_env,
                logs / "generate.log",
            )
        replay: Part | None = None
        if not args.no_replay:
            ports["replay"] = _port(9103)
            replay = Part(
                "replay",
                [*cli, "replay", str(stream_csv), "--rate", str(rate)],
                {**pipeline_env, "METRICS_PORT": str(ports["replay"])},
                logs / "replay.log",
            )
            parts.append(replay.start())

        print(
            "\n"
            f"Kafka        {kafka.bootstrap}   topics {', '.join(topics.values())}\n"
            f"PostgreSQL   {postgres.url}   (table scores, view scores_recent_fraud)\n"
            f"scorer       {scorer.url}/score_batch   (metrics {scorer.url}/metrics)\n"
            f"bridge       metrics http://127.0.0.1:{ports['bridge']}/metrics\n"
            f"writer       metrics http://127.0.0.1:{ports['writer']}/metrics\n"
            f"labels       metrics http://127.0.0.1:{ports['labels']}/metrics   (quality:"
            " fraudstream report)\n"
            + (
                f"replay       {rate:g} transactions/s from {stream_csv}   "
                f"metrics http://127.0.0.1:{ports['replay']}/metrics\n"
                if replay
                else ""
            )
            + (f"analyst page http://127.0.0.1:{ports['ui']}/\n" if "ui" in ports else "")
            + f"logs         {logs}/\n\nrunning; press Ctrl-C to stop",
            flush=True,
        )
        counts = Counts(kafka.bootstrap, postgres.url, topics)
        code = _watch(stop, parts, replay, scorer, counts)
        return code
    except MissingToolError as err:
        print(f"error: {err}")
        return 2
    except RuntimeError as err:
        print(f"error: {err}")
        return 1
    finally:
        print("\nstopping ...", flush=True)
        for part in reversed(parts):
            part.stop()
        if counts is not None:
            counts.close()
        for service in reversed(services):
            service.stop()
        if services:
            print("stopped", flush=True)


def _watch(
    stop: threading.Event, parts: list[Part], replay: Part | None, scorer: Any, counts: Counts
) -> int:
    """The live line until Ctrl-C or a part dies (then: its log tail, exit code 1)."""
    tty = sys.stdout.isatty()
    last_print = 0.0
    previous: tuple[float, int] | None = None
    replay_reported = False
    while not stop.wait(1.0):
        for part in parts:
            code = part.exited()
            if code is None:
                continue
            if part is replay and code == 0:
                if not replay_reported:
                    print(f"\nreplay finished: {_tail(part.log_path, 1)}", flush=True)
                    replay_reported = True
                continue
            print(
                f"\n{part.name} died (exit {code}); last lines of {part.log_path}:\n"
                f"{_tail(part.log_path)}",
                flush=True,
            )
            return 1
        if scorer.proc is not None and scorer.proc.poll() is not None:
            print(f"\nthe scorer died; last lines of its log:\n{scorer.tail(2000)}", flush=True)
            return 1
        try:
            now_counts = counts.read()
        except Exception as err:  # noqa: BLE001 - the line is informative only
            log.debug("counts failed: %r", err)
            continue
        now = time.monotonic()
        rate = ""
        if previous is not None and now > previous[0]:
            rate = f"  {(now_counts['written'] - previous[1]) / (now - previous[0]):,.0f}/s"
        previous = (now, now_counts["written"])
        line = (
            f"sent {now_counts['sent']:,}  scored {now_counts['scored']:,}  "
            f"written {now_counts['written']:,}  DLQ {now_counts['dlq']:,}{rate}"
        )
        if tty:
            sys.stdout.write("\r" + line.ljust(80))
            sys.stdout.flush()
        elif now - last_print >= 10:
            print(line, flush=True)
            last_print = now
    return 0
