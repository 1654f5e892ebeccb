"""``bentoml build`` of the scorer Bento, offline, in the tests' temporary BentoML home; the
built Bento serves with ``bentoml serve <tag>`` and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from fraudstream.local.paths import REPO_ROOT
from fraudstream.local.scorer import ScorerServer
from fraudstream.schema import EXAMPLE_TRANSACTION

pytestmark = pytest.mark.integration

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
    requirements = (bento_dir / "env" / "python" / "requirements.txt").read_text()
    assert "catboost==" in requirements and "bentoml==" in requirements

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
    assert args[2:] == ["--image-tag", "fraud-scorer:test"]
