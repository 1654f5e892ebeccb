"""The chart's optional in-cluster load test (``loadtest.enabled``): a Locust master Job whose
exit code is the gate, a Job of workers that reach it through a headless Service, both locked
down like every other pod; and the image that runs them."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import yaml
from k8s_helpers import CHART, KUBE_VERSIONS, ROOT, containers, pod_spec, render, run_helm
from test_k8s_chart import validate_object

from fraudstream.settings import DatabaseSettings, IdentitySettings, KafkaSettings, env_names

pytestmark = pytest.mark.unit

BOTH = "ScorerUser KafkaUser"
ENABLED = ("loadtest.enabled=true", f"loadtest.userClasses={BOTH}", "loadtest.workers=3")
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
DOCKERFILE = ROOT / "consumers" / "Dockerfile"  # its `loadtest` target


def loadtest_objects(sets: tuple[str, ...] = ENABLED, version: str = KUBE_VERSIONS[-1]):
    return [
        o
        for o in render(sets=sets, kube_version=version)
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "loadtest"
    ]


def one(objects: list[dict], kind: str, suffix: str = "") -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, [o["metadata"]["name"] for o in found]
    return found[0]


def args_of(job: dict) -> list[str]:
    (c,) = containers(job)
    return c["args"]


def option(args: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
    assert len(values) == 1, f"{name} in {args}"
    return values[0]


def test_off_by_default() -> None:
    assert loadtest_objects(sets=()) == []
    assert not [o for o in render() if "loadtest" in o["metadata"]["name"]]


def test_lint_strict_with_the_load_test() -> None:
    out = run_helm("lint", "--strict", str(CHART), *[a for s in ENABLED for a in ("--set", s)])
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_objects_validate_strictly(version: str) -> None:
    objects = loadtest_objects(version=version)
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert kinds == [
        ("Job", "fraudstream-loadtest-master"),
        ("Job", "fraudstream-loadtest-workers"),
        ("NetworkPolicy", "fraudstream-loadtest"),
        ("Service", "fraudstream-loadtest"),
    ]
    for obj in objects:
        validate_object(obj, version)


def test_workers_reach_the_master_through_the_headless_service() -> None:
    objects = loadtest_objects()
    service = one(objects, "Service")
    master = one(objects, "Job", "-master")
    workers = one(objects, "Job", "-workers")
    spec = pod_spec(master)
    # master.<Service>: the master pod's own DNS name (hostname + subdomain = the Service)
    assert spec["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    labels = master["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    worker_args = args_of(workers)
    assert "--worker" in worker_args
    assert option(worker_args, "--master-host") == f"{spec['hostname']}.{spec['subdomain']}"
    (port,) = service["spec"]["ports"]
    (master_port,) = containers(master)[0]["ports"]
    assert port["targetPort"] == master_port["name"] == "locust"
    assert (
        int(option(worker_args, "--master-port"))
        == int(option(args_of(master), "--master-bind-port"))
        == port["port"]
        == master_port["containerPort"]
        == 5557
    )
    # one worker pod per loadtest.workers, and the master waits for exactly that many
    assert workers["spec"]["parallelism"] == workers["spec"]["completions"] == 3
    assert int(option(args_of(master), "--expect-workers")) == 3


def test_master_runs_headless_and_its_exit_code_is_the_gate() -> None:
    master = one(loadtest_objects(), "Job", "-master")
    args = args_of(master)
    assert containers(master)[0]["command"] == ["locust"]
    assert option(args, "--locustfile") == "/app/loadtest/locustfile.py"
    assert {"--master", "--headless"} <= set(args)
    assert option(args, "--users") == "40"
    assert option(args, "--spawn-rate") == "40"
    assert option(args, "--run-time") == "5m"
    assert option(args, "--rate-per-user") == "10"
    assert option(args, "--p99-ms") == "100"
    assert option(args, "--e2e-p99-ms") == "1000"
    assert float(option(args, "--drain-s")) > 0
    assert args[-2:] == BOTH.split()
    host = urlsplit(option(args, "--host"))
    assert (host.hostname, host.port) == ("fraudstream-scorer", 3000)
    # a failed run is the verdict: the Job fails with it and is not run again
    assert master["spec"]["backoffLimit"] == 0
    assert pod_spec(master)["restartPolicy"] == "Never"
    assert master["spec"]["activeDeadlineSeconds"] > 5 * 60
    assert pod_spec(master)["terminationGracePeriodSeconds"] > float(option(args, "--drain-s"))
    # the workers run the same classes
    assert args_of(one(loadtest_objects(), "Job", "-workers"))[-2:] == BOTH.split()


def test_every_option_the_chart_passes_exists_in_the_locustfile() -> None:
    source = LOCUSTFILE.read_text()
    custom = set(re.findall(r'add_argument\(\s*"(--[a-z0-9-]+)"', source))
    assert {"--rate-per-user", "--p99-ms", "--e2e-p99-ms", "--drain-s"} <= custom
    locust_own = {
        "--locustfile",
        "--master",
        "--master-bind-port",
        "--expect-workers",
        "--expect-workers-max-wait",
        "--headless",
        "--only-summary",
        "--users",
        "--spawn-rate",
        "--run-time",
        "--stop-timeout",
        "--host",
        "--worker",
        "--master-host",
        "--master-port",
    }
    for job in (o for o in loadtest_objects() if o["kind"] == "Job"):
        for arg in args_of(job):
            if arg.startswith("--"):
                assert arg.split("=", 1)[0] in custom | locust_own, arg


def test_pods_are_locked_down_sized_and_labelled() -> None:
    for job in (o for o in loadtest_objects() if o["kind"] == "Job"):
        where = job["metadata"]["name"]
        spec = pod_spec(job)
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == "loadtest"
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["enableServiceLinks"] is False, where
        (c,) = containers(job)
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        # Locust and Python may write temporary files: /tmp is an emptyDir
        (mount,) = c["volumeMounts"]
        assert mount["mountPath"] == "/tmp"
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mount["name"]]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: {kind}"
        assert c["image"] == "fraudstream-loadtest:0.1.0"


def test_master_reads_postgres_and_workers_reach_kafka() -> None:
    objects = loadtest_objects(sets=(*ENABLED, "loadtest.extraEnv[0].name=LOCUST_LOGLEVEL"))
    allowed = env_names(KafkaSettings, DatabaseSettings, IdentitySettings)
    allowed |= {"PGPASSWORD", "LOCUST_LOGLEVEL"}
    master_env = {e["name"]: e for e in containers(one(objects, "Job", "-master"))[0]["env"]}
    assert master_env["DATABASE_URL"]["value"].startswith("postgresql://")
    assert urlsplit(master_env["DATABASE_URL"]["value"]).password is None
    assert "secretKeyRef" in master_env["PGPASSWORD"]["valueFrom"]
    worker_env = {e["name"]: e for e in containers(one(objects, "Job", "-workers"))[0]["env"]}
    assert worker_env["KAFKA_BOOTSTRAP_SERVERS"]["value"] == "kafka:9092"
    assert worker_env["TOPIC_TRANSACTIONS"]["value"] == "transactions"
    assert "PGPASSWORD" not in worker_env  # workers only produce
    # workers key their Kafka records by card holder, with the chart's card-key Secret
    assert "secretKeyRef" in worker_env["CARD_KEY_SECRET"]["valueFrom"]
    for env in (master_env, worker_env):
        assert set(env) <= allowed, sorted(set(env) - allowed)
        assert "LOCUST_LOGLEVEL" in env


def test_image_and_sizes_come_from_values() -> None:
    objects = loadtest_objects(
        sets=(
            *ENABLED,
            "images.loadtest.repository=registry.example/locust",
            "images.loadtest.tag=abc",
            "images.loadtest.digest=sha256:0123",
            "loadtest.users=80",
            "loadtest.runTime=90s",
        )
    )
    for job in (o for o in objects if o["kind"] == "Job"):
        assert containers(job)[0]["image"] == "registry.example/locust:abc@sha256:0123"
    args = args_of(one(objects, "Job", "-master"))
    assert option(args, "--users") == "80"
    assert option(args, "--run-time") == "90s"


@pytest.mark.parametrize(
    "bad",
    [
        "loadtest.userClasses=ScorerUsr",
        "loadtest.runTime=5 minutes",
        "loadtest.workers=0",
        "loadtest.userCount=3",
    ],
)
def test_schema_refuses_typos(bad: str) -> None:
    with pytest.raises(AssertionError, match="schema"):
        run_helm("template", "x", str(CHART), "--kube-version", KUBE_VERSIONS[0], "--set", bad)


def test_values_and_image_agree() -> None:
    """The chart runs the locustfile where the image puts it, as the user the image has."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    dockerfile = DOCKERFILE.read_text()
    assert values["loadtest"]["enabled"] is False
    assert values["images"]["loadtest"]["repository"] == "fraudstream-loadtest"
    uid = values["images"]["loadtest"]["uid"]
    assert f"USER {uid}:{uid}" in dockerfile
    copied = re.search(r"^COPY (loadtest/\S+ )+(\S+)$", dockerfile, re.MULTILINE)
    assert copied, "the Dockerfile copies the load test files"
    sources, target = copied.group(0).split()[1:-1], copied.group(2)
    assert "loadtest/locustfile.py" in sources and "loadtest/gate.py" in sources
    assert target.rstrip("/") + "/locustfile.py" == "/app/loadtest/locustfile.py"
    assert '".[${EXTRAS}]"' in dockerfile and "-c requirements.lock" in dockerfile
    # skaffold builds that target with the loadtest extra
    (artifact,) = [
        a
        for a in yaml.safe_load((ROOT / "skaffold.yaml").read_text())["build"]["artifacts"]
        if a["image"] == values["images"]["loadtest"]["repository"]
    ]
    docker = artifact["docker"]
    assert docker["dockerfile"] == "consumers/Dockerfile" and docker["target"] == "loadtest"
    assert docker["buildArgs"] == {"EXTRAS": "loadtest"}
    loadtest_stage = dockerfile.split("AS loadtest", 1)[1].split("\nFROM ", 1)[0]
    assert "loadtest/locustfile.py" in loadtest_stage and f"USER {uid}:{uid}" in loadtest_stage
