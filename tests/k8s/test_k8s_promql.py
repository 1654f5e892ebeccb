"""Every PromQL expression of the chart (alert rules and Grafana dashboards) names only metrics
that the running scorer and consumers really export: a renamed metric must fail here, not leave
a silent alert and an empty panel in production.

The scorer is a real ``bentoml serve`` (``scorer_url`` fixture); the bridge and the writer are
real ``fraudstream bridge`` / ``fraudstream writer`` processes against the test Kafka broker and
PostgreSQL. Each one's ``/metrics`` is read over HTTP.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from k8s_helpers import CHART, render
from prometheus_client.parser import text_string_to_metric_families
from test_k8s_chart import by_kind

from fraudstream.local.paths import free_port
from fraudstream.schema import EXAMPLE_TRANSACTION

pytestmark = pytest.mark.integration

# PromQL words that look like metric names but are not
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "le", "inf", "nan", "atan2",
}  # fmt: skip
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "untyped": ("",),
    "unknown": ("",),
}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (label matchers, ranges, strings, functions dropped)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", text):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{ns="x", code=~"5.."}[5m]))) > 0.25'
        " and on (job) (sum(b_total) or vector(0)) == 0 unless c offset 1h"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}
    assert metric_names('sum(rate(x_total{namespace="$namespace"}[$__rate_interval]))') == {
        "x_total"
    }


def chart_expressions() -> dict[str, str]:
    """Where -> expression, for every alert and dashboard panel query the chart renders."""
    found = {}
    objects = render()
    for rule in by_kind(objects, "PrometheusRule"):
        for group in rule["spec"]["groups"]:
            for r in group["rules"]:
                found[f"alert {r.get('alert') or r.get('record')}"] = r["expr"]
    for path in sorted((CHART / "dashboards").glob("*.json")):
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for t in panel.get("targets", []):
                found[f"{path.name}: {panel['title']} {t['refId']}"] = t["expr"]
        for var in dash.get("templating", {}).get("list", []):
            query = var.get("query")
            if isinstance(query, dict):
                inner = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query["query"])
                if inner:
                    found[f"{path.name}: variable {var['name']}"] = inner.group(1)
    return found


def exported_names(text: str) -> set[str]:
    """Sample names a /metrics page exposes, labelled metrics without samples yet included."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(s.name for s in family.samples)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def scrape(url: str, deadline_s: float = 60) -> str:
    end = time.monotonic() + deadline_s
    while True:
        try:
            resp = httpx.get(url, timeout=5)
            if resp.status_code == 200:
                return resp.text
        except httpx.HTTPError:
            pass
        if time.monotonic() > end:
            raise AssertionError(f"no /metrics at {url} within {deadline_s}s")
        time.sleep(0.3)


@pytest.fixture
def consumer_metrics(
    kafka_bootstrap: str, postgres_url: str, topics: dict[str, str], tmp_path: Path
) -> Iterator[str]:
    """/metrics text of a real bridge, a real writer and a real labels consumer."""
    procs, pages = [], []
    try:
        for component, *action in (["bridge"], ["writer"], ["labels", "consume"]):
            port = free_port()
            env = {
                **os.environ,
                "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "TOPIC_TRANSACTIONS": topics["transactions"],
                "TOPIC_SCORING": topics["scoring"],
                "TOPIC_DLQ": topics["dlq"],
                "TOPIC_LABELS": topics["labels"],
                "LABELS_GROUP_ID": f"labels-{topics['scoring']}",
                "BRIDGE_GROUP_ID": f"bridge-{topics['scoring']}",
                "WRITER_GROUP_ID": f"writer-{topics['scoring']}",
                "SCORER_URL": "http://127.0.0.1:9",  # never called: the topic stays empty
                "SCORER_SHADOW_URL": "http://127.0.0.1:9",  # the shadow metrics too
                "DATABASE_URL": postgres_url,
                "METRICS_PORT": str(port),
                "LOG_FORMAT": "text",
            }
            log = (tmp_path / f"{component}.log").open("w")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "fraudstream.cli", component, *action],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            pages.append(scrape(f"http://127.0.0.1:{port}/metrics"))
        yield "\n".join(pages)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


COMPONENT_PREFIXES = {
    "scorer": ("bentoml_service_", "fraudstream_scorer_"),
    "consumers": (
        "fraudstream_bridge_",
        "fraudstream_writer_",
        "fraudstream_labels_",
        "fraudstream_quality_",
    ),
}


def names_of(component: str) -> dict[str, set[str]]:
    """Where -> metric names of one component's families, over every chart expression."""
    prefixes = COMPONENT_PREFIXES[component]
    found = {}
    for where, expr in chart_expressions().items():
        names = {n for n in metric_names(expr) if n.startswith(prefixes)}
        if names:
            found[where] = names
    return found


def assert_exported(component: str, exported: set[str]) -> None:
    used = names_of(component)
    assert used, f"no expression uses {component} metrics"
    unknown = {where: sorted(n - exported) for where, n in used.items() if n - exported}
    assert not unknown, f"PromQL names {component} metrics it does not export: {unknown}"


# Series the expressions may use that fraudstream does not export, and who provides them (all of
# them come with kube-prometheus-stack). kube_* panels need kube-state-metrics: the dashboards say
# so in their description, so a cluster without it can skip them.
EXTERNAL_METRICS = {
    "up": "Prometheus itself: one per scrape target",
    "container_cpu_usage_seconds_total": "cAdvisor, scraped from the kubelet",
    "container_memory_working_set_bytes": "cAdvisor, scraped from the kubelet",
    "kube_deployment_status_replicas_available": "kube-state-metrics",
    "kube_horizontalpodautoscaler_status_desired_replicas": "kube-state-metrics",
    "kube_horizontalpodautoscaler_spec_max_replicas": "kube-state-metrics",
    # danielqsj/kafka-exporter v1.9.0 (k8s/infra `kafkaExporter`; names and labels as in its
    # kafka_exporter.go): the bridge's lag measured at the broker, also while no bridge runs
    "kafka_consumergroup_lag": "kafka-exporter: {consumergroup, topic, partition}",
    "kafka_consumergroup_current_offset": "kafka-exporter: {consumergroup, topic, partition}",
    "kafka_consumergroup_members": "kafka-exporter: {consumergroup}",
}


@pytest.mark.unit
def test_promql_uses_only_known_metrics() -> None:
    """Every name is either ours (checked against the real processes below) or a known
    external series; anything else is a typo or a dependency nobody wrote down."""
    prefixes = tuple(p for ps in COMPONENT_PREFIXES.values() for p in ps)
    expressions = chart_expressions()
    assert len(expressions) >= 10
    for where, expr in expressions.items():
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        foreign = sorted(
            n for n in names if not n.startswith(prefixes) and n not in EXTERNAL_METRICS
        )
        assert not foreign, f"{where}: {foreign}"


@pytest.mark.unit
def test_kube_state_metrics_panels_say_so() -> None:
    for path in sorted((CHART / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            exprs = " ".join(t["expr"] for t in panel["targets"])
            if re.search(r"\bkube_\w+", exprs):
                assert "kube-state-metrics" in panel["description"], (path.name, panel["title"])


@pytest.mark.unit
def test_external_series_are_selected_by_names_the_chart_uses() -> None:
    """cAdvisor series are picked by container name, kube-state-metrics ones by object name:
    both must be the names the chart gives its objects."""
    objects = render()
    (scorer,) = [
        o for o in by_kind(objects, "Deployment") if o["metadata"]["name"].endswith("-scorer")
    ]
    containers = {c["name"] for c in scorer["spec"]["template"]["spec"]["containers"]}
    hpas = {o["metadata"]["name"] for o in by_kind(objects, "HorizontalPodAutoscaler")}
    for where, expr in chart_expressions().items():
        for name in re.findall(r'container="([^"]+)"', expr):
            assert name in containers, where
        for kind, pattern in re.findall(r'(deployment|horizontalpodautoscaler)=~"([^"]+)"', expr):
            names = {scorer["metadata"]["name"]} if kind == "deployment" else hpas
            assert any(re.fullmatch(pattern, n) for n in names), where


# Labels the Prometheus Operator sets on every target of a ServiceMonitor. A scraped series with
# one of them keeps its own value only with honorLabels; otherwise it becomes exported_<label>.
OPERATOR_TARGET_LABELS = {"namespace", "service", "pod", "container", "endpoint", "job", "instance"}


def assert_labels_survive_the_scrape(component: str, text: str) -> None:
    labels = {
        name
        for family in text_string_to_metric_families(text)
        for s in family.samples
        for name in s.labels
    }
    clashes = labels & OPERATOR_TARGET_LABELS
    monitor = [
        o for o in by_kind(render(), "ServiceMonitor") if o["metadata"]["name"].endswith(component)
    ]
    assert monitor, component
    if clashes:
        for ep in monitor[0]["spec"]["endpoints"]:
            assert ep.get("honorLabels") is True, f"{component} exports {sorted(clashes)}"


def test_consumer_metrics_in_promql_are_exported(consumer_metrics: str) -> None:
    assert_exported("consumers", exported_names(consumer_metrics))
    assert_labels_survive_the_scrape("consumers", consumer_metrics)


def test_scorer_metrics_in_promql_are_exported(
    scorer_url: str, model_data: dict[str, Path]
) -> None:
    from fraudstream.loader import load_csv, to_transactions
    from fraudstream.schema import TIME_FORMAT

    # the example on /score, and labelled frauds on /score_batch so the fraud counters have
    # samples too (labelled metrics only appear once observed)
    resp = httpx.post(f"{scorer_url}/score", json=EXAMPLE_TRANSACTION, timeout=30)
    assert resp.status_code == 200, resp.text
    frame = load_csv(model_data["test"]).frame
    frauds = to_transactions(frame[frame["target"] == 1].head(100))
    body = [
        {
            **t.model_dump(mode="json", exclude={"target"}, exclude_none=True),
            "transaction_time": t.transaction_time.strftime(TIME_FORMAT),
        }
        for t in frauds
    ]
    resp = httpx.post(f"{scorer_url}/score_batch", json={"transactions": body}, timeout=60)
    assert resp.status_code == 200, resp.text
    assert any(r["fraud_flag"] for r in resp.json()), "no labelled fraud was flagged"
    # and one refused request, for the rejection counter
    resp = httpx.post(f"{scorer_url}/score", json={"amount": -1}, timeout=30)
    assert resp.status_code == 400, resp.text
    page = httpx.get(f"{scorer_url}/metrics", timeout=10).text
    assert_exported("scorer", exported_names(page))
    assert_labels_survive_the_scrape("scorer", page)
