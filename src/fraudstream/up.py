"""``fraudstream up`` (``make up``): the whole pipeline on one machine with embedded defaults.

Starts a local Kafka broker and PostgreSQL (state under ``.run/``), prints where each listens,
and stops everything cleanly on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from fraudstream.local.kafka import KafkaBroker, MissingToolError
from fraudstream.local.postgres import PostgresServer

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", default=".run", help="state and logs (default: .run)")
    parser.add_argument("--kafka-port", type=int, default=9092)
    parser.add_argument("--pg-port", type=int, default=5432)


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir).resolve()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    started: list = []
    try:
        kafka = KafkaBroker(run_dir / "kafka", port=args.kafka_port)
        print(f"starting Kafka (KRaft) ...      logs: {kafka.log_path}", flush=True)
        started.append(kafka.start())
        postgres = PostgresServer(run_dir / "postgres", port=args.pg_port, durable=True)
        print(f"starting PostgreSQL 16 ...      logs: {postgres.log_path}", flush=True)
        started.append(postgres.start())
        print(f"\nKafka       {kafka.bootstrap}", flush=True)
        print(f"PostgreSQL  {postgres.url}", flush=True)
        print("\nrunning; press Ctrl-C to stop", flush=True)
        stop.wait()
        print("\nstopping ...", flush=True)
        return 0
    except MissingToolError as err:
        print(f"error: {err}")
        return 2
    finally:
        for part in reversed(started):
            part.stop()
        if started:
            print("stopped", flush=True)
