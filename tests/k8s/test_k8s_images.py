"""The images install what their deployables need, from requirements.lock and nothing else.

- The consumers image (consumers/Dockerfile) installs the package with its ``stream`` and ``ui``
  extras constrained by the lock; the scorer Bento (bentofile.yaml) installs
  ``bentos/fraud_scorer/requirements.txt``, the ``scorer`` extra generated from the lock.
- Every package either image gets is pinned by the lock at the lock's version, and neither gets
  the other deployables' heavy packages.
- Every command the chart runs with the consumers image works in an install made the way the
  Dockerfile makes it; a command whose extra is missing says which extra to install.

The dependency closure of an extra is computed from pyproject.toml and the metadata of the
packages installed in this virtualenv (which ``make venv`` syncs to the lock, every extra included).
"""

from __future__ import annotations

import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml
from k8s_helpers import ROOT, containers, render
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = ROOT / "requirements.lock"
DOCKERFILE = ROOT / "consumers" / "Dockerfile"
BENTOFILE = ROOT / "bentos" / "fraud_scorer" / "bentofile.yaml"
BENTO_REQUIREMENTS = ROOT / "bentos" / "fraud_scorer" / "requirements.txt"
CONSUMERS_EXTRAS = ("stream", "ui")
# packages of the other deployables: never in the consumers image, never in the scorer image
NOT_IN_CONSUMERS = {"bentoml", "catboost", "pgserver", "matplotlib", "scikit-learn", "locust"}
NOT_IN_SCORER = {"streamlit", "pgserver", "locust", "kafka-python", "scikit-learn"}


def pins(text: str) -> dict[str, str]:
    """{canonical name: version} of the ``name==version`` lines of a requirements file."""
    found = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", text, re.MULTILINE)
    return {canonicalize_name(name): version for name, version in found}


@cache
def lock_pins() -> dict[str, str]:
    return pins(LOCK.read_text())


@cache
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _active(req: Requirement, extras: frozenset[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": e}) for e in (extras or {""}))


def closure(extras: tuple[str, ...]) -> set[str]:
    """Canonical names of every package ``pip install 'fraudstream[<extras>]'`` installs (the
    package itself excluded): pyproject.toml for fraudstream, installed metadata for the rest."""
    todo: list[Requirement] = []
    seen_extras: set[str] = set()

    def own(extra_names: set[str]) -> None:
        for extra in sorted(extra_names - seen_extras):
            seen_extras.add(extra)
            todo.extend(Requirement(r) for r in project()["optional-dependencies"][extra])

    todo.extend(Requirement(r) for r in project()["dependencies"])
    own(set(extras))
    done: dict[str, set[str]] = {}
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name == "fraudstream":
            own(set(req.extras))
            continue
        wanted = set(req.extras)
        if name in done and wanted <= done[name]:
            continue
        done.setdefault(name, set()).update(wanted)
        for line in md.distribution(name).requires or []:
            sub = Requirement(line)
            if _active(sub, frozenset(done[name])):
                todo.append(sub)
    return set(done)


@pytest.mark.unit
def test_every_extra_is_pinned_by_the_lock() -> None:
    """Whatever an image installs with ``-c requirements.lock``, the lock fixes its version."""
    for extra in project()["optional-dependencies"]:
        missing = closure((extra,)) - lock_pins().keys()
        assert not missing, f"[{extra}] needs packages the lock does not pin: {sorted(missing)}"


@pytest.mark.unit
def test_extras_match_the_deployables() -> None:
    extras = project()["optional-dependencies"]
    assert {"scorer", "stream", "ui", "loadtest", "train", "local", "dev"} <= extras.keys()
    base = {canonicalize_name(Requirement(r).name) for r in project()["dependencies"]}
    assert base <= {"numpy", "pydantic", "pydantic-settings"}, base
    assert {"bentoml", "catboost", "uvloop", "httptools"} <= closure(("scorer",))
    assert {"kafka-python", "crc32c", "psycopg2-binary", "httpx", "pandas"} <= closure(("stream",))
    assert {"streamlit", "kafka-python", "psycopg2-binary"} <= closure(("ui",))
    assert {"locust", "kafka-python", "crc32c", "pandas"} <= closure(("loadtest",))
    assert {"catboost", "bentoml", "scikit-learn", "matplotlib"} <= closure(("train",))
    assert "pgserver" in closure(("local",))
    # dev is everything: the lock is the dev install
    assert closure(("dev",)) == set(lock_pins())


@pytest.mark.unit
def test_consumers_dockerfile_installs_its_extras_from_the_lock() -> None:
    text = DOCKERFILE.read_text()
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert f"ARG EXTRAS={','.join(CONSUMERS_EXTRAS)}" in text.splitlines()
    assert any('-c requirements.lock ".[${EXTRAS}]"' in line for line in installs), installs
    # the only other install is the package itself, without dependencies
    others = [line for line in installs if "-c requirements.lock" not in line]
    assert all("--no-deps ." in line for line in others), others
    assert " -r " not in text and not (ROOT / "consumers" / "requirements.in").exists()
    assert not closure(CONSUMERS_EXTRAS) & NOT_IN_CONSUMERS


@pytest.mark.unit
def test_dockerfile_is_slim_non_root_and_pinned() -> None:
    text = DOCKERFILE.read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) >= 2, "build tools stay in a build stage"
    assert "slim" in text.split("ARG PYTHON_IMAGE=")[1].splitlines()[0]
    final = text.rsplit(stages[-1], 1)[1]
    assert "USER 10001" in final and "pip install" not in final
    values = (ROOT / "charts" / "fraudstream" / "values.yaml").read_text()
    assert "uid: 10001" in values
    # the context is the repository: only what the Dockerfile copies gets in
    ignore = (ROOT / "consumers" / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:1] == ["*"] and "**/__pycache__" in ignore
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE)
    for source in " ".join(copied).split():
        assert f"!{source.rstrip('/')}" in ignore or f"!{source.rstrip('/')}/" in ignore, source


@pytest.mark.unit
def test_bento_installs_the_scorer_extra_at_the_lock_pins() -> None:
    python = yaml.safe_load(BENTOFILE.read_text())["python"]
    assert python["requirements_txt"] == str(BENTO_REQUIREMENTS.relative_to(ROOT))
    assert python["lock_packages"] is False and "packages" not in python
    text = BENTO_REQUIREMENTS.read_text()
    requirements = pins(text)
    # nothing but exact pins: the image build chooses no version
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(lines) == len(requirements), [ln for ln in lines if "==" not in ln]
    wrong = {n: v for n, v in requirements.items() if lock_pins().get(n) != v}
    assert not wrong, f"pins that differ from requirements.lock: {wrong}"
    expected = closure(("scorer",))
    missing, extra = sorted(expected - set(requirements)), sorted(set(requirements) - expected)
    assert not missing and not extra, (
        f"regenerate {BENTO_REQUIREMENTS.relative_to(ROOT)} (bentos/fraud_scorer/README.md): "
        f"missing {missing}, not in the extra {extra}"
    )
    assert not set(requirements) & NOT_IN_SCORER


@pytest.mark.unit
def test_bento_runs_without_tracking() -> None:
    envs = {e["name"]: e["value"] for e in yaml.safe_load(BENTOFILE.read_text())["envs"]}
    assert envs["BENTOML_DO_NOT_TRACK"] == "True"


# --- an install made the way consumers/Dockerfile makes it ------------------------------------


@pytest.fixture(scope="module")
def consumers_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("consumers") / "venv"
    uv = Path(sys.executable).parent / "uv"
    py = venv / "bin" / "python"
    subprocess.run([str(uv), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    src = tmp_path_factory.mktemp("consumers-src")
    for name in ("pyproject.toml", "README.md", "requirements.lock"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__"))
    extras = ",".join(CONSUMERS_EXTRAS)
    subprocess.run(
        [str(uv), "pip", "install", "-q", "--python", str(py), "-c", "requirements.lock"]
        + [f".[{extras}]"],
        check=True,
        cwd=src,
    )
    return venv


@pytest.mark.integration
def test_consumers_install_is_exactly_the_locked_extras(consumers_venv: Path) -> None:
    uv = Path(sys.executable).parent / "uv"
    out = subprocess.run(
        [str(uv), "pip", "freeze", "--python", str(consumers_venv / "bin" / "python")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    installed = {n: v for n, v in pins(out).items() if n != "fraudstream"}
    assert installed, out
    assert set(installed) == closure(CONSUMERS_EXTRAS)
    assert {n: v for n, v in installed.items() if lock_pins()[n] != v} == {}
    assert not set(installed) & NOT_IN_CONSUMERS


@pytest.mark.integration
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
            assert "COPY ui /app/ui" in DOCKERFILE.read_text()
            subprocess.run([str(bin_dir / "streamlit"), "--version"], check=True,
                           capture_output=True)  # fmt: skip
            # what the page imports at start
            subprocess.run([str(bin_dir / "python"), "-c", "import fraudstream.results, pandas"],
                           check=True)  # fmt: skip
        else:
            raise AssertionError(f"unchecked command {cmd}")
    # the simulator runs there too (charts/README.md: `fraudstream generate` in the bridge pod)
    subprocess.run([str(bin_dir / "fraudstream"), "generate", "--help"], check=True,
                   capture_output=True)  # fmt: skip


@pytest.mark.integration
def test_commands_of_other_extras_name_the_extra_to_install(
    consumers_venv: Path, tmp_path: Path
) -> None:
    data = tmp_path / "tx.csv"
    fraudstream = str(consumers_venv / "bin" / "fraudstream")
    generate = ["generate", "--customers", "3", "--start", "2019-01-01", "--end", "2019-01-10"]
    subprocess.run([fraudstream, *generate, "-o", str(data)], check=True, capture_output=True)
    for cmd in (["train", "--data", str(data)], ["evaluate", "--data", str(data)]):
        run = subprocess.run([fraudstream, *cmd], capture_output=True, text=True)
        assert run.returncode == 2, run.stderr
        (line,) = run.stderr.strip().splitlines()
        assert line.startswith(f"fraudstream {cmd[0]}: the Python package "), line
        assert line.endswith("install the 'train' extra: pip install 'fraudstream[train]'"), line
