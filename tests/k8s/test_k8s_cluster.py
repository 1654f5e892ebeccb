"""k8s/ (kind cluster, in-cluster Kafka and PostgreSQL, monitoring values) and skaffold.yaml fit
together with the chart: the names, ports and labels one side uses are the ones the other
defines."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from crd_schemas import KIND_CLUSTER
from k8s_helpers import (
    CHART,
    INFRA_CHART,
    KUBE_VERSIONS,
    ROOT,
    SKAFFOLD,
    containers,
    pod_spec,
    render,
    run_helm,
    skaffold_config,
    skaffold_plan,
    skaffold_release,
    skaffold_sets,
)
from test_k8s_chart import by_kind, named, validate_object

pytestmark = pytest.mark.unit

K8S = ROOT / "k8s"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def infra(kube_version: str = KUBE_VERSIONS[-1]) -> list[dict]:
    return render(chart=INFRA_CHART, kube_version=kube_version)


def kps_values() -> dict:
    return load(K8S / "kube-prometheus-stack-values.yaml")


def skaffold_with_profile(name: str) -> dict:
    """skaffold.yaml with one profile's patches applied, as the end-to-end run applies them."""
    return skaffold_plan.with_profiles(skaffold_config(), names=[name])


def release_in(config: dict, name: str) -> dict:
    (release,) = [r for r in config["deploy"]["helm"]["releases"] if r["name"] == name]
    return release


# --------------------------------------------------------------------------- k8s/ manifests


def test_kind_cluster_config() -> None:
    config = load(K8S / "kind-cluster.yaml")
    jsonschema.validate(config, KIND_CLUSTER)
    roles = [n["role"] for n in config["nodes"]]
    assert roles.count("control-plane") == 1 and "worker" in roles
    mapped = {
        m["containerPort"]: m["hostPort"]
        for n in config["nodes"]
        for m in n.get("extraPortMappings", [])
    }
    # the NodePorts the kind setup uses are the ones the cluster maps to the host
    kind = skaffold_with_profile("kind")
    scorer = release_in(kind, "fraudstream")["setValues"]
    values = kps_values()
    for node_port in (
        int(scorer["scorer.service.nodePort"]),
        values["grafana"]["service"]["nodePort"],
        values["prometheus"]["service"]["nodePort"],
    ):
        assert node_port in mapped, node_port
        assert 30000 <= node_port <= 32767


def test_infra_chart_lints() -> None:
    assert "0 chart(s) failed" in run_helm("lint", "--strict", str(INFRA_CHART))


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_infra_objects_validate_strictly(version: str) -> None:
    objects = infra(version)
    kinds = {"Service", "StatefulSet", "Secret", "Deployment", "ServiceMonitor"}
    assert {o["kind"] for o in objects} == kinds
    for obj in objects:
        validate_object(obj, version)


def test_every_yaml_under_k8s_is_accounted_for() -> None:
    """Plain YAML files parse and are checked by a test here; templates render via the chart."""
    checked = {
        "kind-cluster.yaml",
        "kube-prometheus-stack-values.yaml",
        "metrics-server-values.yaml",
        "infra/Chart.yaml",
        "infra/values.yaml",
    }
    for path in K8S.rglob("*.y*ml"):
        rel = path.relative_to(K8S).as_posix()
        if rel.startswith("infra/templates/"):
            continue
        assert rel in checked, f"{rel} is not covered by a test"
        assert yaml.safe_load(path.read_text()) is not None, rel


def test_kafka_is_single_node_kraft_from_the_official_image() -> None:
    objects = infra()
    sts = named(objects, "StatefulSet", "kafka")
    spec = pod_spec(sts)
    (c,) = containers(sts)
    assert c["image"].startswith("apache/kafka:")
    # else KAFKA_PORT=tcp://... and friends break the image's generated config
    assert spec["enableServiceLinks"] is False
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"])
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    data = [m for m in c["volumeMounts"] if m["name"] == "data"][0]["mountPath"]
    assert env["KAFKA_LOG_DIRS"].startswith(data + "/")
    # the broker advertises the Service clients bootstrap from, so they reconnect to it
    advertised = urlsplit(env["KAFKA_ADVERTISED_LISTENERS"].replace("PLAINTEXT://", "//"))
    assert advertised.hostname.split(".")[0] == "kafka" and advertised.port == 9092
    assert {p["containerPort"] for p in c["ports"]} == {9092, 9093}
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]


def test_kafka_runs_the_bridges_transactions() -> None:
    """The bridge commits each batch as a Kafka transaction (BRIDGE_TRANSACTIONS, on by
    default): the transaction state log must fit a single broker, the bridge's timeout must be
    one the broker accepts, and a killed bridge's open transaction is aborted soon after it."""
    from fraudstream.settings import BridgeSettings

    sts = named(infra(), "StatefulSet", "kafka")
    (c,) = containers(sts)
    env = {e["name"]: e.get("value") for e in c["env"]}
    brokers = sts["spec"]["replicas"]
    replication = int(env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"])
    assert replication <= brokers
    assert int(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) <= replication
    bridge = BridgeSettings.model_fields
    assert bridge["bridge_transactions"].default is True
    timeout = bridge["bridge_transaction_timeout_ms"].default
    assert timeout <= int(env.get("KAFKA_TRANSACTION_MAX_TIMEOUT_MS", 900_000))
    cleanup = int(env["KAFKA_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS"])
    assert cleanup <= timeout / 5


def _quantity_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)", quantity)
    assert m, quantity
    return int(m.group(1)) * units[m.group(2)]


# Compression codecs kafka-python (every client here) reads without an extra package.
CODECS_WITHOUT_EXTRA_PACKAGES = {"gzip", "uncompressed", "producer"}


def test_kafka_volume_holds_every_topic_at_its_size_limit() -> None:
    """Time-only retention fills a small volume at 400/s within hours and the broker stops:
    every partition is bounded by size, and the bounds fit the volume."""
    sts = named(infra(), "StatefulSet", "kafka")
    (c,) = containers(sts)
    env = {e["name"]: e.get("value") for e in c["env"]}
    storage = _quantity_bytes(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    )
    broker_retention = int(env["KAFKA_LOG_RETENTION_BYTES"])
    segment = int(env["KAFKA_LOG_SEGMENT_BYTES"])
    assert broker_retention > 0 and 0 < segment < broker_retention
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_COMPRESSION_TYPE"] in CODECS_WITHOUT_EXTRA_PACKAGES
    # the chart's topics job creates its topics with their own retention.bytes
    for sets in [(), skaffold_sets(skaffold_release("fraudstream"))]:
        job = named(render(sets=sets), "Job", "fraudstream-topics")
        topics_env = {e["name"]: e.get("value") for e in containers(job)[0]["env"]}
        per_partition = int(topics_env["TOPIC_RETENTION_BYTES"])
        assert per_partition > 0, "a topic without a size limit outgrows the volume"
        names = ("TOPIC_TRANSACTIONS", "TOPIC_SCORING", "TOPIC_DLQ", "TOPIC_LABELS",
                 "TOPIC_SCORING_SHADOW")  # fmt: skip
        topics = {topics_env[k] for k in names}
        partitions = len(topics) * int(topics_env["TOPIC_PARTITIONS"])
        # retention deletes whole closed segments: a partition holds up to one segment more
        worst = partitions * (max(per_partition, broker_retention) + segment)
        assert worst <= 0.8 * storage, (
            f"{worst / 2**30:.1f} GiB on a {storage / 2**30:.0f} GiB volume"
        )


def test_postgres_from_the_official_image_with_pg_isready() -> None:
    objects = infra()
    sts = named(objects, "StatefulSet", "postgres")
    (c,) = containers(sts)
    assert c["image"].startswith("postgres:16")
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["exec"]["command"][0] == "pg_isready"
    assert sts["spec"]["volumeClaimTemplates"]
    env = {e["name"]: e for e in c["env"]}
    ref = env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    secret = named(objects, "Secret", ref["name"])
    assert ref["key"] in secret["data"]
    assert env["PGDATA"]["value"].startswith("/var/lib/postgresql/data/")


def test_kafka_exporter_measures_lag_at_the_broker_and_is_scraped() -> None:
    """The external lag exporter of k8s/infra: a pinned danielqsj/kafka-exporter that reads the
    infra Kafka, runs locked down, and is scraped by a ServiceMonitor through its Service."""
    objects = infra()
    deploy = named(objects, "Deployment", "kafka-exporter")
    spec = pod_spec(deploy)
    (c,) = containers(deploy)
    assert re.fullmatch(r"danielqsj/kafka-exporter:v\d+\.\d+\.\d+", c["image"]), c["image"]
    args = dict(a.removeprefix("--").split("=", 1) for a in c["args"])
    host, port = args["kafka.server"].rsplit(":", 1)
    _service_port(objects, host, int(port))
    # a protocol level both Kafka 4 (it refuses the oldest request versions) and the exporter's
    # client library (sarama 1.45: up to 4.0.0) speak
    assert (3, 0) <= tuple(int(x) for x in args["kafka.version"].split(".")[:2]) <= (4, 0)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(c["resources"]["limits"]) & set(c["resources"]["requests"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz"
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    svc = named(objects, "Service", "kafka-exporter")
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    # no other Service of the chart picks the exporter's pods (nor the exporter's the others')
    for other in by_kind(objects, "Service"):
        if other is not svc:
            assert not other["spec"]["selector"].items() <= pod_labels.items()
    (port_def,) = svc["spec"]["ports"]
    assert port_def["targetPort"] in {p["name"] for p in c["ports"]}
    monitor = named(objects, "ServiceMonitor", "kafka-exporter")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert [ep["port"] for ep in monitor["spec"]["endpoints"]] == [port_def["name"]]
    # kube-prometheus-stack selects it (every ServiceMonitor of every namespace)
    prom = kps_values()["prometheus"]["prometheusSpec"]
    assert prom["serviceMonitorSelectorNilUsesHelmValues"] is False
    assert not prom["serviceMonitorSelector"] and prom["serviceMonitorNamespaceSelector"] == {}


def test_kafka_exporter_is_optional() -> None:
    names = {(o["kind"], o["metadata"]["name"]) for o in infra()}
    assert ("Deployment", "kafka-exporter") in names, "on by default: the kind/dev setup"
    off = render(chart=INFRA_CHART, sets=("kafkaExporter.enabled=false",))
    assert not [o for o in off if "exporter" in o["metadata"]["name"]]
    assert {o["kind"] for o in off} == {"Service", "StatefulSet", "Secret"}
    unmonitored = render(chart=INFRA_CHART, sets=("kafkaExporter.serviceMonitor.enabled=false",))
    assert not by_kind(unmonitored, "ServiceMonitor")
    assert named(unmonitored, "Deployment", "kafka-exporter")


def test_bridge_alerts_select_the_exporter_and_group_skaffold_installs() -> None:
    """The chart's exporter alerts pick the exporter's series by the namespace its targets get
    (the infra release's) and by the bridge's consumer group and topic as the chart sets them."""
    release = skaffold_release("fraudstream")
    objects = render(sets=skaffold_sets(release))
    config = named(objects, "ConfigMap", "fraudstream-bridge")["data"]
    exprs = [
        r["expr"]
        for rule in by_kind(objects, "PrometheusRule")
        for g in rule["spec"]["groups"]
        for r in g["rules"]
        if "kafka_consumergroup_" in r["expr"]
    ]
    assert len(exprs) == 2, "FraudBridgeConsumerLagHigh and FraudBridgeNotConsuming"
    infra_ns = skaffold_release("infra")["namespace"]
    for expr in exprs:
        for selector in re.findall(r"kafka_consumergroup_\w+\{([^}]*)\}", expr):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', selector))
            assert labels["namespace"] == infra_ns
            assert labels["consumergroup"] == config["BRIDGE_GROUP_ID"]
            assert labels.get("topic", config["TOPIC_TRANSACTIONS"]) == config["TOPIC_TRANSACTIONS"]


def test_no_bitnami_images_anywhere() -> None:
    texts = [SKAFFOLD.read_text()]
    texts += [p.read_text() for p in (ROOT / "k8s").rglob("*.y*ml")]
    texts += [p.read_text() for p in (ROOT / "charts").rglob("*.y*ml")]
    assert not any("bitnami" in t.lower() for t in texts)


def _service_port(objects: list[dict], host: str, port: int) -> dict:
    name = host.split(".")[0]
    svc = named(objects, "Service", name)
    assert port in {p["port"] for p in svc["spec"]["ports"]}, f"{name} has no port {port}"
    return svc


@pytest.mark.parametrize("source", ["chart defaults", "skaffold"])
def test_chart_points_at_the_infra_services(source: str) -> None:
    sets = skaffold_sets(skaffold_release("fraudstream")) if source == "skaffold" else ()
    objects = render(sets=sets)
    services = infra()
    bridge = named(objects, "ConfigMap", "fraudstream-bridge")["data"]
    for server in bridge["KAFKA_BOOTSTRAP_SERVERS"].split(","):
        host, port = server.rsplit(":", 1)
        _service_port(services, host, int(port))
    writer = containers(named(objects, "Deployment", "fraudstream-writer"))[0]
    env = {e["name"]: e for e in writer["env"]}
    url = urlsplit(env["DATABASE_URL"]["value"])
    _service_port(services, url.hostname, url.port)
    pg = {
        e["name"]: e.get("value")
        for e in containers(named(services, "StatefulSet", "postgres"))[0]["env"]
    }
    assert url.username == pg["POSTGRES_USER"]
    assert url.path.lstrip("/") == pg["POSTGRES_DB"]
    if source == "skaffold":
        ref = env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref["key"] in named(services, "Secret", ref["name"])["data"]


def test_monitoring_stack_selects_our_monitors_rules_and_dashboards() -> None:
    values = kps_values()
    spec = values["prometheus"]["prometheusSpec"]
    objects = render()
    for kind, prefix in [("ServiceMonitor", "serviceMonitor"), ("PrometheusRule", "rule")]:
        assert by_kind(objects, kind)
        selector = spec.get(f"{prefix}Selector")
        if spec.get(f"{prefix}SelectorNilUsesHelmValues", True):
            raise AssertionError(f"{prefix}Selector would only pick the stack's own objects")
        for obj in by_kind(objects, kind):
            labels = obj["metadata"]["labels"]
            assert (selector or {}).get("matchLabels", {}).items() <= labels.items()
        assert spec.get(f"{prefix}NamespaceSelector") == {}, "all namespaces"
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    assert sidecar["enabled"] and sidecar["searchNamespace"] == "ALL"
    dashboards = [
        c for c in by_kind(objects, "ConfigMap") if sidecar["label"] in c["metadata"]["labels"]
    ]
    assert dashboards
    for cm in dashboards:
        assert cm["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
        assert sidecar["folderAnnotation"] in cm["metadata"]["annotations"]
    # the chart's NetworkPolicies let the monitoring namespace scrape
    np = named(objects, "NetworkPolicy", "fraudstream-scorer")
    ns = skaffold_release("kube-prometheus-stack")["namespace"]
    sels = [
        p["namespaceSelector"]
        for r in np["spec"]["ingress"]
        for p in r.get("from", [])
        if "namespaceSelector" in p
    ]
    assert {"kubernetes.io/metadata.name": ns} in [s["matchLabels"] for s in sels]


def test_kind_node_port_reaches_the_scorer_through_its_network_policy() -> None:
    """The kind profile exposes the scorer as a NodePort: that traffic comes from node
    addresses, and the scorer's NetworkPolicy must let it in on http."""
    release = release_in(skaffold_with_profile("kind"), "fraudstream")
    objects = render(sets=skaffold_sets(release))
    assert named(objects, "Service", "fraudstream-scorer")["spec"]["type"] == "NodePort"
    policy = named(objects, "NetworkPolicy", "fraudstream-scorer")
    assert any(
        "from" not in rule and {p["port"] for p in rule["ports"]} == {"http"}
        for rule in policy["spec"]["ingress"]
    )


def _scale_down_bound_s(hpa: dict) -> float:
    """Longest the HPA takes, once load is gone, to go from maxReplicas to minReplicas: the
    stabilisation window, then as many policy periods as the policies need."""
    spec = hpa["spec"]
    down = spec["behavior"]["scaleDown"]
    extra = spec["maxReplicas"] - spec["minReplicas"]
    per_policy = []
    for policy in down["policies"]:
        replicas, periods = spec["maxReplicas"], 0
        while replicas > spec["minReplicas"]:
            step = policy["value"]
            if policy["type"] == "Percent":
                step = max(1, replicas * policy["value"] // 100)
            replicas, periods = replicas - step, periods + 1
        per_policy.append(periods * policy["periodSeconds"])
    # Min: the policy that allows the smallest change wins, so the slowest one bounds it
    slowest = max(per_policy) if down.get("selectPolicy", "Max") == "Min" else min(per_policy)
    assert extra > 0
    return down["stabilizationWindowSeconds"] + slowest


def test_kind_scale_down_shows_within_a_load_test_and_production_stays_calm() -> None:
    kind = release_in(skaffold_with_profile("kind"), "fraudstream")
    hpa = named(render(sets=skaffold_sets(kind)), "HorizontalPodAutoscaler", "fraudstream-scorer")
    # a ~10 minute run: 5 minutes of load, then the scale-down must show within the rest
    assert _scale_down_bound_s(hpa) <= 180
    production = named(render(), "HorizontalPodAutoscaler", "fraudstream-scorer")
    assert production["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert _scale_down_bound_s(production) >= 300


def test_kind_runs_one_bridge_within_the_partitions() -> None:
    """One bridge handles 3,000 transactions/s (consumers/README.md): the kind setup runs one, and
    never more bridges than partitions of the transactions topic."""
    kind = release_in(skaffold_with_profile("kind"), "fraudstream")
    objects = render(sets=skaffold_sets(kind))
    bridge = named(objects, "Deployment", "fraudstream-bridge")
    assert bridge["spec"]["replicas"] == 1
    assert not by_kind(objects, "ScaledObject")
    partitions = int(named(objects, "ConfigMap", "fraudstream-bridge")["data"]["TOPIC_PARTITIONS"])
    assert bridge["spec"]["replicas"] <= partitions


def test_alertmanager_receives_the_alerts_and_sends_them_nowhere_by_default() -> None:
    """Alerts need an Alertmanager to go anywhere; by default they reach the `null` receiver
    (k8s/README.md shows how to add a webhook), and it stays small on a laptop."""
    am = kps_values()["alertmanager"]
    assert am["enabled"] is True
    config = am["config"]
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] == "null" and "null" in receivers

    def route_receivers(route: dict) -> set[str]:
        found = {route["receiver"]} if "receiver" in route else set()
        for child in route.get("routes", []):
            found |= route_receivers(child)
        return found

    assert route_receivers(config["route"]) <= receivers
    resources = am["alertmanagerSpec"]["resources"]
    assert resources["requests"]["memory"] and resources["limits"]["memory"]
    assert "webhook_configs" in (K8S / "README.md").read_text()


def test_metrics_server_for_kind_skips_kubelet_tls() -> None:
    assert "--kubelet-insecure-tls" in load(K8S / "metrics-server-values.yaml")["args"]
    kind = skaffold_with_profile("kind")
    release = release_in(kind, "metrics-server")
    assert release["valuesFiles"] == ["k8s/metrics-server-values.yaml"]
    assert release["remoteChart"] == "metrics-server" and release["version"]


# --------------------------------------------------------------------------- skaffold.yaml

_STR = {"type": "string"}
_STRS = {"type": "array", "items": _STR}
_MAP = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
_RELEASE = {
    "type": "object",
    "required": ["name"],
    "oneOf": [{"required": ["chartPath"]}, {"required": ["remoteChart"]}],
    "properties": {
        "name": _STR,
        "chartPath": _STR,
        "remoteChart": _STR,
        "repo": _STR,
        "version": _STR,
        "namespace": _STR,
        "createNamespace": {"type": "boolean"},
        "valuesFiles": _STRS,
        "setValues": _MAP,
        "setValueTemplates": _MAP,
        "wait": {"type": "boolean"},
        "upgradeOnChange": {"type": "boolean"},
        "dependsOn": _STRS,
    },
    "additionalProperties": False,
}
_ARTIFACT = {
    "type": "object",
    "required": ["image", "context"],
    "properties": {
        "image": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._/-]*$"},
        "context": _STR,
        "custom": {
            "type": "object",
            "required": ["buildCommand"],
            "properties": {
                "buildCommand": _STR,
                "dependencies": {
                    "type": "object",
                    "properties": {"paths": _STRS, "ignore": _STRS, "command": _STR},
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        },
        "docker": {
            "type": "object",
            "properties": {"dockerfile": _STR, "buildArgs": _MAP, "target": _STR},
            "additionalProperties": False,
        },
    },
    "oneOf": [{"required": ["custom"]}, {"required": ["docker"]}],
    "additionalProperties": False,
}
_PORT_FORWARD = {
    "type": "object",
    "required": ["resourceType", "resourceName", "port"],
    "properties": {
        "resourceType": {"enum": ["service", "Service", "deployment", "pod"]},
        "resourceName": _STR,
        "namespace": _STR,
        "port": {"type": ["string", "integer"]},
        "localPort": {"type": "integer"},
        "address": _STR,
    },
    "additionalProperties": False,
}
_BUILD = {
    "type": "object",
    "properties": {
        "tagPolicy": {"type": "object"},
        "local": {
            "type": "object",
            "properties": {
                "push": {"type": "boolean"},
                "useBuildkit": {"type": "boolean"},
                "concurrency": {"type": "integer"},
                "tryImportMissing": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        "artifacts": {"type": "array", "items": _ARTIFACT},
    },
    "additionalProperties": False,
}
_DEPLOY = {
    "type": "object",
    "properties": {
        "helm": {
            "type": "object",
            "required": ["releases"],
            "properties": {
                "flags": {
                    "type": "object",
                    "properties": {"global": _STRS, "install": _STRS, "upgrade": _STRS},
                    "additionalProperties": False,
                },
                "releases": {"type": "array", "items": _RELEASE},
            },
            "additionalProperties": False,
        }
    },
    "additionalProperties": False,
}
SKAFFOLD_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["apiVersion", "kind", "build", "deploy"],
    "properties": {
        # skaffold 2.16 reads up to v4beta13
        "apiVersion": {"const": "skaffold/v4beta13"},
        "kind": {"const": "Config"},
        "metadata": {"type": "object", "properties": {"name": _STR}, "additionalProperties": False},
        "build": _BUILD,
        "deploy": _DEPLOY,
        "portForward": {"type": "array", "items": _PORT_FORWARD},
        "profiles": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": _STR,
                    "activation": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"kubeContext": _STR, "env": _STR, "command": _STR},
                            "additionalProperties": False,
                        },
                    },
                    "patches": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["op", "path"],
                            "properties": {
                                "op": {"enum": ["add", "replace", "remove"]},
                                "path": {"type": "string", "pattern": "^/"},
                                "value": {},
                            },
                            "additionalProperties": False,
                        },
                    },
                    "build": _BUILD,
                    "deploy": _DEPLOY,
                    "portForward": {"type": "array", "items": _PORT_FORWARD},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}


def test_skaffold_yaml_uses_only_known_v4beta13_fields() -> None:
    jsonschema.validate(skaffold_config(), SKAFFOLD_SCHEMA)
    for profile in ("kind", "minikube"):
        jsonschema.validate(skaffold_with_profile(profile), SKAFFOLD_SCHEMA)


def test_profiles_activate_on_kind_and_minikube_contexts() -> None:
    found = {}
    for p in skaffold_config()["profiles"]:
        for a in p.get("activation", []):
            found[p["name"]] = a["kubeContext"]
    assert re.fullmatch(found["kind"], "kind-fraudstream")
    assert re.fullmatch(found["minikube"], "minikube")


@pytest.mark.parametrize("profile", [None, "kind", "minikube"])
def test_release_order_monitoring_first_app_last(profile: str | None) -> None:
    config = skaffold_with_profile(profile) if profile else skaffold_config()
    releases = config["deploy"]["helm"]["releases"]
    names = [r["name"] for r in releases]
    assert names[0] == "kube-prometheus-stack"
    assert names[-1] == "fraudstream"
    assert names.index("infra") < names.index("fraudstream")
    for r in releases:
        for dep in r.get("dependsOn", []):
            assert names.index(dep) < names.index(r["name"])
        if "chartPath" in r:
            assert (ROOT / r["chartPath"] / "Chart.yaml").exists()
        else:
            assert r["repo"].startswith("https://") and re.fullmatch(r"\d+\.\d+\.\d+", r["version"])
        for f in r.get("valuesFiles", []):
            assert (ROOT / f).exists(), f
    assert release_in(config, "kube-prometheus-stack")["wait"] is True
    assert release_in(config, "infra")["wait"] is True
    # the profile's setValues patch lands on our chart, and renders
    render(sets=skaffold_sets(release_in(config, "fraudstream")))


def test_artifacts_build_from_existing_inputs() -> None:
    for a in skaffold_config()["build"]["artifacts"]:
        context = ROOT / a["context"]
        assert context.is_dir()
        if "custom" in a:
            script = context / a["custom"]["buildCommand"]
            assert script.exists() and script.stat().st_mode & stat.S_IXUSR, script
            subprocess.run(["bash", "-n", str(script)], check=True)
            text = script.read_text()
            assert "bentoml build" in text.replace('"$BENTOML" build', "bentoml build")
            assert "containerize" in text and "PUSH_IMAGE" in text and "$IMAGE" in text
        else:
            dockerfile = context / a["docker"]["dockerfile"]
            assert dockerfile.exists(), f"{dockerfile} missing"


def test_every_chart_image_is_a_skaffold_artifact() -> None:
    artifacts = {a["image"] for a in skaffold_config()["build"]["artifacts"]}
    release = skaffold_release("fraudstream")
    objects = render(sets=skaffold_sets(release))
    images = {c["image"] for o in objects for c in containers(o)}
    assert images
    for image in images:
        repo = image.split("@")[0].rsplit(":", 1)[0]
        assert repo in artifacts, f"{image} is not built by skaffold"
    # every setValueTemplates variable names a real artifact
    normalized = {re.sub(r"[^A-Za-z0-9]", "_", a) for a in artifacts}
    for template in release["setValueTemplates"].values():
        for var in re.findall(r"\{\{\.IMAGE_(?:REPO|TAG|DIGEST)_(\w+)\}\}", template):
            assert var in normalized, var


def test_image_digest_is_optional() -> None:
    """Images loaded into kind have no registry digest: an empty one must not make `tag@`."""
    objects = render(sets=("images.scorer.tag=abc", "images.scorer.digest="))
    (c,) = containers(named(objects, "Deployment", "fraudstream-scorer"))
    assert c["image"] == "fraud-scorer:abc"
    objects = render(sets=("images.scorer.tag=abc", "images.scorer.digest=sha256:" + "0" * 64))
    (c,) = containers(named(objects, "Deployment", "fraudstream-scorer"))
    assert c["image"] == "fraud-scorer:abc@sha256:" + "0" * 64


def _services_by_namespace(config: dict) -> dict[tuple[str, str], dict[str, set]]:
    """(namespace, Service name) -> port names and numbers, for everything skaffold installs."""
    found: dict[tuple[str, str], dict[str, set]] = {}

    def add(ns: str, name: str, ports: list[tuple[str, int]]) -> None:
        found[(ns, name)] = {"names": {n for n, _ in ports}, "numbers": {p for _, p in ports}}

    for release in config["deploy"]["helm"]["releases"]:
        ns = release["namespace"]
        if release["name"] == "fraudstream":
            objects = render(sets=skaffold_sets(release))
        elif release["name"] == "infra":
            objects = infra()
        elif release["name"] == "kube-prometheus-stack":
            v = kps_values()
            prom = v["prometheus"]
            add(
                ns,
                f"{v['fullnameOverride']}-prometheus",
                [(prom["prometheusSpec"]["portName"], prom["service"]["port"])],
            )
            graf = v["grafana"]
            add(
                ns,
                graf["fullnameOverride"],
                [(graf["service"]["portName"], graf["service"]["port"])],
            )
            continue
        else:
            continue
        for svc in by_kind(objects, "Service"):
            add(
                ns,
                svc["metadata"]["name"],
                [(p.get("name"), p["port"]) for p in svc["spec"]["ports"]],
            )
    return found


@pytest.mark.parametrize("profile", [None, "kind", "minikube"])
def test_port_forwards_name_services_and_ports_we_define(profile: str | None) -> None:
    config = skaffold_with_profile(profile) if profile else skaffold_config()
    services = _services_by_namespace(config)
    forwards = config.get("portForward", [])
    targets = {f["resourceName"] for f in forwards}
    assert {"fraudstream-scorer", "fraudstream-ui", "kps-grafana", "kps-prometheus"} <= targets
    local_ports = [f["localPort"] for f in forwards]
    assert len(set(local_ports)) == len(local_ports)
    for f in forwards:
        assert f["resourceType"].lower() == "service"
        key = (f["namespace"], f["resourceName"])
        assert key in services, f"no Service {key}"
        port = f["port"]
        assert port in (
            services[key]["names"] if isinstance(port, str) else services[key]["numbers"]
        ), f


def test_build_script_refuses_to_run_without_an_image_name() -> None:
    env = {k: v for k, v in os.environ.items() if k != "IMAGE"}
    proc = subprocess.run(
        [str(ROOT / "scripts" / "build-scorer-image.sh")], env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0 and "IMAGE" in proc.stderr


def test_chart_dir_and_values_have_the_documented_layout() -> None:
    assert (CHART / "templates" / "NOTES.txt").exists()
    assert list((CHART / "ci").glob("*-values.yaml"))
    chart = load(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
