"""PostgreSQL 16 from the ``pgserver`` wheel's binaries, listening on 127.0.0.1 on a free port.

PostgreSQL refuses to run as root; when we are root the server runs as an unprivileged system
user (created if needed, as pgserver itself does).
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
import subprocess
import warnings
from pathlib import Path

from fraudstream.local.paths import free_port

log = logging.getLogger(__name__)

SYSTEM_USER = "pgserveruser"


def _bin(name: str) -> str:
    return str(_pgserver_bin_path() / name)


def _pgserver_bin_path() -> Path:
    # pgserver's import asks platformdirs for a runtime dir and warns when XDG_RUNTIME_DIR is unset.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH
    return POSTGRES_BIN_PATH


class PostgresServer:
    """initdb + pg_ctl on a data directory the caller owns; ``url`` is a TCP libpq URL."""

    def __init__(self, workdir: Path, port: int | None = None, durable: bool = False):
        self.workdir = Path(workdir)
        self.data = self.workdir / "pgdata"
        self.port = port or free_port()
        self.durable = durable
        self.log_path = self.workdir / "postgres.log"
        self.user: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _prepare_root(self) -> None:
        bin_path = _pgserver_bin_path()
        from pgserver.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(SYSTEM_USER)
        ensure_prefix_permissions(self.workdir)
        ensure_prefix_permissions(bin_path)
        read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(bin_path, read | execute)
        ensure_folder_permissions(bin_path.parent / "lib", read)
        entry = pwd.getpwnam(SYSTEM_USER)
        for path in (self.workdir, self.data):
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        self.workdir.chmod(0o777)
        self.user = SYSTEM_USER

    def _run(self, args: list[str], timeout: float = 60) -> None:
        result = subprocess.run(
            args, user=self.user, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            tail = (
                self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            )
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr.strip()}\n{tail}")

    def start(self) -> PostgresServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._prepare_root()
        if not (self.data / "PG_VERSION").exists():
            self._run(
                [
                    _bin("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ]
            )
        options = (
            f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            [
                _bin("pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ],
            timeout=90,
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run([_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], timeout=90)

    def restart(self) -> None:
        self.stop()
        self.start()
