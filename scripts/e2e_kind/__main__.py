"""`make e2e-kind`: prove the users' journeys on a real kind cluster.

Deploys the project the way `skaffold run -p kind` does (skaffold itself when installed, else the
same builds and helm commands derived from skaffold.yaml), then checks: every pod Ready, `helm
test`, one transaction scored through the scorer Service, Locust in the cluster at 400/s for 5
minutes on the HTTP path and on the Kafka path, the scorer's HPA scaling out and back, every
Prometheus target up, every dashboard panel and alert rule against the live Prometheus (and
Grafana where installed), an alert provoked by scaling the writer to 0 (that run also has a
challenger in shadow), and pods deleted under
load (one scorer, the bridge, the writer, kafka-0) with every transaction stored exactly once.
Prints one report (also in .run/e2e/) and exits 1 if any gate failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
import uuid

import httpx
import yaml

from . import skaffold_plan
from .kube import ROOT, Kube, StepError, have, log, run, service_url
from .monitoring import Grafana, Prometheus, panel_rows, rule_rows, target_rows, wait_firing
from .report import Report

NAMESPACE = "fraudstream"
MONITORING = "monitoring"
RELEASE = "fraudstream"
OUT = ROOT / ".run" / "e2e"
KIND_CONFIG = ROOT / "k8s" / "kind-cluster.yaml"
SCORER_NODE_PORT_URL = "http://127.0.0.1:30000"
PROMETHEUS_NODE_PORT_URL = "http://127.0.0.1:30090"
# alerts that scaling the writer to 0 under load must fire (the first one to fire is reported)
WRITER_DOWN_ALERTS = ["FraudScoresNotWritten", "FraudWriterDown"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="make e2e-kind", description=__doc__.split("\n\n")[0])
    p.add_argument("--keep", action="store_true", help="keep a cluster this run created")
    p.add_argument(
        "--no-skaffold",
        action="store_true",
        help="helm from skaffold.yaml even if skaffold is installed",
    )
    p.add_argument("--skip-deploy", action="store_true", help="test what is deployed already")
    p.add_argument("--rate", type=int, default=400, help="transactions/s of the gated load runs")
    p.add_argument("--duration", default="5m", help="length of each gated load run")
    p.add_argument("--chaos-duration", default="4m", help="length of the chaos run")
    p.add_argument("--alert-timeout", type=int, default=480, help="seconds to wait for the alert")
    p.add_argument(
        "--only",
        default="",
        help="comma list of phases: deploy,smoke,http,kafka,alert,chaos,monitoring",
    )
    return p.parse_args(argv)


# --------------------------------------------------------------------------- cluster & deploy


def cluster_name() -> str:
    return yaml.safe_load(KIND_CONFIG.read_text()).get("name", "kind")


def ensure_cluster(report: Report) -> tuple[Kube, bool]:
    """Use the kind cluster of k8s/kind-cluster.yaml if it exists, else create it."""
    name = cluster_name()
    existing = run(["kind", "get", "clusters"]).stdout.split()
    created = name not in existing
    if created:
        run(
            ["kind", "create", "cluster", "--config", str(KIND_CONFIG), "--wait", "5m"],
            capture=False,
            echo=True,
        )
    kube = Kube(f"kind-{name}", NAMESPACE)
    nodes = kube.json("get", "nodes", namespace="default")["items"]
    versions = {n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes}
    report.add(
        "cluster",
        [
            f"kind cluster {name!r} ({'created' if created else 'existing'})",
            f"context {kube.context}",
            f"{len(nodes)} nodes, kubelet {', '.join(sorted(versions))}",
        ],
    )
    return kube, created


def node_has_image(node: str, ref: str) -> bool:
    if "/" not in ref.split(":")[0]:
        ref = "docker.io/library/" + ref
    out = run(["docker", "exec", node, "ctr", "-n", "k8s.io", "images", "ls", "-q"], check=False)
    return ref in out.stdout.split()


def build_and_load(kube: Kube, config: dict, report: Report) -> dict[str, str]:
    """Build every artifact as skaffold does, then load it into the kind nodes."""
    images = {}
    nodes = run(["kind", "get", "nodes", "--name", cluster_name()]).stdout.split()
    for artifact in skaffold_plan.artifacts(config):
        ref = f"{artifact.image}:{artifact.tag()}"
        images[artifact.image] = ref
        with report.step(f"build {artifact.image}"):
            if run(["docker", "image", "inspect", ref], check=False).returncode != 0:
                argv, env = artifact.build_argv(ref)
                run(argv, env=env, cwd=artifact.context, capture=False, echo=True)
            size = run(["docker", "image", "inspect", "-f", "{{.Size}}", ref]).stdout.strip()
            report.add("images", [f"{ref}: {int(size) / 1e6:.0f} MB"])
        with report.step(f"kind load {artifact.image}"):
            if not all(node_has_image(n, ref) for n in nodes):
                run(["kind", "load", "docker-image", ref, "--name", cluster_name()], echo=True)
    return images


def deploy_with_helm(kube: Kube, report: Report) -> None:
    """The releases of skaffold.yaml (kind profile applied), in order, as skaffold installs them."""
    config = skaffold_plan.with_profiles(skaffold_plan.load_config(), kube_context=kube.context)
    images = build_and_load(kube, config, report)
    for release in skaffold_plan.releases(config, images):
        with report.step(f"helm {release.name}"):
            installed = kube.release_exists(release.name, release.namespace)
            if installed and not release.upgrade_on_change:
                log(f"   {release.name} already installed (upgradeOnChange: false): kept")
                continue
            run(release.argv(kube.context, installed), capture=False, echo=True)


def deploy_with_skaffold(kube: Kube, report: Report) -> None:
    with report.step("skaffold run -p kind"):
        run(
            ["skaffold", "run", "-p", "kind", "--kube-context", kube.context, "--status-check"],
            capture=False,
            echo=True,
        )
    # skaffold labels every pod template with its run id (skaffold.dev/run-id); the load tests'
    # `helm upgrade` renders the templates without it, which rolls every Deployment. Do that
    # once now, so no load test starts on pods that are being replaced.
    with report.step("helm upgrade (without skaffold's labels)"):
        upgrade_release(kube, {}, "--wait")


def upgrade_release(kube: Kube, sets: dict[str, str], *flags: str) -> None:
    """`helm upgrade` of the fraudstream release with its values and ``sets`` on top (values
    named *runTime* as strings: "5m" is not a number)."""
    argv = ["upgrade", RELEASE, str(ROOT / "charts" / "fraudstream"), "--reset-then-reuse-values"]
    for k, v in sets.items():
        argv += ["--set-string" if k.endswith("runTime") else "--set", f"{k}={v}"]
    kube.helm(*argv, *flags, "--timeout", "10m")


def wait_pods(kube: Kube, report: Report) -> None:
    lines = []
    for ns in ("kube-system", MONITORING, NAMESPACE):
        pods = kube.wait_ready(ns)
        for p in pods:
            restarts = sum(c.get("restartCount", 0) for c in p["status"]["containerStatuses"])
            lines.append(f"{ns:<12} {p['metadata']['name']:<56} Ready  restarts={restarts}")
    report.add("pods Ready", lines)


# --------------------------------------------------------------------------- smoke


def helm_test(kube: Kube, report: Report) -> None:
    out = kube.helm("test", RELEASE, "--logs", "--timeout", "5m")
    phases = [
        line.strip()
        for line in out.splitlines()
        if line.strip().startswith(("TEST SUITE", "Phase"))
    ]
    report.add("helm test", phases or out.strip().splitlines()[-5:])
    report.gate("helm test", "Succeeded" in out, "; ".join(phases[-2:]))


def score_one(kube: Kube, report: Report) -> None:
    """Journey 2: the Bento HTTP endpoint through the scorer Service, good and bad input."""
    from fraudstream.schema import EXAMPLE_TRANSACTION

    body = {**EXAMPLE_TRANSACTION, "transaction_id": f"e2e-one-{uuid.uuid4().hex[:8]}"}
    with service_url(kube, "fraudstream-scorer", "http", NAMESPACE, SCORER_NODE_PORT_URL) as url:
        ok = httpx.post(f"{url}/score", json=body, timeout=30)
        bad = httpx.post(f"{url}/score", json={**body, "amount": -5}, timeout=30)
    result = ok.json() if ok.status_code == 200 else {}
    report.add(
        "score one transaction",
        [
            f"POST {url}/score -> {ok.status_code} {json.dumps(result)[:160]}",
            f"POST {url}/score amount=-5 -> {bad.status_code} {bad.text[:160]}",
        ],
    )
    good = ok.status_code == 200 and 0 <= result.get("score", -1) <= 1
    named = bad.status_code == 400 and bad.json().get("field") == "amount"
    report.gate(
        "score one transaction",
        good and named,
        f"score {result.get('score')} (model {result.get('model_version')}); "
        f"bad amount -> {bad.status_code} field={bad.json().get('field') if bad.content else None}",
    )


# ---------------------------------------------------------------- load: Locust in the cluster

LOADTEST_SELECTOR = "app.kubernetes.io/component=loadtest"
# runs whose gate is exactly-once storage, not latency: no latency limit, a long drain
UNGATED = {"loadtest.e2eP99Ms": "100000000", "loadtest.drainSeconds": "300"}
# the alert run (50/s) also has a challenger in shadow (the champion's model), so the model
# dashboard's shadow panels get data; the other runs are measured without it
SHADOW_ON = {"challenger.enabled": "true"}
SHADOW_OFF = {"challenger.enabled": "false"}
# gated runs set the chart's own limits again: `helm upgrade --reset-then-reuse-values` would
# otherwise keep an earlier ungated run's (e.g. `--only kafka` after an alert run in a kept
# cluster). That flag (helm 3.14+), not --reuse-values: it takes the chart's defaults for keys
# the release was installed without (a release from an older chart has no `retrain` key, and
# --reuse-values then fails on a nil pointer)
_CHART_LOADTEST = yaml.safe_load((ROOT / "charts" / "fraudstream" / "values.yaml").read_text())
GATED = {
    f"loadtest.{key}": str(_CHART_LOADTEST["loadtest"][key]) for key in ("e2eP99Ms", "drainSeconds")
} | SHADOW_OFF


class HpaWatch(threading.Thread):
    """Samples the scorer HPA (replicas, CPU) and its Deployment's Ready pods every few seconds
    until stopped. Ready pods are what counts: a replica the HPA asked for can stay Pending (no
    room on the node) and never take a request."""

    def __init__(self, kube: Kube, name: str = "fraudstream-scorer") -> None:
        super().__init__(daemon=True)
        self.kube, self.name = kube, name
        self.samples: list[tuple[float, int, int, int, str]] = []  # t, replicas, desired, ready
        self.started = time.monotonic()
        self.stop = threading.Event()

    def sample(self) -> tuple[int, int, int, str]:
        status = self.kube.json("get", "hpa", self.name).get("status", {})
        ready = self.kube.json("get", "deployment", self.name).get("status", {})
        cpu = "?"
        for m in status.get("currentMetrics") or []:
            if m.get("type") == "Resource":
                cpu = f"{m['resource']['current'].get('averageUtilization', '?')}%"
        return (
            status.get("currentReplicas", 0),
            status.get("desiredReplicas", 0),
            ready.get("readyReplicas", 0),
            cpu,
        )

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(StepError):
                self.samples.append((time.monotonic() - self.started, *self.sample()))
            self.stop.wait(5)

    def timeline(self) -> list[str]:
        """Changes of replicas (and one line a minute), as t+seconds."""
        lines, last, last_t = [], None, -60.0
        for t, current, desired, ready, cpu in self.samples:
            if (current, desired, ready) != last or t - last_t >= 60:
                lines.append(
                    f"t+{t:5.0f}s  replicas {current}  desired {desired}  ready {ready}  cpu {cpu}"
                )
                last, last_t = (current, desired, ready), t
        return lines

    def peak_ready(self) -> int:
        return max((s[3] for s in self.samples), default=0)

    def ready_now(self) -> int | None:
        return self.samples[-1][3] if self.samples else None


def run_locust(
    kube: Kube, label: str, user_class: str, rate: int, run_time: str, values: dict[str, str]
) -> dict:
    """One in-cluster Locust run through the chart's loadtest component; its result JSON."""
    users = max(1, rate // 10)
    kube.kubectl("delete", "job", "-l", LOADTEST_SELECTOR, "--ignore-not-found", "--wait=true")
    sets = {
        "loadtest.enabled": "true",
        "loadtest.userClasses": user_class,
        "loadtest.users": str(users),
        "loadtest.spawnRate": str(users),
        "loadtest.runTime": run_time,
    }
    log(f"   locust {label}: {user_class}, {users} users, {rate}/s, {run_time}")
    upgrade_release(kube, sets | values)
    job = master_job(kube)
    deadline = time.monotonic() + to_seconds(run_time) + 900
    while True:
        status = kube.json("get", "job", job).get("status", {})
        if status.get("succeeded") or status.get("failed"):
            break
        if time.monotonic() > deadline:
            raise StepError(f"locust job {job} did not finish")
        time.sleep(5)
    logs = kube.kubectl("logs", f"job/{job}", "--tail", "400")
    (OUT / f"locust-{label}.log").write_text(logs)
    for line in reversed(logs.splitlines()):
        if line.startswith("LOADTEST_RESULT "):
            result = json.loads(line.split(" ", 1)[1])
            result["exit_ok"] = bool(status.get("succeeded"))
            return result
    raise StepError(f"locust job {job}: no LOADTEST_RESULT line (see {OUT}/locust-{label}.log)")


def master_job(kube: Kube) -> str:
    jobs = kube.json("get", "jobs", "-l", LOADTEST_SELECTOR)["items"]
    names = [j["metadata"]["name"] for j in jobs if "master" in j["metadata"]["name"]]
    if not names:
        raise StepError(f"no locust master job ({LOADTEST_SELECTOR})")
    return names[0]


def loadtest_off(kube: Kube) -> None:
    kube.kubectl("delete", "job", "-l", LOADTEST_SELECTOR, "--ignore-not-found")
    upgrade_release(kube, {"loadtest.enabled": "false"})


def to_seconds(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def gate_figures(result: dict) -> list[str]:
    """One line per kind of figure (http, kafka produce, e2e), then the problems."""
    lines = [
        f"offered {result.get('rate', 0):.1f}/s over {result.get('seconds', 0):.0f} s "
        f"(target {result.get('target_rate', 0):g}/s), run {result.get('run_id', '?')}"
    ]
    for kind, f in result.get("types", {}).items():
        lines.append(
            f"{kind:<6} {f['requests']:>8} requests  {f['failures']} failures  "
            f"{f['rate']:7.1f}/s  p50 {f['p50_ms']:.0f}  p95 {f['p95_ms']:.0f}  "
            f"p99 {f['p99_ms']:.0f}  max {f['max_ms']:.0f} ms"
        )
    lines += [f"problem: {p}" for p in result.get("problems", [])]
    return lines


def gated_locust(
    kube: Kube, report: Report, args: argparse.Namespace, label: str, user_class: str, title: str
) -> dict:
    """A run at the target rate whose gate is Locust's own verdict (rate, failures, p99s)."""
    result = run_locust(kube, label, user_class, args.rate, args.duration, GATED)
    report.add(f"locust {title} (in cluster)", gate_figures(result))
    report.gate(
        f"locust {title} {args.rate}/s gate",
        result["exit_ok"] and not result.get("problems"),
        summary(result),
    )
    return result


def http_load(kube: Kube, report: Report, args: argparse.Namespace) -> None:
    hpa = HpaWatch(kube)
    hpa.start()
    try:
        gated_locust(kube, report, args, "http", "ScorerUser", "HTTP /score")
        # after the load: wait for the HPA to come back to its minimum
        hpa_min = kube.json("get", "hpa", "fraudstream-scorer")["spec"].get("minReplicas", 1)
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            if hpa.samples and hpa.samples[-1][1] <= hpa_min and hpa.ready_now() == hpa_min:
                break
            time.sleep(10)
    finally:
        hpa.stop.set()
        hpa.join()
    report.add("scorer HPA replica timeline", hpa.timeline())
    back = hpa.ready_now() == hpa_min and hpa.samples[-1][1] <= hpa_min
    report.gate(
        "HPA scales out and back",
        hpa.peak_ready() >= 2 and back,
        f"{hpa_min} -> peak {hpa.peak_ready()} Ready -> {hpa.ready_now()} Ready scorer pods",
    )


def summary(result: dict) -> str:
    parts = [
        f"{result.get('rate', 0):.0f}/s for {result.get('seconds', 0):.0f}s",
        f"{result.get('failures', 0)} failures",
    ]
    for kind, f in result.get("types", {}).items():
        parts.append(f"{kind} p99 {f['p99_ms']:.0f} ms")
    parts += result.get("problems", [])
    return ", ".join(parts)


def stored_rows(kube: Kube, prefix: str) -> tuple[int, int]:
    (row,) = kube.exec_sql(
        "SELECT count(*), count(DISTINCT transaction_id) FROM scores "
        f"WHERE transaction_id LIKE '{prefix}%'"
    )
    return int(row[0]), int(row[1])


def kafka_load(kube: Kube, report: Report, args: argparse.Namespace) -> None:
    result = gated_locust(kube, report, args, "kafka", "KafkaUser", "Kafka -> scores")
    exactly_once(kube, report, "Kafka run", result)


def exactly_once(kube: Kube, report: Report, label: str, result: dict) -> None:
    """Every transaction Kafka acknowledged has exactly one row in scores (counted by id)."""
    kafka = result.get("types", {}).get("kafka", {})
    e2e = result.get("types", {}).get("e2e", {})
    failed = kafka.get("failures", 0)
    acked = kafka.get("requests", 0) - failed
    prefix = f"lt-{result['run_id']}-"  # loadtest/locustfile.py id_prefix
    deadline = time.monotonic() + 300
    while True:
        rows, distinct = stored_rows(kube, prefix)
        if rows >= acked or time.monotonic() > deadline:
            break
        time.sleep(10)
    line = (
        f"{label}: {acked} acknowledged by Kafka (+{failed} sends failed), {rows} rows in "
        f"scores, {distinct} distinct ids; Locust saw {e2e.get('failures', 0)} acknowledged "
        "transactions not stored within its drain time"
    )
    report.add("exactly once", [line])
    ok = acked > 0 and rows == distinct and acked <= rows <= acked + failed
    report.gate(f"exactly once ({label})", ok, line)


# --------------------------------------------------------------------------- alert, chaos


def scorer_pod(kube: Kube) -> str:
    pods = kube.pods(selector="app.kubernetes.io/component=scorer")
    return sorted(p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running")[0]


def provoke_alert(kube: Kube, prom: Prometheus, report: Report, args: argparse.Namespace) -> None:
    """Writer scaled to 0 while transactions flow: the alert fires; nothing is lost."""
    fired: list = []

    def scale_down_and_watch() -> None:
        time.sleep(30)
        kube.kubectl("scale", "deploy/fraudstream-writer", "--replicas=0")
        log("   writer scaled to 0")
        fired.append(wait_firing(prom, WRITER_DOWN_ALERTS, args.alert_timeout))
        if fired[-1]:
            time.sleep(30)  # Prometheus sends firing alerts on its next evaluation
            alertmanager_received(kube, report, fired[-1][0])
        kube.kubectl("scale", "deploy/fraudstream-writer", "--replicas=1")
        log(f"   alert: {fired[-1]}; writer scaled back to 1")

    watcher = threading.Thread(target=scale_down_and_watch, daemon=True)
    watcher.start()
    run_time = f"{args.alert_timeout + 90}s"
    try:
        result = run_locust(kube, "alert", "KafkaUser", 50, run_time, UNGATED | SHADOW_ON)
    finally:
        watcher.join()
        kube.kubectl("scale", "deploy/fraudstream-writer", "--replicas=1")
    hit = fired[-1] if fired else None
    report.gate(
        "alert fires (writer scaled to 0)",
        hit is not None,
        f"{hit[0]} firing after {hit[1]:.0f}s" if hit else f"none of {WRITER_DOWN_ALERTS}",
    )
    exactly_once(kube, report, "writer down", result)


def alertmanager_received(kube: Kube, report: Report, alert: str) -> None:
    """The fired alert reached Alertmanager (where kube-prometheus-stack installed one)."""
    services = kube.json("get", "svc", namespace=MONITORING)["items"]
    names = [s["metadata"]["name"] for s in services]
    name = next((n for n in names if n.endswith("alertmanager")), "")
    if not name:
        report.gate("Alertmanager received the alert", None, "no Alertmanager in this cluster")
        return
    with service_url(kube, name, "http-web", MONITORING) as url:
        alerts = httpx.get(f"{url}/api/v2/alerts", timeout=30).json()
    got = sorted({a["labels"].get("alertname", "") for a in alerts})
    report.gate("Alertmanager received the alert", bool(alert) and alert in got,
                f"{name} holds {got}")  # fmt: skip


def chaos(kube: Kube, report: Report, args: argparse.Namespace) -> None:
    """Delete one scorer pod, the bridge, the writer and kafka-0 under load; count rows by id."""
    events: list[str] = []
    started = time.monotonic()

    def delete(at_s: float, what: str, resolve) -> None:
        time.sleep(max(0.0, at_s - (time.monotonic() - started)))
        name = resolve()
        kube.kubectl("delete", "pod", name, "--wait=false")
        events.append(f"t+{time.monotonic() - started:4.0f}s deleted {what} {name}")
        log(f"   chaos: deleted {name}")

    def first(selector: str):
        return lambda: sorted(p["metadata"]["name"] for p in kube.pods(selector=selector))[0]

    plan = [
        (60, "scorer pod", lambda: scorer_pod(kube)),
        (90, "bridge pod", first("app.kubernetes.io/component=bridge")),
        (120, "writer pod", first("app.kubernetes.io/component=writer")),
        (150, "kafka-0", lambda: "kafka-0"),
    ]
    threads = [threading.Thread(target=delete, args=p, daemon=True) for p in plan]
    for t in threads:
        t.start()
    result = run_locust(
        kube,
        "chaos",
        "KafkaUser",
        args.rate,
        args.chaos_duration,
        UNGATED | SHADOW_OFF,
    )
    for t in threads:
        t.join()
    report.add("chaos under load", events + gate_figures(result))
    exactly_once(kube, report, "chaos", result)


# --------------------------------------------------------------------------- monitoring


def monitoring(kube: Kube, prom: Prometheus, report: Report, window_s: int) -> None:
    rows, ok = target_rows(prom)
    report.add("Prometheus targets", rows)
    report.gate(
        "every target up", ok, f"{sum('up' in r.split()[-1:] for r in rows)}/{len(rows)} up"
    )
    rows, ok = panel_rows(prom, NAMESPACE, window_s)
    report.add("dashboard panels (live Prometheus)", rows)
    counted = [r for r in rows if not r.startswith("SKIP")]
    report.gate(
        "every panel returns series",
        ok,
        f"{sum(r.startswith('ok') for r in rows)}/{len(counted)} panels with series, "
        f"{len(rows) - len(counted)} skipped",
    )
    rows, ok = rule_rows(prom)
    report.add("alert rules", rows)
    report.gate("alert rules evaluate", ok, rows[-1])
    services = kube.json("get", "svc", namespace=MONITORING)["items"]
    grafana = [s["metadata"]["name"] for s in services if s["metadata"]["name"].endswith("grafana")]
    if not grafana:
        report.gate(
            "Grafana API: dashboards load, panels query",
            None,
            "no Grafana Service in the monitoring namespace (not installed)",
        )
    else:
        name = grafana[0]
        with service_url(kube, name, "http-web", MONITORING) as url:
            g = Grafana(url, "admin", Grafana.password(kube, MONITORING, name))
            rows, ok = g.check(NAMESPACE)
        report.add("Grafana", rows)
        report.gate("Grafana API: dashboards load, panels query", ok, rows[0])
    report.add(
        "NetworkPolicies",
        [
            "rendered and checked offline by tests/k8s (policy tests); enforced only where the "
            "cluster's network plugin implements NetworkPolicy (kindnet 0.24+, Calico, Cilium)",
        ],
    )


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    phases = set(filter(None, args.only.split(","))) or {
        "deploy",
        "smoke",
        "http",
        "kafka",
        "alert",
        "chaos",
        "monitoring",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    report = Report()
    missing = [t for t in ("docker", "kind", "helm", "kubectl") if not have(t)]
    if missing:
        print(f"e2e-kind needs {', '.join(missing)} on PATH", file=sys.stderr)
        return 2
    started = time.monotonic()
    created = False
    kube = None
    try:
        with report.step("cluster"):
            kube, created = ensure_cluster(report)
        if "deploy" in phases and not args.skip_deploy:
            if have("skaffold") and not args.no_skaffold:
                deploy_with_skaffold(kube, report)
            else:
                deploy_with_helm(kube, report)
        with report.step("pods Ready"):
            wait_pods(kube, report)
        if "smoke" in phases:
            with report.step("helm test", fatal=False):
                helm_test(kube, report)
            with report.step("score one transaction", fatal=False):
                score_one(kube, report)
        with service_url(
            kube, "kps-prometheus", "http-web", MONITORING, PROMETHEUS_NODE_PORT_URL
        ) as url:
            prom = Prometheus(url)
            if "http" in phases:
                with report.step("load: HTTP /score + HPA", fatal=False):
                    http_load(kube, report, args)
            if "kafka" in phases:
                with report.step("load: Kafka path", fatal=False):
                    kafka_load(kube, report, args)
            if "alert" in phases:
                with report.step("alert: writer scaled to 0", fatal=False):
                    provoke_alert(kube, prom, report, args)
            if "chaos" in phases:
                with report.step("chaos under load", fatal=False):
                    chaos(kube, report, args)
            if "monitoring" in phases:
                window = int(time.monotonic() - started) + 60
                with report.step("monitoring checks", fatal=False):
                    monitoring(kube, prom, report, window)
    except Exception as exc:  # noqa: BLE001 - the report says what failed
        log(f"stopped: {exc}")
    finally:
        if kube is not None and phases & {"http", "kafka", "alert", "chaos"}:
            try:
                loadtest_off(kube)
            except StepError as exc:
                log(f"could not switch the load test off: {exc}")
        report.save(OUT)
        print(report.text(), flush=True)
        if created and not args.keep:
            run(["kind", "delete", "cluster", "--name", cluster_name()], check=False)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
