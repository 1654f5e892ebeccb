"""The consumers image's dependency list (consumers/requirements.in, pinned by requirements.lock)
is enough for every command the chart runs with that image: the same install the Dockerfile does,
into a scratch virtualenv, then each command's ``--help`` and the helm test pod's imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from k8s_helpers import ROOT, containers, render

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def consumers_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("consumers") / "venv"
    uv = Path(sys.executable).parent / "uv"
    py = venv / "bin" / "python"
    subprocess.run([str(uv), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(
        [str(uv), "pip", "install", "-q", "--python", str(py), "-c", "requirements.lock"]
        + ["-r", "consumers/requirements.in"],
        check=True,
        cwd=ROOT,
    )
    subprocess.run(
        [str(uv), "pip", "install", "-q", "--python", str(py), "--no-deps", "."],
        check=True,
        cwd=ROOT,
    )
    return venv


def test_dockerfile_is_slim_non_root_and_pinned() -> None:
    text = (ROOT / "consumers" / "Dockerfile").read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) >= 2, "build tools stay in a build stage"
    assert "slim" in text.split("ARG PYTHON_IMAGE=")[1].splitlines()[0]
    assert "-c requirements.lock" in text and "consumers/requirements.in" in text
    final = text.rsplit(stages[-1], 1)[1]
    assert "USER 10001" in final and "pip install" not in final
    values = (ROOT / "charts" / "fraudstream" / "values.yaml").read_text()
    assert "uid: 10001" in values


def test_every_chart_command_runs_with_the_consumers_dependencies(consumers_venv: Path) -> None:
    bin_dir = consumers_venv / "bin"
    commands = set()
    for obj in render():
        for c in containers(obj):
            if c["image"].split(":")[0] == "fraudstream-consumers":
                commands.add(tuple(c.get("command", [])) + tuple(c.get("args", [])))
    assert commands
    for cmd in sorted(commands):
        if cmd[0] == "fraudstream":
            subprocess.run([str(bin_dir / "fraudstream"), *cmd[1:], "--help"], check=True,
                           capture_output=True)  # fmt: skip
        elif cmd[:2] == ("python", "-c"):
            # the helm test pod: its imports resolve (the request itself needs a scorer)
            code = cmd[2]
            imports = "\n".join(line for line in code.splitlines() if "import" in line)
            subprocess.run([str(bin_dir / "python"), "-c", imports], check=True)
        elif cmd[0] == "streamlit":
            # the page the chart runs is the repository's ui/, copied to /app/ui by the Dockerfile
            assert cmd[1] == "run" and cmd[2].startswith("/app/ui/"), cmd
            assert (ROOT / "ui" / cmd[2].removeprefix("/app/ui/")).exists(), cmd[2]
            assert "COPY ui /app/ui" in (ROOT / "consumers" / "Dockerfile").read_text()
            subprocess.run([str(bin_dir / "streamlit"), "--version"], check=True,
                           capture_output=True)  # fmt: skip
        else:
            raise AssertionError(f"unchecked command {cmd}")
