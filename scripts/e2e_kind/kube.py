"""Thin helpers around kubectl, helm, kind and docker for the end-to-end run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


class StepError(RuntimeError):
    """A command or a check the run cannot go on without failed."""


def run(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = None,
    cwd: Path = ROOT,
    echo: bool = False,
) -> subprocess.CompletedProcess[str]:
    if echo:
        print("  $ " + " ".join(argv), flush=True)
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        text=True,
        capture_output=capture,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        tail = ((proc.stderr or "") + (proc.stdout or "")).strip().splitlines()[-15:]
        raise StepError(f"{' '.join(argv[:4])} ... exited {proc.returncode}:\n" + "\n".join(tail))
    return proc


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


class Kube:
    """kubectl and helm bound to one kube context."""

    def __init__(self, context: str, namespace: str) -> None:
        self.context = context
        self.namespace = namespace

    def kubectl(self, *args: str, namespace: str | None = None, **kw) -> str:
        ns = namespace or self.namespace
        argv = ["kubectl", "--context", self.context, "-n", ns, *args]
        return run(argv, **kw).stdout

    def json(self, *args: str, namespace: str | None = None) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json", namespace=namespace))

    def helm(self, *args: str, namespace: str | None = None, **kw) -> str:
        ns = namespace or self.namespace
        return run(["helm", "--kube-context", self.context, "-n", ns, *args], **kw).stdout

    def release_exists(self, name: str, namespace: str) -> bool:
        out = self.helm("list", "-q", "--filter", f"^{name}$", namespace=namespace)
        return name in out.split()

    def pods(self, namespace: str | None = None, selector: str = "") -> list[dict]:
        args = ["get", "pods"] + (["-l", selector] if selector else [])
        return self.json(*args, namespace=namespace)["items"]

    def wait_ready(self, namespace: str, timeout_s: int = 900) -> list[dict]:
        """Wait until every pod of the namespace that is not a finished Job pod is Ready."""
        deadline = time.monotonic() + timeout_s
        while True:
            pods = [p for p in self.pods(namespace) if p["status"].get("phase") != "Succeeded"]
            waiting = [p["metadata"]["name"] for p in pods if not pod_ready(p)]
            if pods and not waiting:
                return pods
            if time.monotonic() > deadline:
                raise StepError(f"pods not Ready in {namespace} after {timeout_s}s: {waiting}")
            time.sleep(3)

    def exec_sql(self, sql: str) -> list[list[str]]:
        """Run SQL in the in-cluster PostgreSQL (pod postgres-0) as the database owner."""
        script = (
            'PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -U "$POSTGRES_USER" '
            '-d "$POSTGRES_DB" -v ON_ERROR_STOP=1 -tA -F "|" -c "$0"'
        )
        out = self.kubectl("exec", "postgres-0", "-c", "postgres", "--", "sh", "-c", script, sql)
        return [line.split("|") for line in out.splitlines() if line.strip()]


def pod_ready(pod: dict) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def port_forward(kube: Kube, target: str, port: int | str, namespace: str) -> Iterator[str]:
    """``kubectl port-forward`` to ``target`` (e.g. ``svc/kps-prometheus``); yields the base URL."""
    local = free_port()
    proc = subprocess.Popen(
        ["kubectl", "--context", kube.context, "-n", namespace, "port-forward", target,
         f"{local}:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{local}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise StepError(f"port-forward {target}: {proc.stderr.read().strip()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", local), 1):
                break
            if time.monotonic() > deadline:
                raise StepError(f"port-forward {target} did not open")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def reachable(url: str, path: str = "/") -> bool:
    try:
        httpx.get(url + path, timeout=3)
        return True
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def service_url(
    kube: Kube, service: str, port: int | str, namespace: str, node_port_url: str = ""
) -> Iterator[str]:
    """The host-mapped NodePort when it answers (kind's extraPortMappings), else a port-forward."""
    if node_port_url and reachable(node_port_url):
        yield node_port_url
        return
    with port_forward(kube, f"svc/{service}", port, namespace) as url:
        yield url


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stdout, flush=True)
