"""The retrain CronJob (retrain.enabled): absent by default; enabled, it runs
`fraudstream retrain --promote` on a model-store PVC that the scorer mounts read-only and reads
through CHAMPION_HOME."""

from __future__ import annotations

import tomllib

import pytest
import yaml
from k8s_helpers import CHART, KUBE_VERSIONS, ROOT, containers, pod_spec, render
from test_k8s_chart import (
    NOT_SETTINGS,
    _matches,
    by_kind,
    container_env,
    named,
    pod_labels,
    validate_object,
)

from fraudstream.settings import ScorerSettings, env_names

pytestmark = pytest.mark.unit

ON = ("retrain.enabled=true",)


def volumes(obj: dict) -> dict[str, dict]:
    return {v["name"]: v for v in pod_spec(obj)["volumes"]}


def test_absent_by_default() -> None:
    objects = render()
    assert not [o for o in objects if "retrain" in o["metadata"]["name"]]
    assert not by_kind(objects, "PersistentVolumeClaim")
    scorer = named(objects, "Deployment", "fraudstream-scorer")
    assert "models" not in volumes(scorer)
    assert "CHAMPION_HOME" not in container_env(objects, scorer, containers(scorer)[0])


@pytest.mark.parametrize("version", [KUBE_VERSIONS[0], KUBE_VERSIONS[-1]])
def test_enabled_renders_valid_objects(version: str) -> None:
    objects = render(sets=ON, kube_version=version)
    for obj in objects:
        validate_object(obj, version)


def test_cronjob_command_schedule_and_shared_volume() -> None:
    objects = render(sets=ON)
    cron = named(objects, "CronJob", "fraudstream-retrain")
    assert cron["spec"]["schedule"] == "30 2 * * 0"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0 and job["template"]["spec"]["restartPolicy"] == "Never"
    (c,) = containers(cron)
    assert c["image"].startswith("fraudstream-trainer:")
    assert c["command"] == ["fraudstream"]
    assert c["args"] == [
        "retrain",
        "--data",
        "/models/data/train.csv",
        "--eval-data",
        "/models/data/eval.csv",
        "--promote",
        "--min-recall",
        "0.98",
        "--max-fpr-increase",
        "0.005",
    ]
    env = container_env(objects, cron, c)
    assert env["BENTOML_HOME"] == "/models"
    assert set(env) <= set(NOT_SETTINGS)  # BentoML's and the OS's, read by no settings class
    assert {m["name"]: m["mountPath"] for m in c["volumeMounts"]} == {
        "tmp": "/tmp",
        "models": "/models",
    }
    claim = volumes(cron)["models"]["persistentVolumeClaim"]["claimName"]
    pvc = named(objects, "PersistentVolumeClaim", claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # the scorer reads the same claim, read-only, and is told where the champion is
    scorer = named(objects, "Deployment", "fraudstream-scorer")
    (sc,) = containers(scorer)
    assert volumes(scorer)["models"]["persistentVolumeClaim"] == {
        "claimName": claim,
        "readOnly": True,
    }
    mount = next(m for m in sc["volumeMounts"] if m["name"] == "models")
    assert mount == {"name": "models", "mountPath": "/models", "readOnly": True}
    scorer_env = container_env(objects, scorer, sc)
    assert scorer_env["CHAMPION_HOME"] == env["BENTOML_HOME"]
    # the variable is one the scorer reads (ScorerSettings.champion_home)
    assert "CHAMPION_HOME" in env_names(ScorerSettings)
    # fenced like every pod of the chart
    policies = [
        p
        for p in by_kind(objects, "NetworkPolicy")
        if _matches(p["spec"]["podSelector"], pod_labels(cron))
    ]
    assert [p["metadata"]["name"] for p in policies] == ["fraudstream-retrain"]


def test_cronjob_follows_its_values() -> None:
    sets = (
        *ON,
        "retrain.schedule=0 1 * * *",
        "retrain.persistence.existingClaim=shared-models",
        "retrain.trainData={/models/a.csv,/models/b.csv}",
        "retrain.extraArgs={--since,2019-01-01}",
    )
    objects = render(sets=sets, flags=("--set-json", "retrain.maxFprIncrease=0.002"))
    cron = named(objects, "CronJob", "fraudstream-retrain")
    assert cron["spec"]["schedule"] == "0 1 * * *"
    args = containers(cron)[0]["args"]
    assert args[1:5] == ["--data", "/models/a.csv", "/models/b.csv", "--eval-data"]
    assert args[-4:] == ["--max-fpr-increase", "0.002", "--since", "2019-01-01"]
    assert not by_kind(objects, "PersistentVolumeClaim")  # an existing claim is used as is
    scorer = named(objects, "Deployment", "fraudstream-scorer")
    for obj in (cron, scorer):
        assert volumes(obj)["models"]["persistentVolumeClaim"]["claimName"] == "shared-models"
    for bad in ("retrain.minRecall=2", "retrain.schedul=x"):
        with pytest.raises(AssertionError):
            render(sets=(*ON, bad))


def test_the_trainer_image_is_the_consumers_recipe_with_the_train_extra() -> None:
    """The chart's retrain.image is built from consumers/Dockerfile with ``--build-arg
    EXTRAS=train`` (not by skaffold), runs as the chart's retrain.image.uid, and that extra
    brings what retrain needs."""
    text = (ROOT / "consumers" / "Dockerfile").read_text()
    assert "--build-arg EXTRAS=train -t fraudstream-trainer" in text
    values = yaml.safe_load((CHART / "values.yaml").read_text())["retrain"]["image"]
    assert f"USER {values['uid']}:{values['uid']}" in text
    assert values["repository"] == "fraudstream-trainer"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    train = " ".join(extras["optional-dependencies"]["train"])
    assert all(name in train for name in ("catboost", "bentoml", "scikit-learn"))
