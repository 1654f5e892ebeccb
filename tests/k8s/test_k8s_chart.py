"""The Helm chart renders, lints and validates for every supported Kubernetes version, and what
it renders follows the rules a cluster (and an on-call engineer) relies on."""

from __future__ import annotations

import base64
import json
import re
from functools import cache
from importlib.resources import files
from urllib.parse import urlsplit

import jsonschema
import pytest
from crd_schemas import CUSTOM_RESOURCES
from k8s_helpers import (
    CHART,
    KUBE_VERSIONS,
    SCENARIOS,
    containers,
    pod_spec,
    render,
    run_helm,
    scenario_values,
    schema_has,
    skaffold_release,
    skaffold_sets,
)
from referencing import Registry, Resource

from fraudstream.settings import (
    BridgeSettings,
    DatabaseSettings,
    HealthSettings,
    IdentitySettings,
    KafkaSettings,
    LabelsSettings,
    LogSettings,
    RetentionSettings,
    ScorerSettings,
    UiSettings,
    WriterSettings,
    env_names,
)

pytestmark = pytest.mark.unit

ALL_SCENARIOS = ["default", *SCENARIOS]
STABLE_SELECTOR_KEYS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}


@cache
def _core_validator(version: str, kind: str, api_version: str) -> jsonschema.Validator:
    """Strict validator of one kind for one Kubernetes version, from kubernetes-validate's
    schemas (cached: its own `validate` re-reads the large definitions file on every call)."""
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
    path = folder / f"{kind.lower()}-{group}.json"
    if not path.is_file():
        raise AssertionError(f"no Kubernetes {version} schema for {kind} {api_version}")
    schema = json.loads(path.read_text())
    definitions = json.loads((folder / "_definitions.json").read_text())
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_object(obj: dict, version: str) -> None:
    """Strict validation against the Kubernetes schema of `version` (our own schema for CRDs)."""
    key = (obj["apiVersion"], obj["kind"])
    if key in CUSTOM_RESOURCES:
        jsonschema.validate(obj, CUSTOM_RESOURCES[key])
        return
    validator = _core_validator(version, obj["kind"], obj["apiVersion"])
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.path))
    assert not errors, (
        f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {version}: "
        + "; ".join(f"{'.'.join(str(p) for p in e.path)}: {e.message}" for e in errors[:5])
    )


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict], kind: str, name: str) -> dict:
    for o in objects:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    raise AssertionError(f"no {kind}/{name} rendered")


def is_hook(obj: dict) -> bool:
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})


# --------------------------------------------------------------------------- lint / render


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_helm_lint_strict(scenario: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for v in scenario_values(scenario):
        args += ["-f", v]
    out = run_helm(*args)
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_every_object_validates_strictly(scenario: str, version: str) -> None:
    objects = render(values=scenario_values(scenario), kube_version=version)
    assert objects, "nothing rendered"
    for obj in objects:
        validate_object(obj, version)


def test_validation_is_strict() -> None:
    """The validator refuses what the API server would: unknown fields and wrong types."""
    deployment = named(render(), "Deployment", "fraudstream-scorer")
    validate_object(deployment, KUBE_VERSIONS[0])
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(AssertionError, match="livenessProbes"):
        validate_object(typo, KUBE_VERSIONS[0])
    wrong = json.loads(json.dumps(deployment))
    wrong["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "30"
    with pytest.raises(AssertionError, match="terminationGracePeriodSeconds"):
        validate_object(wrong, KUBE_VERSIONS[0])
    monitor = named(render(), "ServiceMonitor", "fraudstream-scorer")
    monitor = json.loads(json.dumps(monitor))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        validate_object(monitor, KUBE_VERSIONS[0])


def test_skaffold_values_render_and_validate() -> None:
    """What `skaffold dev` installs (its setValues and image templates) is valid too."""
    objects = render(sets=skaffold_sets(skaffold_release("fraudstream")))
    for obj in objects:
        validate_object(obj, KUBE_VERSIONS[0])


def test_default_render_has_every_part() -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render()}
    for expected in [
        ("Deployment", "fraudstream-scorer"),
        ("Service", "fraudstream-scorer"),
        ("HorizontalPodAutoscaler", "fraudstream-scorer"),
        ("PodDisruptionBudget", "fraudstream-scorer"),
        ("Deployment", "fraudstream-bridge"),
        ("Deployment", "fraudstream-writer"),
        ("Deployment", "fraudstream-labels"),
        ("Service", "fraudstream-labels"),
        ("NetworkPolicy", "fraudstream-labels"),
        ("Job", "fraudstream-migrations"),
        ("Job", "fraudstream-topics"),
        ("CronJob", "fraudstream-prune"),
        ("ServiceAccount", "fraudstream"),
        ("ServiceMonitor", "fraudstream-scorer"),
        ("ServiceMonitor", "fraudstream-consumers"),
        ("PrometheusRule", "fraudstream-alerts"),
        ("Pod", "fraudstream-test-score"),
    ]:
        assert expected in kinds, expected
    account = named(render(), "ServiceAccount", "fraudstream")
    assert account["automountServiceAccountToken"] is False


def test_typo_in_values_is_refused_by_the_schema() -> None:
    with pytest.raises(AssertionError, match="additional properties|replicas"):
        run_helm(
            "template", "x", str(CHART), "--kube-version", "1.30.0", "--set", "scorer.replicas=3"
        )


# --------------------------------------------------------------------------- workload policies


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_every_container_is_locked_down_and_sized(scenario: str) -> None:
    for obj in render(values=scenario_values(scenario)):
        spec = pod_spec(obj)
        if spec is None:
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        psc = spec.get("securityContext") or {}
        assert psc.get("runAsNonRoot") is True, where
        assert isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0, where
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        writable = {m["mountPath"] for c in containers(obj) for m in c.get("volumeMounts", [])}
        for c in containers(obj):
            sc = c.get("securityContext") or {}
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(kind) or {}), f"{where}: {kind}"
        # a read-only root needs somewhere to write temporary files
        assert "/tmp" in writable, f"{where}: no writable /tmp"


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_long_running_containers_have_probes(scenario: str) -> None:
    for obj in render(values=scenario_values(scenario)):
        if obj["kind"] not in WORKLOADS:
            continue
        for c in containers(obj):
            for probe in ("livenessProbe", "readinessProbe"):
                assert c.get(probe), f"{obj['metadata']['name']}/{c['name']}: no {probe}"


def test_scorer_probes_use_bentoml_endpoints() -> None:
    c = containers(named(render(), "Deployment", "fraudstream-scorer"))[0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]
    svc = named(render(), "Service", "fraudstream-scorer")
    assert svc["spec"]["ports"][0]["name"] == "http" and svc["spec"]["ports"][0]["port"] == 3000


def test_scorer_keeps_serving_until_its_endpoint_is_gone() -> None:
    """preStop: the pod keeps answering while the endpoint removal reaches every node, then
    gets SIGTERM; the grace period covers that wait and the in-flight requests after it."""
    spec = pod_spec(named(render(), "Deployment", "fraudstream-scorer"))
    (c,) = spec["containers"]
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and int(command[1]) >= 5
    assert spec["terminationGracePeriodSeconds"] >= int(command[1]) + 10
    off = pod_spec(
        named(render(sets=("scorer.preStopSeconds=0",)), "Deployment", "fraudstream-scorer")
    )
    assert "lifecycle" not in off["containers"][0]
    with pytest.raises(AssertionError, match="must be more than scorer.preStopSeconds"):
        render(sets=("scorer.preStopSeconds=30", "scorer.terminationGracePeriodSeconds=30"))


def test_scorer_does_not_shed_load_at_the_target_rate() -> None:
    """A load-shedding deadline of a few tens of milliseconds refuses /score calls with 503 on a
    busy 2-core node at 400/s: the chart keeps at least the service's own default."""
    data = named(render(), "ConfigMap", "fraudstream-scorer")["data"]
    assert int(data["ADAPTIVE_MAX_LATENCY_MS"]) >= ScorerSettings().adaptive_max_latency_ms


def test_scorer_sends_no_usage_analytics() -> None:
    objects = render()
    (c,) = containers(named(objects, "Deployment", "fraudstream-scorer"))
    assert container_env(objects, {}, c)["BENTOML_DO_NOT_TRACK"] == "True"


@pytest.mark.parametrize("component", ["bridge", "writer", "labels"])
def test_consumer_liveness_follows_loop_progress(component: str) -> None:
    """/metrics answers while the consumer loop is stuck: liveness asks /healthz, which turns
    503 once the loop has made no progress for LIVENESS_MAX_AGE_S."""
    objects = render()
    (c,) = containers(named(objects, "Deployment", f"fraudstream-{component}"))
    live, ready = c["livenessProbe"], c["readinessProbe"]
    assert live["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert ready["httpGet"]["port"] == "metrics"
    assert {p["name"] for p in c["ports"]} == {"metrics"}
    max_age = float(container_env(objects, {}, c)["LIVENESS_MAX_AGE_S"])
    # a restart only after the heartbeat is stale and several probes agreed
    assert live["periodSeconds"] * live["failureThreshold"] >= 30
    # longer than one scorer call or one database retry wait, the longest a healthy loop is quiet
    config = named(objects, "ConfigMap", f"fraudstream-{component}")["data"]
    quiet = float(config.get("SCORER_TIMEOUT_S") or config.get("DB_RETRY_MAX_S"))
    assert max_age > 2 * quiet


def test_hpa_scales_the_scorer_on_cpu() -> None:
    objects = render()
    hpa = named(objects, "HorizontalPodAutoscaler", "fraudstream-scorer")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == (
        "apps/v1",
        "Deployment",
        "fraudstream-scorer",
    )
    target = named(objects, "Deployment", ref["name"])
    # replicas belongs to the HPA: a Deployment that sets it would be reset on every upgrade
    assert "replicas" not in target["spec"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert {"scaleUp", "scaleDown"} <= set(hpa["spec"]["behavior"])
    # CPU utilisation is relative to the request: there must be one
    assert containers(target)[0]["resources"]["requests"]["cpu"]


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_no_deployment_is_scaled_by_both_hpa_and_keda(scenario: str) -> None:
    objects = render(values=scenario_values(scenario))
    hpa = {o["spec"]["scaleTargetRef"]["name"] for o in by_kind(objects, "HorizontalPodAutoscaler")}
    keda = {o["spec"]["scaleTargetRef"]["name"] for o in by_kind(objects, "ScaledObject")}
    assert not hpa & keda
    deployments = {o["metadata"]["name"]: o for o in by_kind(objects, "Deployment")}
    for name in hpa | keda:
        assert name in deployments, f"autoscaler targets missing Deployment {name}"
        assert "replicas" not in deployments[name]["spec"], name


def test_keda_scales_the_bridge_on_lag_within_partitions() -> None:
    objects = render(values=scenario_values("keda-values.yaml"))
    (so,) = by_kind(objects, "ScaledObject")
    assert so["spec"]["scaleTargetRef"]["name"] == "fraudstream-bridge"
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    cm = named(objects, "ConfigMap", "fraudstream-bridge")["data"]
    assert trigger["metadata"]["consumerGroup"] == cm["BRIDGE_GROUP_ID"]
    assert trigger["metadata"]["topic"] == cm["TOPIC_TRANSACTIONS"]
    assert so["spec"]["maxReplicaCount"] <= int(cm["TOPIC_PARTITIONS"])
    assert not by_kind(render(), "ScaledObject"), "KEDA must be off by default"


@pytest.mark.parametrize("component", ["bridge", "writer", "labels"])
def test_consumers_never_outnumber_partitions(component: str) -> None:
    objects = render()
    dep = named(objects, "Deployment", f"fraudstream-{component}")
    partitions = int(
        named(objects, "ConfigMap", f"fraudstream-{component}")["data"]["TOPIC_PARTITIONS"]
    )
    assert 1 <= dep["spec"]["replicas"] <= partitions
    with pytest.raises(AssertionError, match="more than kafka.topics.partitions"):
        render(sets=(f"{component}.replicaCount={partitions + 1}",))


def test_consumers_get_longer_than_a_batch_to_stop() -> None:
    objects = render()
    bridge = named(objects, "Deployment", "fraudstream-bridge")
    env = named(objects, "ConfigMap", "fraudstream-bridge")["data"]
    batch = float(env["SCORER_TIMEOUT_S"]) + int(env["BRIDGE_BATCH_MAX_WAIT_MS"]) / 1000
    assert bridge["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > batch
    writer = named(objects, "Deployment", "fraudstream-writer")
    env = named(objects, "ConfigMap", "fraudstream-writer")["data"]
    batch = float(env["DB_RETRY_MAX_S"]) + int(env["WRITER_BATCH_MAX_WAIT_MS"]) / 1000
    assert writer["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > batch
    labels = named(objects, "Deployment", "fraudstream-labels")
    env = named(objects, "ConfigMap", "fraudstream-labels")["data"]
    batch = float(env["DB_RETRY_MAX_S"]) + int(env["LABELS_BATCH_MAX_WAIT_MS"]) / 1000
    assert labels["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > batch
    assert containers(labels)[0]["args"] == ["labels", "consume"]
    for name in ("fraudstream-bridge", "fraudstream-writer", "fraudstream-labels"):
        c = containers(named(objects, "Deployment", name))[0]
        assert any(p["name"] == "metrics" for p in c["ports"]), name


def test_pdb_covers_the_scorer_pods() -> None:
    objects = render()
    pdb = named(objects, "PodDisruptionBudget", "fraudstream-scorer")
    pods = named(objects, "Deployment", "fraudstream-scorer")["spec"]["template"]["metadata"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pods["labels"].items()


# --------------------------------------------------------------------------- selectors


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_selectors_carry_only_stable_labels(scenario: str) -> None:
    objects = render(values=scenario_values(scenario))
    pod_labels = [
        o["spec"]["template"]["metadata"]["labels"] for o in objects if o["kind"] in WORKLOADS
    ]
    for o in objects:
        kind, spec = o["kind"], o.get("spec") or {}
        selectors = []
        if kind in WORKLOADS or kind == "PodDisruptionBudget":
            selectors.append(spec["selector"]["matchLabels"])
        elif kind == "Service":
            selectors.append(spec["selector"])
        elif kind == "NetworkPolicy":
            selectors.append(spec["podSelector"]["matchLabels"])
        elif kind == "ServiceMonitor":
            selectors.append(spec["selector"].get("matchLabels", {}))
        for sel in selectors:
            assert sel, f"{kind}/{o['metadata']['name']}: empty selector"
            assert set(sel) <= STABLE_SELECTOR_KEYS, f"{kind}/{o['metadata']['name']}: {sel}"
        if kind in WORKLOADS:
            labels = spec["template"]["metadata"]["labels"]
            assert spec["selector"]["matchLabels"].items() <= labels.items()
        if kind == "Service":
            assert any(spec["selector"].items() <= pl.items() for pl in pod_labels), (
                f"Service/{o['metadata']['name']} selects no pod"
            )


# --------------------------------------------------------------------------- configuration


SETTINGS_OF = {
    "scorer": (ScorerSettings, DatabaseSettings, LogSettings, IdentitySettings),
    "bridge": (KafkaSettings, BridgeSettings, HealthSettings, LogSettings),
    "writer": (KafkaSettings, WriterSettings, HealthSettings, DatabaseSettings, LogSettings),
    # DB_RETRY_MAX_S is the writer's setting, read by the labels consumer too
    "labels": (
        KafkaSettings,
        LabelsSettings,
        WriterSettings,
        HealthSettings,
        DatabaseSettings,
        LogSettings,
    ),  # fmt: skip
    "challenger": (ScorerSettings, DatabaseSettings, LogSettings, IdentitySettings),
    "writer-shadow": (KafkaSettings, WriterSettings, HealthSettings, DatabaseSettings, LogSettings),
    "migrations": (DatabaseSettings, LogSettings),
    "topics": (KafkaSettings, LogSettings),
    "ui": (KafkaSettings, DatabaseSettings, UiSettings, IdentitySettings),
    "prune": (DatabaseSettings, RetentionSettings, LogSettings),
}
# Variables read by something other than our settings classes, and who reads them.
NOT_SETTINGS = {
    "PGPASSWORD": "libpq (psycopg2) takes the password from it, so it never sits in a URL",
    "BENTOML_HOME": "BentoML: its writable home on the read-only root filesystem",
    "HOME": "a writable home on the read-only root (Streamlit, library caches)",
    "BENTOML_DO_NOT_TRACK": "BentoML: no usage analytics sent from the cluster",
}
REQUIRED = {
    "scorer": {"MODEL_TAG", "PORT", "WORKERS", "DATABASE_URL", "CARD_KEY_SECRET"},
    "bridge": {
        "KAFKA_BOOTSTRAP_SERVERS",
        "SCORER_URL",
        "METRICS_PORT",
        "BRIDGE_GROUP_ID",
        "LIVENESS_MAX_AGE_S",
    },
    "writer": {
        "KAFKA_BOOTSTRAP_SERVERS",
        "DATABASE_URL",
        "METRICS_PORT",
        "WRITER_GROUP_ID",
        "LIVENESS_MAX_AGE_S",
    },
    "labels": {
        "KAFKA_BOOTSTRAP_SERVERS",
        "TOPIC_LABELS",
        "DATABASE_URL",
        "PGPASSWORD",
        "METRICS_PORT",
        "LABELS_GROUP_ID",
        "LIVENESS_MAX_AGE_S",
        "QUALITY_WINDOW_S",
        "QUALITY_REFRESH_S",
    },
    "migrations": {"DATABASE_URL", "PGPASSWORD"},
    # the volume of a broker is finite: every topic is bounded by size as well as by time
    "topics": {
        "KAFKA_BOOTSTRAP_SERVERS",
        "TOPIC_PARTITIONS",
        "TOPIC_RETENTION_MS",
        "TOPIC_RETENTION_BYTES",
    },
    "ui": {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "PGPASSWORD", "CARD_KEY_SECRET"},
    "prune": {
        "DATABASE_URL",
        "PGPASSWORD",
        "HISTORY_DEDUPE_DAYS",
        "SCORES_RETENTION_DAYS",
        "LABELS_RETENTION_DAYS",
        "PRUNE_BATCH_SIZE",
    },
}


def container_env(objects: list[dict], obj: dict, c: dict) -> dict[str, str | None]:
    """Every variable a container gets (ConfigMap envFrom included); None = from a Secret."""
    env: dict[str, str | None] = {}
    for src in c.get("envFrom") or []:
        cm = named(objects, "ConfigMap", src["configMapRef"]["name"])
        env.update(cm["data"])
    for e in c.get("env") or []:
        env[e["name"]] = e.get("value")
    return env


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_chart_sets_exactly_the_variables_the_code_reads(scenario: str) -> None:
    objects = render(values=scenario_values(scenario))
    seen = set()
    for obj in objects:
        component = obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        if pod_spec(obj) is None or component == "test":
            continue
        seen.add(component)
        allowed = env_names(*SETTINGS_OF[component]) | set(NOT_SETTINGS)
        for c in containers(obj):
            names = set(container_env(objects, obj, c))
            unknown = names - allowed
            assert not unknown, f"{component} sets variables no code reads: {sorted(unknown)}"
            missing = REQUIRED.get(component, set()) - names
            if component == "scorer" and "DATABASE_URL" in missing:
                missing -= {"DATABASE_URL"} if scenario == "minimal-values.yaml" else set()
            assert not missing, f"{component} lacks {sorted(missing)}"
    assert "scorer" in seen


def test_bridge_reaches_the_scorer_service() -> None:
    objects = render()
    url = urlsplit(named(objects, "ConfigMap", "fraudstream-bridge")["data"]["SCORER_URL"])
    svc = named(objects, "Service", url.hostname)
    assert url.port in {p["port"] for p in svc["spec"]["ports"]}


def test_no_password_in_values_or_configmaps() -> None:
    values = (CHART / "values.yaml").read_text()
    assert not re.search(r"^\s*password:\s*\S", values, re.MULTILINE | re.IGNORECASE)
    for scenario in ALL_SCENARIOS:
        objects = render(values=scenario_values(scenario))
        for cm in by_kind(objects, "ConfigMap"):
            for key, value in (cm.get("data") or {}).items():
                assert "PASSWORD" not in key.upper(), key
                if key == "DATABASE_URL":
                    assert urlsplit(value).password is None
        for obj in objects:
            for c in containers(obj):
                for e in c.get("env") or []:
                    if e["name"] == "PGPASSWORD":
                        assert "secretKeyRef" in e.get("valueFrom", {}), (
                            "password must come from a Secret"
                        )


def test_generated_secret_is_random_and_kept_or_an_existing_one_is_used() -> None:
    a = named(render(), "Secret", "fraudstream-database")
    b = named(render(sets=("logging.level=DEBUG",)), "Secret", "fraudstream-database")
    assert a["data"]["password"] != b["data"]["password"]  # random (lookup keeps it on a cluster)
    assert a["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    objects = render(values=scenario_values("existing-secret-values.yaml"))
    assert not by_kind(objects, "Secret")
    refs = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for o in objects
        for c in containers(o)
        for e in c.get("env") or []
        if e["name"] == "PGPASSWORD"
    }
    assert refs == {("postgres", "password")}


def _card_key_refs(objects: list[dict]) -> dict[str, set[tuple[str, str]]]:
    """component -> (Secret, key) its containers take CARD_KEY_SECRET from."""
    refs: dict[str, set[tuple[str, str]]] = {}
    for o in objects:
        component = o["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        for c in containers(o):
            for e in c.get("env") or []:
                if e["name"] == "CARD_KEY_SECRET":
                    ref = e["valueFrom"]["secretKeyRef"]  # never a plain value
                    refs.setdefault(component, set()).add((ref["name"], ref["key"]))
    return refs


def test_card_key_secret_is_generated_once_or_an_existing_one_is_used() -> None:
    objects = render(sets=("loadtest.enabled=true",))
    a = named(objects, "Secret", "fraudstream-card-key")
    b = named(render(sets=("logging.level=DEBUG",)), "Secret", "fraudstream-card-key")
    assert len(base64.b64decode(a["data"]["card-key"])) == 48
    assert a["data"]["card-key"] != b["data"]["card-key"]  # random (lookup keeps it on a cluster)
    assert a["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # the pods that compute card keys or derive ids get it, from the Secret; no other pod does
    own = {("fraudstream-card-key", "card-key")}
    assert _card_key_refs(objects) == {"scorer": own, "ui": own, "loadtest": own}
    for cm in by_kind(objects, "ConfigMap"):
        assert "CARD_KEY_SECRET" not in (cm.get("data") or {})
    objects = render(values=scenario_values("existing-secret-values.yaml"))
    assert not by_kind(objects, "Secret")
    assert _card_key_refs(objects) == {
        "scorer": {("fraudstream-card-key", "key")},
        "ui": {("fraudstream-card-key", "key")},
    }


def test_hook_jobs_run_before_the_app_and_after_the_secret() -> None:
    objects = render()
    secret = named(objects, "Secret", "fraudstream-database")
    for name, args in [
        ("fraudstream-migrations", ["migrate"]),
        ("fraudstream-topics", ["topics", "create"]),
    ]:
        job = named(objects, "Job", name)
        ann = job["metadata"]["annotations"]
        assert set(ann["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
        assert int(ann["helm.sh/hook-weight"]) > int(
            secret["metadata"]["annotations"]["helm.sh/hook-weight"]
        )
        c = containers(job)[0]
        assert c["command"] + c["args"] == ["fraudstream", *args]
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        assert not c.get("envFrom"), "a pre-install hook cannot read the chart's ConfigMaps"


def test_helm_test_scores_the_example_transaction() -> None:
    pod = named(render(), "Pod", "fraudstream-test-score")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = containers(pod)[0]
    code, url = c["args"]
    assert "EXAMPLE_TRANSACTION" in code and '"/score"' in code
    compile(code, "helm-test", "exec")
    assert url == "http://fraudstream-scorer:3000"


# --------------------------------------------------------------------------- network policies


def _matches(selector: dict, labels: dict) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items()


def pod_labels(obj: dict) -> dict:
    """Labels of the pods an object makes (a Pod's own, a workload's or a CronJob's template)."""
    if obj["kind"] == "Pod":
        return obj["metadata"]["labels"]
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    return spec["template"]["metadata"]["labels"]


def test_every_pod_is_fenced_by_a_network_policy() -> None:
    objects = render()
    policies = by_kind(objects, "NetworkPolicy")
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        mine = [p for p in policies if _matches(p["spec"]["podSelector"], pod_labels(obj))]
        assert mine, f"{obj['kind']}/{obj['metadata']['name']} has no NetworkPolicy"
        for p in mine:
            assert set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            for rule in p["spec"].get("egress", []):
                assert rule.get("ports"), f"{p['metadata']['name']}: egress to every port"


def test_network_policies_allow_the_pipeline_and_scraping() -> None:
    objects = render()
    scorer = named(objects, "NetworkPolicy", "fraudstream-scorer")
    bridge_pods = named(objects, "Deployment", "fraudstream-bridge")["spec"]["template"][
        "metadata"
    ]["labels"]
    test_pod = named(objects, "Pod", "fraudstream-test-score")["metadata"]["labels"]
    peers = [peer for rule in scorer["spec"]["ingress"] for peer in rule.get("from", [])]
    assert any("podSelector" in p and _matches(p["podSelector"], bridge_pods) for p in peers)
    assert any("podSelector" in p and _matches(p["podSelector"], test_pod) for p in peers)
    assert any("namespaceSelector" in p for p in peers), "Prometheus must be able to scrape"
    bridge = named(objects, "NetworkPolicy", "fraudstream-bridge")
    egress_ports = {port["port"] for rule in bridge["spec"]["egress"] for port in rule["ports"]}
    assert {53, 9092, 3000} <= egress_ports


def _ingress_rules(policy: dict) -> list[dict]:
    return policy["spec"].get("ingress") or []


def _admits_anyone_on_http(policy: dict) -> bool:
    return any(
        "from" not in rule and {p["port"] for p in rule.get("ports", [])} == {"http"}
        for rule in _ingress_rules(policy)
    )


@pytest.mark.parametrize("service_type", ["NodePort", "LoadBalancer"])
def test_an_exposed_scorer_admits_traffic_from_outside_the_namespace(service_type: str) -> None:
    """A NodePort / LoadBalancer connection arrives from a node address or from outside the
    cluster: the scorer's own policy must admit it on http, or the Service is a dead end."""
    sets = (f"scorer.service.type={service_type}",)
    assert _admits_anyone_on_http(named(render(sets=sets), "NetworkPolicy", "fraudstream-scorer"))
    narrowed = named(
        render(sets=(*sets, "networkPolicy.scorerExternalIngress[0].ipBlock.cidr=10.1.0.0/16")),
        "NetworkPolicy",
        "fraudstream-scorer",
    )
    assert not _admits_anyone_on_http(narrowed)
    assert {"ipBlock": {"cidr": "10.1.0.0/16"}} in [
        peer for rule in _ingress_rules(narrowed) for peer in rule.get("from", [])
    ]


def test_a_cluster_ip_scorer_admits_only_named_peers() -> None:
    policy = named(render(), "NetworkPolicy", "fraudstream-scorer")
    assert all(rule.get("from") for rule in _ingress_rules(policy))


def _loadtest_render() -> list[dict]:
    # the loadtest values arrive with the loadtest component; the policies do not wait for them
    flags = () if schema_has("loadtest", "enabled") else ("--skip-schema-validation",)
    return render(sets=("loadtest.enabled=true",), flags=flags)


def test_the_in_cluster_load_test_reaches_the_scorer_kafka_and_postgres() -> None:
    objects = _loadtest_render()
    labels = {
        "app.kubernetes.io/name": "fraudstream",
        "app.kubernetes.io/instance": "fraudstream",
        "app.kubernetes.io/component": "loadtest",
    }
    scorer = named(objects, "NetworkPolicy", "fraudstream-scorer")
    peers = [
        peer
        for rule in _ingress_rules(scorer)
        if {p["port"] for p in rule.get("ports", [])} == {"http"}
        for peer in rule.get("from", [])
    ]
    assert any("podSelector" in p and _matches(p["podSelector"], labels) for p in peers)
    (mine,) = [
        p for p in by_kind(objects, "NetworkPolicy") if _matches(p["spec"]["podSelector"], labels)
    ]
    egress = mine["spec"]["egress"]
    ports = {port["port"] for rule in egress for port in rule["ports"]}
    assert {53, 9092, 5432, 3000} <= ports
    to_scorer = [r for r in egress if any(p["port"] == 3000 for p in r["ports"])]
    scorer_pods = {**labels, "app.kubernetes.io/component": "scorer"}
    assert all(_matches(peer["podSelector"], scorer_pods) for r in to_scorer for peer in r["to"])
    # whatever pods the load test brings are fenced by that policy
    for obj in objects:
        spec = pod_spec(obj)
        template = obj if obj["kind"] == "Pod" else obj.get("spec", {}).get("template", {})
        pod_labels = (template.get("metadata") or {}).get("labels") or {}
        if spec is not None and pod_labels.get("app.kubernetes.io/component") == "loadtest":
            assert _matches(mine["spec"]["podSelector"], pod_labels), obj["metadata"]["name"]
    # and without the load test, nothing of it
    assert "loadtest" not in json.dumps(by_kind(render(), "NetworkPolicy"))


def test_dns_peers_are_a_value() -> None:
    def dns_peers(objects: list[dict]) -> list:
        found = []
        for policy in by_kind(objects, "NetworkPolicy"):
            rules = [
                r
                for r in policy["spec"].get("egress", [])
                if {p["port"] for p in r["ports"]} == {53}
            ]
            assert len(rules) == 1, policy["metadata"]["name"]
            found.append(rules[0].get("to"))
        return found

    kube_dns = [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert all(peers == kube_dns for peers in dns_peers(render()))
    local = ("networkPolicy.dnsPeers[0].ipBlock.cidr=169.254.20.10/32",)
    assert all(
        peers == [{"ipBlock": {"cidr": "169.254.20.10/32"}}]
        for peers in dns_peers(render(sets=local))
    )


# --------------------------------------------------------------------------- monitoring objects


def test_service_monitors_scrape_named_ports_of_real_services() -> None:
    objects = render()
    services = by_kind(objects, "Service")
    for sm in by_kind(objects, "ServiceMonitor"):
        sel = sm["spec"]["selector"]
        picked = [
            s
            for s in services
            if _matches(sel, s["metadata"]["labels"])
            and all(
                s["metadata"]["labels"].get(e["key"]) in e["values"]
                for e in sel.get("matchExpressions", [])
            )
        ]
        assert picked, f"ServiceMonitor/{sm['metadata']['name']} selects no Service"
        for s in picked:
            names = {p["name"] for p in s["spec"]["ports"]}
            for ep in sm["spec"]["endpoints"]:
                assert ep["port"] in names, (sm["metadata"]["name"], s["metadata"]["name"])


def alerts_of(objects: list[dict]) -> list[dict]:
    return [
        r
        for rule in by_kind(objects, "PrometheusRule")
        for g in rule["spec"]["groups"]
        for r in g["rules"]
        if "alert" in r
    ]


def test_prometheus_rule_has_the_promised_alerts() -> None:
    alerts = alerts_of(render())
    names = {a["alert"] for a in alerts}
    assert names >= {
        "FraudScorerErrorRateHigh",
        "FraudScorerLatencyHigh",
        "FraudScorerBatchLatencyHigh",
        "FraudRateSpike",
        "FraudModelDrift",
        "FraudBridgeConsumerLagHigh",
        "FraudBridgeNotConsuming",
        "FraudScoresNotWritten",
        "FraudDeadLetterQueueGrowing",
        "FraudScorerDown",
        "FraudBridgeDown",
        "FraudWriterDown",
    }
    for a in alerts:
        assert a["labels"]["severity"] in {"warning", "critical"}, a["alert"]
        assert a["annotations"]["summary"] and a["annotations"]["description"], a["alert"]
        assert 'namespace="fraudstream"' in a["expr"], f"{a['alert']}: other releases leak in"


def test_latency_alerts_are_per_endpoint() -> None:
    """/score_batch calls carry up to 500 transactions: mixed with /score, they would hide a
    slow /score and set off a /score alert on their own."""
    latency = [a for a in alerts_of(render()) if "request_duration_seconds" in a["expr"]]
    endpoints = sorted(re.findall(r'endpoint="([^"]+)"', a["expr"]) for a in latency)
    assert endpoints == [["/score"], ["/score_batch"]]
    for a in alerts_of(render()):
        if "bentoml_service_request_total" in a["expr"]:
            # probes (/readyz, /livez) are requests too: they must not dilute the error ratio
            assert 'endpoint=~"/score|/score_batch"' in a["expr"]


def test_drift_alert_is_psi_above_0_2_for_15_minutes_per_feature() -> None:
    (alert,) = [a for a in alerts_of(render()) if a["alert"] == "FraudModelDrift"]
    expr = " ".join(alert["expr"].split())
    assert expr == 'max by (feature) (fraudstream_scorer_psi{namespace="fraudstream"}) > 0.2'
    assert alert["for"] == "15m" and alert["labels"]["severity"] == "warning"
    sets = ("prometheusRule.driftPsi=1", "prometheusRule.driftFor=1h")
    (changed,) = [a for a in alerts_of(render(sets=sets)) if a["alert"] == "FraudModelDrift"]
    assert changed["expr"].strip().endswith("> 1") and changed["for"] == "1h"


def test_scores_not_written_needs_traffic_and_survives_a_writer_at_zero() -> None:
    (alert,) = [a for a in alerts_of(render()) if a["alert"] == "FraudScoresNotWritten"]
    expr = alert["expr"]
    # fires only while scores are produced ...
    produced, _, stored = expr.partition("unless")
    assert "fraudstream_bridge_messages_out_total" in produced and "> 0" in produced
    # ... and is silenced only by writer series that exist and show rows: a writer scaled to 0
    # has no series, so nothing silences it (no `or vector(0)` that would read "0 == no data")
    assert "fraudstream_writer_rows_inserted_total" in stored
    assert "vector(" not in expr
    assert re.fullmatch(r"[0-9]+[sm]", alert["for"]) and alert["for"] in {"1m", "2m", "3m"}
    objects = render(sets=("writer.enabled=false",))
    assert "FraudScoresNotWritten" not in {a["alert"] for a in alerts_of(objects)}


def test_bridge_lag_alerts_use_kafka_exporter_of_the_bridges_group() -> None:
    """Lag measured at the broker (kafka-exporter) of the bridge's own group and topic, picked
    by `kafkaExporterSelector` (default: the release namespace); the lag alert falls back to the
    bridge's gauges without the exporter, and the not-consuming alert needs it."""
    sets = (
        "bridge.groupId=g-1",
        "kafka.topics.transactions=tx-1",
        r'prometheusRule.kafkaExporterSelector=namespace="kafka"\, job="kafka-exporter"',
    )
    for objects, selector, topic in [
        (
            render(),
            'consumergroup="fraudstream-bridge", namespace="fraudstream"',
            'topic="transactions"',
        ),
        (
            render(sets=sets),
            'consumergroup="g-1", namespace="kafka", job="kafka-exporter"',
            'topic="tx-1"',
        ),
    ]:
        alerts = {a["alert"]: a for a in alerts_of(objects)}
        lag, idle = alerts["FraudBridgeConsumerLagHigh"], alerts["FraudBridgeNotConsuming"]
        assert f"kafka_consumergroup_lag{{{selector}, {topic}}}" in lag["expr"]
        assert "or on ()" in lag["expr"] and "fraudstream_bridge_consumer_lag" in lag["expr"]
        assert f"kafka_consumergroup_members{{{selector}}}" in idle["expr"]
        assert f"kafka_consumergroup_current_offset{{{selector}, {topic}}}[5m]" in idle["expr"]
        assert "fraudstream_" not in idle["expr"], "it must not depend on the bridge's own series"
        assert idle["labels"]["severity"] == "critical" and idle["for"] == "3m"
    with pytest.raises(AssertionError, match="kafkaExporterSelector"):
        render(sets=("prometheusRule.kafkaExporterSelector=namespace=kafka",))
    minimal = {a["alert"] for a in alerts_of(render(values=scenario_values("minimal-values.yaml")))}
    assert "FraudBridgeNotConsuming" not in minimal


def test_every_consumer_has_a_down_alert_and_a_dlq_alert() -> None:
    objects = render()
    alerts = alerts_of(objects)
    services = {s["metadata"]["name"] for s in by_kind(objects, "Service")}
    for component in ("scorer", "bridge", "writer", "labels"):
        (down,) = [a for a in alerts if a["alert"] == f"Fraud{component.title()}Down"]
        (job,) = re.findall(r'job="([^"]+)"', down["expr"])
        assert job in services, "the job label of a ServiceMonitor target is its Service name"
        assert down["expr"].strip().startswith("absent(") and down.get("for")
    dlq = {a["labels"]["component"]: a["expr"] for a in alerts if "dlq_messages" in a["expr"]}
    assert set(dlq) == {"bridge", "writer", "labels"}
    for component, expr in dlq.items():
        assert f"fraudstream_{component}_dlq_messages_total" in expr
    minimal = {a["alert"] for a in alerts_of(render(values=scenario_values("minimal-values.yaml")))}
    assert "FraudBridgeDown" not in minimal and "FraudDeadLetterQueueGrowing" not in minimal


# Grafana of the pinned kube-prometheus-stack 79.7.1: its grafana chart 10.2.0 ships Grafana
# 12.3.0, whose newest dashboard schema is 42. A newer schema than Grafana knows is refused or
# misread; an older one is migrated on every load.
GRAFANA_SCHEMA_VERSION = 42
DASHBOARDS = {"fraudstream-overview", "fraudstream-scorer", "fraudstream-model"}
PROMETHEUS_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def test_dashboards_are_grafana_json_for_the_sidecar() -> None:
    cms = [
        c for c in by_kind(render(), "ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]
    ]
    shipped = {}
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        for key, body in cm["data"].items():
            shipped[key.removesuffix(".json")] = json.loads(body)
    assert set(shipped) == DASHBOARDS
    for name, dash in shipped.items():
        assert dash["uid"] == name, "a stable uid keeps links and bookmarks working"
        assert dash["schemaVersion"] == GRAFANA_SCHEMA_VERSION, name
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in dash["panels"]:
            where = f"{name}: {panel['title']}"
            assert panel["datasource"] == PROMETHEUS_DATASOURCE, where
            assert panel["targets"], where
            for t in panel["targets"]:
                assert t["expr"] and t["refId"], where
                assert t.get("datasource", PROMETHEUS_DATASOURCE) == PROMETHEUS_DATASOURCE, where
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, where


def test_the_scorer_route_label_survives_the_scrape() -> None:
    """BentoML's metrics and ours carry `endpoint` (the route); the Prometheus Operator puts its
    own `endpoint` (the port name) on every target and, unless the scraped label is honoured,
    renames ours to `exported_endpoint`: every per-endpoint panel and alert would be empty."""
    monitor = named(render(), "ServiceMonitor", "fraudstream-scorer")
    assert all(ep.get("honorLabels") is True for ep in monitor["spec"]["endpoints"])


def test_monitoring_switches_off_cleanly() -> None:
    kinds = {o["kind"] for o in render(values=scenario_values("monitoring-off-values.yaml"))}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    cms = by_kind(render(values=scenario_values("monitoring-off-values.yaml")), "ConfigMap")
    assert not [c for c in cms if "grafana_dashboard" in c["metadata"]["labels"]]


# --------------------------------------------------------------------------- values documentation


def test_every_value_has_a_helm_docs_comment() -> None:
    """Each value line is documented by a `# --` comment, itself or through a documented parent."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented_parents: list[int] = []  # indents of documented open blocks
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z_][\w.-]*):(.*)$", line)
        if not m:
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3).strip()
        documented_parents = [d for d in documented_parents if d < indent]
        j = i - 1
        while (
            j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --")
        ):
            j -= 1
        has_doc = j >= 0 and lines[j].strip().startswith("# --")
        is_leaf = rest not in ("",) and not rest.startswith("#")
        if has_doc and not is_leaf:
            documented_parents.append(indent)
        if is_leaf and not has_doc and not documented_parents:
            undocumented.append(f"line {i + 1}: {key}")
    assert not undocumented, undocumented


def test_values_schema_is_draft7_and_catches_typos() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema.get("additionalProperties") is False
    for part in ("scorer", "bridge", "writer", "database", "kafka"):
        assert schema["properties"][part].get("additionalProperties") is False, part


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_hooks_only_use_what_exists_before_them(scenario: str) -> None:
    """A pre-install hook runs before the release's normal objects exist: every ServiceAccount,
    Secret and ConfigMap it uses is either made by an earlier hook or already there."""
    objects = render(values=scenario_values(scenario))
    weight = {
        (o["kind"], o["metadata"]["name"]): int(
            o["metadata"]["annotations"].get("helm.sh/hook-weight", "0")
        )
        for o in objects
        if is_hook(o) and "pre-install" in o["metadata"]["annotations"]["helm.sh/hook"]
    }
    for obj in objects:
        if not is_hook(obj) or "pre-install" not in obj["metadata"]["annotations"]["helm.sh/hook"]:
            continue
        spec = pod_spec(obj)
        if spec is None:
            continue
        mine = weight[(obj["kind"], obj["metadata"]["name"])]
        needs = {("ServiceAccount", spec.get("serviceAccountName", "default"))}
        for c in containers(obj):
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    needs.add(("Secret", ref["name"]))
            for src in c.get("envFrom") or []:
                needs.add(("ConfigMap", src["configMapRef"]["name"]))
        for need in needs:
            if need == ("ServiceAccount", "default"):
                continue  # every namespace has it
            if need == ("Secret", "postgres") and scenario == "existing-secret-values.yaml":
                continue  # made outside the chart, by definition
            assert need in weight and weight[need] < mine, f"{obj['metadata']['name']} needs {need}"


# --------------------------------------------------------------------------- retention


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_prune_cronjob_runs_both_prunes_like_the_writer(version: str) -> None:
    """One CronJob (daily by default) runs `fraudstream history prune` and `fraudstream scores
    prune` with the writer's image, database URL, password Secret and security context."""
    objects = render(kube_version=version)
    cron = named(objects, "CronJob", "fraudstream-prune")
    validate_object(cron, version)
    assert cron["spec"]["schedule"] == "17 3 * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert "timeZone" not in cron["spec"]
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    assert job["activeDeadlineSeconds"] > 0
    writer = named(objects, "Deployment", "fraudstream-writer")
    (writer_c,) = containers(writer)
    assert pod_spec(cron)["securityContext"] == pod_spec(writer)["securityContext"]
    writer_env = {e["name"]: e for e in writer_c["env"]}
    commands = set()
    for c in containers(cron):
        commands.add(tuple(c["command"] + c["args"]))
        assert c["image"] == writer_c["image"]
        assert c["securityContext"] == writer_c["securityContext"]
        env = {e["name"]: e for e in c["env"]}
        for name in ("DATABASE_URL", "PGPASSWORD"):
            assert env[name] == writer_env[name], name
        config = container_env(objects, cron, c)
        assert config["HISTORY_DEDUPE_DAYS"] == "30"
        assert config["SCORES_RETENTION_DAYS"] == "90"
        assert int(config["PRUNE_BATCH_SIZE"]) > 0
    assert commands == {("fraudstream", "history", "prune"), ("fraudstream", "scores", "prune")}
    # the defaults the chart sets are the code's own
    defaults = RetentionSettings()
    assert (defaults.history_dedupe_days, defaults.scores_retention_days) == (30, 90)


def test_prune_cronjob_follows_its_values() -> None:
    sets = (
        "prune.schedule=0 4 * * 0",
        "prune.timeZone=Europe/Berlin",
        "prune.scoresRetentionDays=30",
        "prune.extraEnv[0].name=DB_STATEMENT_TIMEOUT_MS",
    )
    objects = render(sets=sets, flags=("--set-string", "prune.extraEnv[0].value=60000"))
    cron = named(objects, "CronJob", "fraudstream-prune")
    validate_object(cron, KUBE_VERSIONS[0])
    assert (cron["spec"]["schedule"], cron["spec"]["timeZone"]) == ("0 4 * * 0", "Europe/Berlin")
    for c in containers(cron):
        env = container_env(objects, cron, c)
        assert env["SCORES_RETENTION_DAYS"] == "30" and env["DB_STATEMENT_TIMEOUT_MS"] == "60000"
    secret = render(values=scenario_values("existing-secret-values.yaml"))
    for c in containers(named(secret, "CronJob", "fraudstream-prune")):
        ref = {e["name"]: e for e in c["env"]}["PGPASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "postgres", "key": "password"}
    off = render(sets=("prune.enabled=false",))
    assert not [o for o in off if o["metadata"]["name"] == "fraudstream-prune"]
    with pytest.raises(AssertionError, match="historyDedupeDays"):
        render(sets=("prune.historyDedupeDays=0",))


def test_challenger_in_shadow_is_off_by_default_and_reuses_the_scorer_template() -> None:
    off = render()
    assert not [o for o in off if "challenger" in o["metadata"]["name"]]
    assert "SCORER_SHADOW_URL" not in named(off, "ConfigMap", "fraudstream-bridge")["data"]
    assert not [o for o in off if o["metadata"]["name"] == "fraudstream-writer-shadow"]

    on = render(values=scenario_values("shadow-values.yaml"))
    scorer = named(on, "Deployment", "fraudstream-scorer")
    challenger = named(on, "Deployment", "fraudstream-challenger")
    (c_scorer,), (c_challenger,) = containers(scorer), containers(challenger)
    assert container_env(on, challenger, c_challenger)["MODEL_TAG"] == "fraud-model:challenger"
    assert container_env(on, scorer, c_scorer)["MODEL_TAG"] == "fraud-model:latest"
    # the same template: the same container but for the model, replicas and resources
    for key in ("image", "ports", "livenessProbe", "readinessProbe", "securityContext"):
        assert c_scorer[key] == c_challenger[key], key
    assert challenger["spec"]["replicas"] == 1
    assert not [h for h in by_kind(on, "HorizontalPodAutoscaler") if "challenger" in json.dumps(h)]
    # the bridge reaches it through its Service
    bridge_cm = named(on, "ConfigMap", "fraudstream-bridge")["data"]
    url = urlsplit(bridge_cm["SCORER_SHADOW_URL"])
    svc = named(on, "Service", url.hostname)
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "challenger"
    assert url.port in {p["port"] for p in svc["spec"]["ports"]}
    # a second writer stores the shadow topic in scores_shadow, in its own group
    writer = named(on, "Deployment", "fraudstream-writer-shadow")
    (c_writer,) = containers(writer)
    env = container_env(on, writer, c_writer)
    assert c_writer["args"] == ["writer"]
    assert env["TOPIC_SCORING"] == env["TOPIC_SCORING_SHADOW"] == "scoring.shadow"
    assert env["WRITER_TABLE"] == "scores_shadow"
    assert (
        env["WRITER_GROUP_ID"]
        != named(on, "ConfigMap", "fraudstream-writer")["data"]["WRITER_GROUP_ID"]
    )
    # the topics job creates the shadow topic
    job = named(on, "Job", "fraudstream-topics")
    names = {e["name"] for e in containers(job)[0]["env"]}
    assert "TOPIC_SCORING_SHADOW" in names


def _config_checksums(sets: tuple[str, ...] = ()) -> dict[str, str]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        for d in by_kind(render(sets=sets), "Deployment")
    }


def test_a_component_restarts_for_its_own_settings_only() -> None:
    """Each pod's checksum/config covers its own ConfigMap: enabling the challenger (which
    changes the bridge's settings) restarts the bridge, not the champion scorer, the writer, the
    labels consumer or the UI; a scorer setting restarts the scorer only."""
    base = _config_checksums()
    shadow = _config_checksums(("challenger.enabled=true",))
    changed = {name for name in base if base[name] != shadow[name]}
    assert changed == {"fraudstream-bridge"}, changed
    # the shadow writer runs on the writer's ConfigMap, so it has the writer's checksum
    assert shadow["fraudstream-writer-shadow"] == shadow["fraudstream-writer"]
    tuned = _config_checksums(("scorer.modelTag=fraud-model:other",))
    assert {name for name in base if base[name] != tuned[name]} == {"fraudstream-scorer"}
