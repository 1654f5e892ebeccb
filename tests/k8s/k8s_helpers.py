"""Offline checks of the Helm chart, k8s/ and skaffold.yaml: render with a pinned helm, then
validate and inspect the objects a cluster would receive.

``helm`` comes from ``scripts/tools.sh`` (a helm v3 on PATH, or one built once with ``go install``
into the download cache); ``make test`` runs it first, and the first helm call runs it when needed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "fraudstream"
INFRA_CHART = ROOT / "k8s" / "infra"
SKAFFOLD = ROOT / "skaffold.yaml"
# Kubernetes versions the chart supports; each rendered object is validated against each.
KUBE_VERSIONS = ["1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0"]
SCENARIOS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
RELEASE = "fraudstream"
NAMESPACE = "fraudstream"

# skaffold.yaml turned into builds and helm commands: the code `make e2e-kind` deploys with
# (importable through tests/k8s/conftest.py)
from e2e_kind import skaffold_plan  # noqa: E402, F401


def _cache_bin() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fraudstream" / "bin"


@cache
def helm_path() -> str:
    cached = _cache_bin() / "helm"
    if not cached.exists():
        # builds helm on a fresh machine (a few minutes, once)
        subprocess.run([str(ROOT / "scripts" / "tools.sh")], check=True, stdout=subprocess.DEVNULL)
    if cached.exists():
        return str(cached)
    found = shutil.which("helm")
    if not found:
        pytest.fail("no helm: scripts/tools.sh did not install one")
    return found


@pytest.fixture(scope="session")
def helm() -> str:
    return helm_path()


PROMQL_RULES = Path(__file__).resolve().parent / "promql_rules"


@cache
def promql_rules_checker() -> str:
    """The compiled Go test of ``promql_rules/`` (Prometheus' rule loader and PromQL engine),
    built once per version of its sources into the download cache (a few minutes the first
    time, like helm: the Go toolchain fetches the Prometheus modules from the module proxy)."""
    import fcntl
    import hashlib

    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "rules_test.go"):
        digest.update((PROMQL_RULES / name).read_bytes())
    target = _cache_bin() / f"promql-rules-{digest.hexdigest()[:12]}"
    if target.exists():
        return str(target)
    go = shutil.which("go")
    if not go:
        pytest.fail("Go is needed to build Prometheus' rule checker (README: Prerequisites)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".tools.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel runs share the cache: one builds
        if not target.exists():
            tmp = target.with_suffix(".building")
            env = {**os.environ, "GOFLAGS": "", "CGO_ENABLED": "0"}
            proc = subprocess.run(
                [go, "test", "-c", "-o", str(tmp), "."],
                cwd=PROMQL_RULES,
                env=env,
                capture_output=True,
                text=True,
                timeout=1800,
            )
            if proc.returncode != 0:
                raise AssertionError(f"building the PromQL rule checker failed:\n{proc.stderr}")
            tmp.rename(target)
    return str(target)


def run_helm(*args: str) -> str:
    proc = subprocess.run(
        [helm_path(), *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    if proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def load_objects(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@cache
def _render(
    chart: str,
    kube_version: str,
    values: tuple[str, ...],
    sets: tuple[str, ...],
    flags: tuple[str, ...] = (),
) -> str:
    args = ["template", RELEASE, chart, "--namespace", NAMESPACE, "--kube-version", kube_version]
    for v in values:
        args += ["-f", v]
    for s in sets:
        args += ["--set", s]
    return run_helm(*args, *flags)


def render(
    chart: Path = CHART,
    values: tuple[str, ...] = (),
    sets: tuple[str, ...] = (),
    kube_version: str = KUBE_VERSIONS[-1],
    flags: tuple[str, ...] = (),
) -> list[dict]:
    """The objects `helm template` makes (hooks and test pods included)."""
    return load_objects(_render(str(chart), kube_version, tuple(values), tuple(sets), flags))


def schema_has(*path: str) -> bool:
    """Whether values.schema.json declares the value at ``path`` (e.g. "loadtest", "enabled")."""
    node = json.loads((CHART / "values.schema.json").read_text())
    for key in path:
        node = (node.get("properties") or {}).get(key)
        if node is None:
            return False
    return True


def scenario_values(name: str) -> tuple[str, ...]:
    return () if name == "default" else (str(CHART / "ci" / name),)


@pytest.fixture(scope="session")
def renderer() -> Callable[..., list[dict]]:
    return render


@cache
def skaffold_config() -> dict:
    return yaml.safe_load(SKAFFOLD.read_text())


def skaffold_release(name: str) -> dict:
    for release in skaffold_config()["deploy"]["helm"]["releases"]:
        if release["name"] == name:
            return release
    raise AssertionError(f"no helm release {name!r} in skaffold.yaml")


def skaffold_sets(release: dict) -> tuple[str, ...]:
    """--set arguments equivalent to a skaffold release's setValues (+ templates filled in)."""
    sets = [f"{k}={v}" for k, v in (release.get("setValues") or {}).items()]
    # what skaffold fills in for each artifact (kind: a local image, so no digest)
    fake = {}
    for artifact in skaffold_config()["build"]["artifacts"]:
        image = artifact["image"]
        var = "".join(c if c.isalnum() else "_" for c in image)
        fake[f"IMAGE_REPO_{var}"] = image
        fake[f"IMAGE_TAG_{var}"] = f"tag-{var}"
        fake[f"IMAGE_DIGEST_{var}"] = ""
    for key, template in (release.get("setValueTemplates") or {}).items():
        value = template
        for var, sub in fake.items():
            value = value.replace("{{." + var + "}}", sub)
        assert "{{" not in value, f"unknown template variable in {key}: {template}"
        sets.append(f"{key}={value}")
    return tuple(sets)


def containers(obj: dict) -> list[dict]:
    """Containers (init containers included) of a workload or a Pod."""
    spec = pod_spec(obj)
    if spec is None:
        return []
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def pod_spec(obj: dict) -> dict | None:
    kind = obj.get("kind")
    if kind == "Pod":
        return obj["spec"]
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        return obj["spec"]["template"]["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None
