"""The `fraudstream` entry point: version and doctor."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fraudstream import __version__

pytestmark = pytest.mark.unit
FRAUDSTREAM = [sys.executable, "-m", "fraudstream.cli"]


def test_version_prints_the_package_version():
    out = subprocess.run([*FRAUDSTREAM, "version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"fraudstream {__version__}"


def test_doctor_names_missing_java_and_what_to_install(tmp_path: Path):
    # A PATH with the usual tools except java.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("mvn", "go", "bash", "sh", "env", "uname", "dirname", "readlink", "which"):
        for base in ("/usr/bin", "/bin", "/usr/local/bin", "/usr/local/go/bin"):
            if os.path.exists(f"{base}/{tool}"):
                (bindir / tool).symlink_to(f"{base}/{tool}")
                break
    env = {**os.environ, "PATH": str(bindir)}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    out = subprocess.run([*FRAUDSTREAM, "doctor"], capture_output=True, text=True, env=env)
    java_line = next(line for line in out.stdout.splitlines() if line.startswith("java"))
    assert "MISSING" in java_line and "openjdk" in java_line
    assert out.returncode == 1
    assert "required item(s) missing: java" in out.stdout
