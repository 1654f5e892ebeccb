"""``bentoml build`` of the scorer Bento, offline, in the tests' temporary BentoML home; the
built Bento serves with ``bentoml serve <tag>`` and stops cleanly on SIGTERM. The image build
script (skaffold's custom build) labels the image with the model, and its ``--deps`` list (what
skaffold's inputDigest tag hashes) names the model, so a retrained model is a new image."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from packaging.utils import canonicalize_name

from fraudstream.local.paths import REPO_ROOT
from fraudstream.local.scorer import ScorerServer
from fraudstream.schema import EXAMPLE_TRANSACTION

pytestmark = pytest.mark.integration

SCRIPT = REPO_ROOT / "scripts" / "build-scorer-image.sh"
REQUIREMENTS = REPO_ROOT / "bentos" / "fraud_scorer" / "requirements.txt"

# any attempt to reach a package index during the build fails fast
OFFLINE = {
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "PIP_NO_INDEX": "1",
    "UV_OFFLINE": "1",
}


def test_bento_builds_offline_and_serves(bentoml_home, trained_model, tmp_path: Path):
    env = {
        **os.environ,
        **OFFLINE,
        "BENTOML_HOME": str(bentoml_home),
        "MODEL_TAG": str(trained_model),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    build = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "-f", "bentos/fraud_scorer/bentofile.yaml"]
        + ["--output", "tag", "."],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    tag = build.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    assert tag.startswith("fraud_scorer:")

    bento_dir = Path(bentoml_home) / "bentos" / "fraud_scorer" / tag.split(":")[1]
    info = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    packed = [m["tag"] for svc in info["services"] for m in svc["models"]]
    assert packed == [str(trained_model)]
    assert (bento_dir / "src" / "fraudstream" / "scoring.py").exists()
    assert (bento_dir / "src" / "fraudstream" / "migrations" / "0001_card_history.sql").exists()
    assert not (bento_dir / "src" / "fraudstream" / "local").exists()
    # the packages are exactly bentos/fraud_scorer/requirements.txt (the lock's `scorer` extra)
    packed_reqs = _pins((bento_dir / "env" / "python" / "requirements.txt").read_text())
    assert packed_reqs == _pins(REQUIREMENTS.read_text())
    assert packed_reqs["catboost"] and packed_reqs["bentoml"]
    assert not (bento_dir / "env" / "python" / "requirements.lock.txt").exists()
    assert {e["name"]: e["value"] for e in info["envs"]}["BENTOML_DO_NOT_TRACK"] == "True"
    # pinned base, no compiler or git from apt, a numeric user (bentos/fraud_scorer/Dockerfile.j2)
    dockerfile = (bento_dir / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM python:3.11.14-slim-bookworm " in dockerfile
    assert "apt-get" not in dockerfile and "build-essential" not in dockerfile
    assert dockerfile.rstrip().splitlines()[-1] == "USER 1034:1034"

    serve_env = {"BENTOML_HOME": str(bentoml_home), "DATABASE_URL": "", "WORKERS": "1"}
    with ScorerServer(tmp_path / "bento.log", env=serve_env, target=tag, cwd=tmp_path) as server:
        resp = httpx.post(f"{server.url}/score", json=EXAMPLE_TRANSACTION, timeout=30)
        assert resp.status_code == 200, resp.text
        assert resp.json()["model_version"] == str(trained_model)
        assert server.stop() == 0, server.tail()  # SIGTERM: a clean, graceful exit


def test_skaffold_build_script_builds_and_containerizes_the_bento(
    bentoml_home, trained_model, tmp_path: Path
):
    """scripts/build-scorer-image.sh (skaffold's custom build) as skaffold runs it; only the
    final `bentoml containerize` (needs Docker) is recorded instead of run."""
    calls = tmp_path / "containerize.args"
    wrapper = tmp_path / "bentoml"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "$1" = containerize ]; then echo "$@" > {calls}; exit 0; fi\n'
        f'exec {sys.executable} -m bentoml "$@"\n'
    )
    wrapper.chmod(0o755)
    env = {
        **os.environ,
        **OFFLINE,
        "BENTOML_HOME": str(bentoml_home),
        "MODEL_TAG": str(trained_model),
        "BENTOML": str(wrapper),
        "IMAGE": "fraud-scorer:test",
        "PUSH_IMAGE": "false",
        "BUILD_CONTEXT": str(REPO_ROOT),
    }
    run = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "build-scorer-image.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    args = calls.read_text().split()
    assert args[0] == "containerize" and args[1].startswith("fraud_scorer:")
    assert args[2:4] == ["--image-tag", "fraud-scorer:test"]
    labels = dict(opt.removeprefix("label=").split("=", 1) for opt in args[5::2])
    assert args[4::2] == ["--opt"] * len(labels)
    assert labels == {
        "fraudstream.model_version": str(trained_model),
        "org.opencontainers.image.version": str(trained_model).split(":")[1],
        "fraudstream.bento": args[1],
    }


def _pins(text: str) -> dict[str, str]:
    """{canonical name: version} of the ``name==version`` lines."""
    lines = (ln.split("#")[0].strip() for ln in text.splitlines())
    pairs = (ln.split("==", 1) for ln in lines if "==" in ln)
    return {canonicalize_name(name): version for name, version in pairs}


def _deps(env: dict[str, str]) -> list[str]:
    """What skaffold's `dependencies.command` gets: a JSON array of paths (relative ones are
    relative to the workspace, the repository root)."""
    run = subprocess.run(
        [str(SCRIPT), "--deps"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0, run.stderr
    deps = json.loads(run.stdout)
    assert isinstance(deps, list) and all(isinstance(d, str) for d in deps)
    return deps


def _save_model(home: Path, seed: int) -> str:
    """A tiny CatBoost model saved as fraud-model in the store at ``home``; its tag."""
    code = (
        "import bentoml, catboost\n"
        f"m = catboost.CatBoostClassifier(iterations=2, random_seed={seed}, verbose=False)\n"
        "m.fit([[0.0], [1.0], [0.0], [1.0]], [0, 1, 0, 1])\n"
        "print(bentoml.catboost.save_model('fraud-model', m).tag)\n"
    )
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip().splitlines()[-1]


def test_build_inputs_are_the_sources_the_lock_and_the_model(tmp_path: Path) -> None:
    """skaffold hashes what --deps lists before it builds: the files the Bento packs, the lock,
    and the store entry of the model MODEL_TAG resolves to (latest = the newest save)."""
    home = tmp_path / "bentoml"
    env = {k: v for k, v in os.environ.items() if k != "MODEL_TAG"}
    env["BENTOML_HOME"] = str(home)

    no_model = _deps(env)
    for rel in ("bentos/fraud_scorer/service.py", "bentos/fraud_scorer/bentofile.yaml",
                "bentos/fraud_scorer/requirements.txt", "src/fraudstream/scoring.py",
                "src/fraudstream/migrations/0002_scores.sql", "requirements.lock",
                "pyproject.toml", "scripts/build-scorer-image.sh"):  # fmt: skip
        assert rel in no_model, rel
    assert all((REPO_ROOT / d).is_file() for d in no_model)
    assert not [d for d in no_model if "__pycache__" in d or d.startswith("src/fraudstream/local")]

    first = _save_model(home, seed=1)
    with_first = _deps(env)
    store_entry = str(home / "models" / "fraud-model" / first.split(":")[1] / "model.yaml")
    assert with_first == sorted([*no_model, store_entry])

    second = _save_model(home, seed=2)  # "retraining": a new version becomes latest
    with_second = _deps(env)
    assert set(with_second) - set(with_first) == {
        str(home / "models" / "fraud-model" / second.split(":")[1] / "model.yaml")
    }
    # an exact MODEL_TAG pins the model whatever latest is
    assert store_entry in _deps({**env, "MODEL_TAG": first})
    assert _deps({**env, "MODEL_TAG": "fraud-model:nosuchversion"}) == no_model


def _docker_ready(image: str) -> str | None:
    """Why a real image build cannot run here, or None. Never pulls: the base image must be
    in the local engine already."""
    if shutil.which("docker") is None:
        return "no docker CLI"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "Docker engine not reachable"
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
        return f"base image {image} not in the local Docker engine"
    buildx = subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0
    if not buildx and os.environ.get("DOCKER_BUILDKIT") != "0":
        return "no BuildKit (docker buildx); DOCKER_BUILDKIT=0 builds with the classic builder"
    return None


def test_image_has_the_locked_packages_and_the_model_label(
    bentoml_home, trained_model, tmp_path: Path
):
    """The real build (Docker, the base image present, PyPI reachable from the build): labels
    and installed packages of the image the script makes."""
    base = "python:3.11.14-slim-bookworm"
    reason = _docker_ready(base)
    if reason:
        pytest.skip(reason)
    image = f"fraud-scorer-test:{os.getpid()}"
    env = {
        **os.environ,
        "BENTOML_HOME": str(bentoml_home),
        "MODEL_TAG": str(trained_model),
        "BENTOML": str(Path(sys.executable).parent / "bentoml"),
        "IMAGE": image,
        "BENTOML_DO_NOT_TRACK": "true",
    }
    run = subprocess.run([str(SCRIPT)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=1500)  # fmt: skip
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    try:
        inspect = subprocess.run(["docker", "image", "inspect", image], check=True,
                                 capture_output=True, text=True)  # fmt: skip
        config = json.loads(inspect.stdout)[0]["Config"]
        assert config["Labels"]["fraudstream.model_version"] == str(trained_model)
        assert config["Labels"]["org.opencontainers.image.version"] == trained_model.split(":")[1]
        assert "BENTOML_DO_NOT_TRACK=True" in config["Env"]
        assert config["User"] == "1034:1034"
        listing = (
            "import importlib.metadata as m\n"
            "for d in m.distributions(): print(f\"{d.metadata['Name']}=={d.version}\")"
        )
        freeze = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "/app/.venv/bin/python", image, "-c",
             listing], check=True, capture_output=True, text=True)  # fmt: skip
        assert _pins(freeze.stdout) == _pins(REQUIREMENTS.read_text())
    finally:
        subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True)
