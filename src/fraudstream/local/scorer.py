"""The fraud scorer as a local process: ``bentoml serve`` of ``bentos/fraud_scorer`` on a port.

Used by the tests (the ``scorer_url`` fixture), the benchmarks under ``loadtest/`` and
``make serve``. The process runs in its own process group; :meth:`ScorerServer.stop` sends
SIGTERM (BentoML shuts down gracefully) and SIGKILL only if it has not exited in time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from fraudstream.local.paths import REPO_ROOT, free_port
from fraudstream.local.process import stop_group

SERVICE = "bentos.fraud_scorer.service:FraudScorer"


def private_home(shared: Path, directory: Path) -> Path:
    """A BentoML home of one server's own, with the model and Bento stores of ``shared`` linked
    in: ``bentoml serve`` empties ``$BENTOML_HOME/prometheus_multiproc_dir`` when it starts,
    which would wipe the metrics of every other server sharing that home."""
    directory.mkdir(parents=True, exist_ok=True)
    for store in ("models", "bentos"):
        (shared / store).mkdir(parents=True, exist_ok=True)
        link = directory / store
        if not link.is_symlink():
            link.symlink_to(shared / store)
    return directory


class ScorerServer:
    """One ``bentoml serve`` of the scorer; ``env`` adds/overrides environment variables
    (``MODEL_TAG``, ``DATABASE_URL``, ``WORKERS``, ``BENTOML_HOME``: the model store to serve
    from; the server itself runs in a private home next to its log, see :func:`private_home`)."""

    def __init__(
        self,
        log_path: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
        target: str = SERVICE,
        cwd: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.log_path = Path(log_path)
        self.env = dict(env or {})
        self.target = target  # the service import path, or a built Bento's tag
        self.cwd = cwd or REPO_ROOT
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.ready_after = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> ScorerServer:
        """Start and wait until ``/readyz`` answers 200; raise with the log tail if it cannot."""
        env = {**os.environ, **self.env, "PORT": str(self.port)}
        shared = Path(env.get("BENTOML_HOME") or Path.home() / "bentoml")
        home = self.log_path.parent / f"{self.log_path.stem}-bentoml-home"
        env["BENTOML_HOME"] = str(private_home(shared, home))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.started_at = time.perf_counter()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bentoml", "serve", self.target, "--host", "127.0.0.1"]
                + ["--port", str(self.port)],
                cwd=self.cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the scorer exited with {self.proc.returncode}:\n{self.tail()}")
            if self.ready():
                self.ready_after = time.perf_counter() - self.started_at
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the scorer was not ready within {timeout:.0f} s:\n{self.tail()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def pids(self) -> list[int]:
        """The server's processes: ``bentoml serve`` (the arbiter) and all its descendants."""
        if self.proc is None:
            return []
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found = [self.proc.pid]
        for pid in found:
            found.extend(child for child, parent in parents.items() if parent == pid)
        return sorted(set(found))

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM the process group, wait, then SIGKILL; return the exit code."""
        return None if self.proc is None else stop_group(self.proc, timeout)

    def tail(self, chars: int = 4000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def __enter__(self) -> ScorerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
