"""`fraudstream up` (what `make up` runs): the whole pipeline from nothing, as a user starts it,
until results are written, then Ctrl-C stops every part."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fraudstream.local.paths import free_port

from .conftest import FRAUDSTREAM

pytestmark = pytest.mark.integration

COUNTS = re.compile(r"sent ([\d,]+)\s+scored ([\d,]+)\s+written ([\d,]+)\s+DLQ ([\d,]+)")


def number(text: str) -> int:
    return int(text.replace(",", ""))


def test_up_runs_the_pipeline_until_results_are_written_and_ctrl_c_stops_it(
    tmp_path: Path, bentoml_home: Path, trained_model: str
) -> None:
    ports = {name: free_port() for name in ("kafka", "pg", "scorer")}
    argv = [
        *FRAUDSTREAM,
        "up",
        "--run-dir",
        str(tmp_path / "run"),
        "--kafka-port",
        str(ports["kafka"]),
        "--pg-port",
        str(ports["pg"]),
        "--scorer-port",
        str(ports["scorer"]),
        "--rate",
        "100",
        "--customers",
        "60",
        "--no-ui",
    ]
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))
    reader.start()
    written = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            found = [COUNTS.search(line) for line in lines]
            counts = [m for m in found if m and number(m.group(3)) > 0]
            if counts:
                written = counts[-1]
                break
            time.sleep(1)
        assert written is not None, "no result written within 5 min:\n" + "".join(lines)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
    output = "".join(lines)
    assert "running; press Ctrl-C to stop" in output
    assert "stopped" in output.splitlines()[-1], output[-2000:]
    assert number(written.group(4)) == 0, written.group(0)  # nothing in the DLQ
    assert number(written.group(3)) <= number(written.group(2)) <= number(written.group(1))
    # Kafka, PostgreSQL and the scorer are gone: their ports are free again
    for name, port in ports.items():
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"{name} still listens on {port}"
