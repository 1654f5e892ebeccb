"""Live monitoring checks: Prometheus targets, every dashboard panel query and alert rule run
against the live Prometheus (and Grafana, where it is installed), alerts that fire."""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from .kube import ROOT

DASHBOARDS = ROOT / "charts" / "fraudstream" / "dashboards"
# what Grafana would put for its built-in interval variables on a 15 s scrape interval
BUILTINS = {"__rate_interval": "1m", "__interval": "30s", "__range": "15m", "__range_s": "900"}
KUBE_STATE = re.compile(r"\bkube_\w+")


@dataclass
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str  # as written in the dashboard
    query: str  # with template variables filled in


def _variables(dashboard: dict) -> dict[str, str | None]:
    """Template variable -> value (None: "all", i.e. match anything)."""
    found: dict[str, str | None] = {}
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "datasource":
            continue
        current = (var.get("current") or {}).get("value")
        if isinstance(current, list):
            current = current[0] if len(current) == 1 else None
        if current in (None, "", "$__all") or var.get("type") == "query":
            found[var["name"]] = None
        else:
            found[var["name"]] = str(current)
    return found


def fill(expr: str, variables: dict[str, str | None], namespace: str) -> str:
    values = {**variables, "namespace": namespace}
    for name, value in values.items():
        ref = rf"\$(?:\{{{name}(?::\w+)?\}}|{name}\b)"
        if value is None:
            expr = re.sub(rf'(\w+)\s*=~?\s*"{ref}"', r'\1=~".*"', expr)
            expr = re.sub(ref, ".*", expr)
        else:
            expr = re.sub(ref, value, expr)
    for name, value in BUILTINS.items():
        expr = re.sub(rf"\$(?:\{{{name}\}}|{name}\b)", value, expr)
    return expr


def _panels(items: list[dict]) -> list[dict]:
    out = []
    for panel in items:
        out.append(panel)
        out += _panels(panel.get("panels", []))  # rows keep their panels inside
    return out


def panel_queries(namespace: str, directory: Path = DASHBOARDS) -> list[PanelQuery]:
    found = []
    for path in sorted(directory.glob("*.json")):
        dashboard = json.loads(path.read_text())
        variables = _variables(dashboard)
        for panel in _panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append(
                        PanelQuery(
                            dashboard=path.stem,
                            panel=panel.get("title", "?"),
                            ref=target.get("refId", "A"),
                            expr=target["expr"],
                            query=fill(target["expr"], variables, namespace),
                        )
                    )
    return found


class Prometheus:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)

    def api(self, path: str, **params) -> dict:
        resp = self.http.get(f"/api/v1/{path}", params=params)
        body = resp.json()
        if body.get("status") != "success":
            raise RuntimeError(f"{path}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def series_over(self, expr: str, seconds: int) -> int:
        """Distinct series an expression returned at any point of the last ``seconds``."""
        end = time.time()
        step = max(15, seconds // 200)
        data = self.api("query_range", query=expr, start=end - seconds, end=end, step=step)
        return len(data["result"])

    def targets(self) -> list[dict]:
        return self.api("targets", state="active")["activeTargets"]

    def rules(self) -> list[dict]:
        return self.api("rules")["groups"]

    def firing(self) -> dict[str, dict]:
        return {
            a["labels"]["alertname"]: a
            for a in self.api("alerts")["alerts"]
            if a.get("state") == "firing"
        }

    def has_kube_state_metrics(self) -> bool:
        return bool(self.query("count(kube_pod_info)"))


def target_rows(prom: Prometheus) -> tuple[list[str], bool]:
    rows, ok = [], True
    for t in sorted(prom.targets(), key=lambda t: (t["labels"].get("job", ""), t["scrapeUrl"])):
        labels = t["labels"]
        where = labels.get("pod") or labels.get("instance", "")
        line = f"{labels.get('job', '?'):<40} {where:<52} {t['health']}"
        if t["health"] != "up":
            ok = False
            line += f"  ({t.get('lastError', '')[:80]})"
        rows.append(line)
    return rows, ok


def panel_rows(prom: Prometheus, namespace: str, window_s: int) -> tuple[list[str], bool]:
    """Every dashboard panel query against the live Prometheus: series now, else over the window.
    Panels on kube-state-metrics series are skipped (not passed) where it is not installed."""
    kube_state = prom.has_kube_state_metrics()
    rows, ok = [], True
    for q in panel_queries(namespace):
        label = f"{q.dashboard} / {q.panel} [{q.ref}]"
        if not kube_state and KUBE_STATE.search(q.query):
            rows.append(f"SKIP {label}: needs kube-state-metrics, not installed in this cluster")
            continue
        try:
            now = len(prom.query(q.query))
            seen = now or prom.series_over(q.query, window_s)
        except (RuntimeError, httpx.HTTPError) as exc:
            rows.append(f"FAIL {label}: {exc}")
            ok = False
            continue
        if seen:
            when = "now" if now else f"within the last {window_s // 60} min"
            rows.append(f"ok   {label}: {seen} series ({when})")
        else:
            rows.append(f"FAIL {label}: no series  <- {q.query}")
            ok = False
    return rows, ok


def rule_rows(prom: Prometheus, own: str = "fraudstream") -> tuple[list[str], bool]:
    """Every alert rule's health as Prometheus evaluated it, fraudstream's listed one by one."""
    rows, ok = [], True
    total = healthy = 0
    for group in prom.rules():
        for rule in group["rules"]:
            total += 1
            health = rule.get("health")
            healthy += health == "ok"
            name = rule.get("name")
            mine = own in group.get("file", "") or own in group["name"]
            if health != "ok":
                ok = False
                rows.append(f"FAIL {group['name']}/{name}: {health} {rule.get('lastError', '')}")
            elif mine:
                rows.append(f"ok   {group['name']}/{name}: {rule.get('state', rule['type'])}")
    rows.append(f"{healthy}/{total} rules of {len(prom.rules())} groups evaluate without error")
    return rows, ok


def wait_firing(prom: Prometheus, names: list[str], timeout_s: float) -> tuple[str, float] | None:
    """First of ``names`` to fire, with the seconds it took; None on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        firing = prom.firing()
        for name in names:
            if name in firing:
                return name, time.monotonic() - started
        time.sleep(10)
    return None


class Grafana:
    """Grafana's own API: load the dashboards and run each panel query through /api/ds/query."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.http = httpx.Client(base_url=url, auth=(user, password), timeout=30)

    @staticmethod
    def password(kube, namespace: str, secret: str) -> str:
        data = kube.json("get", "secret", secret, namespace=namespace)["data"]
        return base64.b64decode(data["admin-password"]).decode()

    def prometheus_uid(self) -> str:
        for ds in self.http.get("/api/datasources").raise_for_status().json():
            if ds["type"] == "prometheus":
                return ds["uid"]
        raise RuntimeError("Grafana has no Prometheus data source")

    def check(self, namespace: str) -> tuple[list[str], bool]:
        rows, ok = [], True
        health = self.http.get("/api/health").json()
        rows.append(f"Grafana {health.get('version')} ({health.get('database')})")
        uid = self.prometheus_uid()
        for path in sorted(DASHBOARDS.glob("*.json")):
            dashboard = json.loads(path.read_text())
            dashboard.pop("id", None)
            resp = self.http.post(
                "/api/dashboards/db", json={"dashboard": dashboard, "overwrite": True}
            )
            if resp.status_code != 200:
                ok = False
                rows.append(f"FAIL load {path.name}: {resp.status_code} {resp.text[:200]}")
            else:
                rows.append(f"ok   load {path.name}: {resp.json().get('status')}")
        for q in panel_queries(namespace):
            body = {
                "from": "now-30m",
                "to": "now",
                "queries": [
                    {
                        "refId": q.ref,
                        "datasource": {"type": "prometheus", "uid": uid},
                        "expr": q.query,
                        "range": True,
                        "intervalMs": 15000,
                        "maxDataPoints": 200,
                    }
                ],
            }
            resp = self.http.post("/api/ds/query", json=body)
            label = f"{q.dashboard} / {q.panel} [{q.ref}]"
            result = resp.json().get("results", {}).get(q.ref, {}) if resp.content else {}
            frames = [f for f in result.get("frames", []) if f.get("data", {}).get("values")]
            if resp.status_code != 200 or result.get("error"):
                ok = False
                rows.append(f"FAIL grafana {label}: {result.get('error') or resp.text[:200]}")
            elif not frames and KUBE_STATE.search(q.query):
                rows.append(f"SKIP grafana {label}: no kube-state-metrics series")
            elif not frames:
                ok = False
                rows.append(f"FAIL grafana {label}: no series")
            else:
                rows.append(f"ok   grafana {label}: {len(frames)} series")
        return rows, ok
