"""The chart's alerts, checked by Prometheus' own code (the v3 release kube-prometheus-stack runs):
the rules load (expressions, durations, annotation templates), and each alert expression fires on
synthetic series exactly when charts/README.md says it does, and stays silent otherwise.

The checker is ``promql_rules/`` (Go: ``rulefmt`` and ``promqltest``), compiled once into the
download cache by ``k8s_helpers.promql_rules_checker``. Scenarios are promqltest scripts: series
sampled every 15 s, then ``count(<alert expression>)`` evaluated at a time: 1 = the alert's
condition holds (before its ``for:``), no result = silent.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from k8s_helpers import promql_rules_checker, render
from test_k8s_chart import by_kind

pytestmark = pytest.mark.unit

NS = 'namespace="fraudstream"'


@dataclass
class Scenario:
    what: str
    series: list[str]  # promqltest `load 15s` lines: 'metric{labels} values'
    checks: list[tuple[str, str, bool]]  # (alert, evaluation time, fires)


def hist(endpoint: str, fast: int, slow: int) -> list[str]:
    """Request-duration buckets of one endpoint: per 15 s, `fast` under 0.1 s, `slow` under 5 s."""
    metric = "bentoml_service_request_duration_seconds_bucket"
    return [
        f'{metric}{{{NS}, endpoint="{endpoint}", le="0.1"}} 0+{fast}x80',
        f'{metric}{{{NS}, endpoint="{endpoint}", le="5"}} 0+{fast + slow}x80',
        f'{metric}{{{NS}, endpoint="{endpoint}", le="+Inf"}} 0+{fast + slow}x80',
    ]


def requests(endpoint: str, code: str, per_step: int) -> str:
    return (
        f'bentoml_service_request_total{{{NS}, endpoint="{endpoint}", '
        f'http_response_code="{code}"}} 0+{per_step}x80'
    )


def exporter(
    members: str,
    committed: str,
    lag: str,
    group: str = "fraudstream-bridge",
    ns: str = NS,
    pod: str = "kafka-exporter-1",
) -> list[str]:
    """kafka-exporter's series of one consumer group on 2 partitions of `transactions`: member
    count, committed offset and lag per partition (promqltest values, the same on each)."""
    group_labels = f'{ns}, pod="{pod}", consumergroup="{group}"'
    out = [f"kafka_consumergroup_members{{{group_labels}}} {members}"]
    for partition in (0, 1):
        labels = f'{group_labels}, topic="transactions", partition="{partition}"'
        out += [
            f"kafka_consumergroup_current_offset{{{labels}}} {committed}",
            f"kafka_consumergroup_lag{{{labels}}} {lag}",
        ]
    return out


def bridge_lag(values: str, partition: int = 0) -> str:
    """The bridge's own lag gauge of one partition."""
    return (
        f'fraudstream_bridge_consumer_lag{{{NS}, pod="b1", topic="transactions", '
        f'partition="{partition}"}} {values}'
    )


def psi(pod: str, feature: str, values: str) -> str:
    """The drift gauge of one scorer pod and monitored feature."""
    return f'fraudstream_scorer_psi{{{NS}, pod="{pod}", feature="{feature}"}} {values}'


OUT = f'fraudstream_bridge_messages_out_total{{{NS}, pod="b1"}}'
INSERTED = f'fraudstream_writer_rows_inserted_total{{{NS}, pod="w1"}}'
DUPLICATE = f'fraudstream_writer_rows_duplicate_total{{{NS}, pod="w1"}}'
NOT_WRITTEN = "FraudScoresNotWritten"
NOT_CONSUMING = "FraudBridgeNotConsuming"
LAG_HIGH = "FraudBridgeConsumerLagHigh"
DRIFT = "FraudModelDrift"

SCENARIOS = [
    Scenario(
        "scores produced and stored",
        [f"{OUT} 0+100x80", f"{INSERTED} 0+100x80", f"{DUPLICATE} 0x80"],
        [(NOT_WRITTEN, "10m", False)],
    ),
    Scenario(
        "writer scaled to 0 at 5m (its series end) while scores keep coming",
        [f"{OUT} 0+100x80", f"{INSERTED} 0+100x20", f"{DUPLICATE} 0x20"],
        [(NOT_WRITTEN, "5m30s", False), (NOT_WRITTEN, "10m", True)],
    ),
    Scenario(
        "no traffic, writer up",
        [f"{OUT} 500x80", f"{INSERTED} 500x80", f"{DUPLICATE} 0x80"],
        [(NOT_WRITTEN, "10m", False)],
    ),
    Scenario("no traffic, no writer", [f"{OUT} 500x80"], [(NOT_WRITTEN, "10m", False)]),
    Scenario(
        "writer up, PostgreSQL away: nothing stored",
        [f"{OUT} 0+100x80", f"{INSERTED} 500x80", f"{DUPLICATE} 0x80"],
        [(NOT_WRITTEN, "10m", True)],
    ),
    Scenario(
        "a re-scored replay: rows already stored count as stored",
        [f"{OUT} 0+100x80", f"{INSERTED} 500x80", f"{DUPLICATE} 0+100x80"],
        [(NOT_WRITTEN, "10m", False)],
    ),
    Scenario(
        "another namespace's traffic",
        ['fraudstream_bridge_messages_out_total{namespace="other", pod="b1"} 0+100x80'],
        [(NOT_WRITTEN, "10m", False)],
    ),
    Scenario(
        "slow batches, fast single calls",
        [*hist("/score", 1000, 0), *hist("/score_batch", 10, 10)],
        [("FraudScorerLatencyHigh", "10m", False), ("FraudScorerBatchLatencyHigh", "10m", True)],
    ),
    Scenario(
        "slow single calls, fast batches",
        [*hist("/score", 100, 10), *hist("/score_batch", 100, 0)],
        [("FraudScorerLatencyHigh", "10m", True), ("FraudScorerBatchLatencyHigh", "10m", False)],
    ),
    Scenario(
        "failing readiness probes, healthy scoring",
        [requests("/score", "200", 1000), requests("/readyz", "503", 1000)],
        [("FraudScorerErrorRateHigh", "10m", False)],
    ),
    Scenario(
        "10 % of batches answered 503",
        [requests("/score_batch", "200", 90), requests("/score_batch", "503", 10)],
        [("FraudScorerErrorRateHigh", "10m", True)],
    ),
    Scenario(
        "10 % flagged",
        [
            f'fraudstream_scorer_fraud_flags_total{{{NS}, endpoint="score_batch"}} 0+10x80',
            f'fraudstream_scorer_transactions_total{{{NS}, endpoint="score_batch"}} 0+100x80',
        ],
        [("FraudRateSpike", "20m", True)],
    ),
    Scenario(
        "in distribution: every PSI below 0.1; exactly 0.2 is not above it",
        [
            psi("s1", "score", "0.05x80"),
            psi("s1", "amount", "0.02x80"),
            psi("s2", "cat_id", "0.2x80"),
        ],
        [(DRIFT, "10m", False)],
    ),
    Scenario(
        "amounts x3 from 5m, seen by one of two scorer pods",
        [psi("s1", "amount", "0.02x20 1.1x60"), psi("s2", "amount", "0.03x80")],
        [(DRIFT, "4m", False), (DRIFT, "10m", True)],
    ),
    Scenario(
        "another namespace's scorer drifts",
        ['fraudstream_scorer_psi{namespace="other", pod="s1", feature="score"} 0.9x80'],
        [(DRIFT, "10m", False)],
    ),
    Scenario(
        "20,000 records behind (the bridge's own gauge, no kafka-exporter)",
        [bridge_lag("20000x80")],
        [(LAG_HIGH, "10m", True)],
    ),
    # kafka-exporter: lag measured at the broker, still there when no bridge runs
    Scenario(
        "the bridge's group consumes: a member, offsets committed, a little lag",
        [*exporter("1x80", "0+100x80", "20x80"), bridge_lag("20x80")],
        [(NOT_CONSUMING, "10m", False), (LAG_HIGH, "10m", False)],
    ),
    Scenario(
        "every bridge down from 5m: the group has no member, its lag grows, its gauges are gone",
        [
            *exporter("1x20 0x60", "0+100x20 2000x60", "20x20 20+100x60"),
            bridge_lag("20x20", 0),
            bridge_lag("20x20", 1),
        ],
        [
            (NOT_CONSUMING, "4m", False),
            (NOT_CONSUMING, "10m", True),
            (LAG_HIGH, "10m", False),
            (LAG_HIGH, "20m", True),  # 2 x 5,920 behind, counted by the exporter alone
        ],
    ),
    Scenario(
        "a bridge in the group but stuck from 3m: nothing committed, lag grows",
        [*exporter("1x80", "0+100x12 1200x68", "0x12 0+50x68")],
        [(NOT_CONSUMING, "5m", False), (NOT_CONSUMING, "10m", True)],
    ),
    Scenario(
        "the bridge scaled to 0 on an idle topic: nothing behind",
        [*exporter("0x80", "500x80", "0x80")],
        [(NOT_CONSUMING, "10m", False)],
    ),
    Scenario(
        "no offset committed yet (lag -1)",
        [*exporter("0x80", "-1x80", "-1x80")],
        [(NOT_CONSUMING, "10m", False), (LAG_HIGH, "10m", False)],
    ),
    Scenario(
        "another consumer group is down and far behind",
        [*exporter("0x80", "500x80", "20000+100x80", group="fraudstream-writer")],
        [(NOT_CONSUMING, "10m", False), (LAG_HIGH, "10m", False)],
    ),
    Scenario(
        "an exporter of another namespace's Kafka",
        [*exporter("0x80", "500x80", "20000+100x80", ns='namespace="other"')],
        [(NOT_CONSUMING, "10m", False), (LAG_HIGH, "10m", False)],
    ),
    Scenario(
        "two exporters scrape the group: each partition counted once (2 x 3,000)",
        [
            *exporter("1x80", "0+100x80", "3000x80", pod="kafka-exporter-1"),
            *exporter("1x80", "0+100x80", "3000x80", pod="kafka-exporter-2"),
        ],
        [(LAG_HIGH, "10m", False)],
    ),
    Scenario(
        "a bridge gauge says 20,000 (a stale series) and the exporter says 20: the exporter wins",
        [*exporter("1x80", "0+100x80", "10x80"), bridge_lag("20000x80")],
        [(LAG_HIGH, "10m", False)],
    ),
]

for _component in ("bridge", "writer", "labels"):
    _dlq = f"FraudDeadLetterQueueGrowing/{_component}"
    _metric = f"fraudstream_{_component}_dlq_messages_total"
    _other = "writer" if _component == "bridge" else "bridge"
    SCENARIOS += [
        Scenario(
            f"{_component}: the first poison record ever (a labelled counter appears at 1)",
            [f'{_metric}{{{NS}, pod="p1", reason="not_json"}} _x20 1x80'],
            [(_dlq, "4m", False), (_dlq, "6m", True), (_dlq, "14m", True), (_dlq, "16m", False)],
        ),
        Scenario(
            f"{_component}: a steady trickle of poison",
            [f'{_metric}{{{NS}, pod="p1", reason="invalid"}} 0+1x80'],
            [(_dlq, "10m", True)],
        ),
        Scenario(
            f"{_component}: a restart resets the counter, no new poison",
            [
                f'{_metric}{{{NS}, pod="p1", reason="invalid"}} 5x20',
                f'{_metric}{{{NS}, pod="p2", reason="invalid"}} _x40 0x40',
            ],
            [(_dlq, "15m", False)],
        ),
        Scenario(
            f"{_component}: only the {_other} sends poison",
            [f'fraudstream_{_other}_dlq_messages_total{{{NS}, pod="p1", reason="x"}} 0+1x80'],
            [(_dlq, "10m", False)],
        ),
    ]

for _component in ("scorer", "bridge", "writer", "labels"):
    _down = f"Fraud{_component.title()}Down"
    _up = f'up{{{NS}, job="fraudstream-{_component}"'
    SCENARIOS += [
        Scenario(
            f"{_component}: one of two pods fails its scrapes",
            [f'{_up}, pod="a"}} 1x20 0x60', f'{_up}, pod="b"}} 1x80'],
            [(_down, "10m", False)],
        ),
        Scenario(
            f"{_component}: the only pod fails its scrapes from 5m",
            [f'{_up}, pod="a"}} 1x20 0x60'],
            [(_down, "4m", False), (_down, "10m", True)],
        ),
        Scenario(
            f"{_component}: scaled to 0 at 5m (no target left)",
            [f'{_up}, pod="a"}} 1x20'],
            [(_down, "12m", True)],
        ),
    ]


def rendered_alerts() -> tuple[dict, dict[str, str]]:
    """The PrometheusRule's groups, and alert (DLQ alerts: alert/component) -> expression."""
    (rule,) = by_kind(render(), "PrometheusRule")
    exprs = {}
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            key = r["alert"]
            if key == "FraudDeadLetterQueueGrowing":
                key += "/" + r["labels"]["component"]
            exprs[key] = " ".join(r["expr"].split())  # promqltest takes one line
    return {"groups": rule["spec"]["groups"]}, exprs


def script(exprs: dict[str, str]) -> str:
    lines = []

    def check(alert: str, at: str, fires: bool) -> None:
        lines.append(f"eval instant at {at} count({exprs[alert]})")
        lines.extend(["  {} 1"] if fires else [])
        lines.append("")

    # with no series at all, every expression evaluates; only the "down" ones hold
    lines += ["clear", "load 15s", "  unrelated_metric 0+1x10", ""]
    for alert in exprs:
        check(alert, "2m", alert.endswith("Down"))
    for scenario in SCENARIOS:
        lines += [f"# {scenario.what}", "clear", "load 15s"]
        lines += [f"  {s}" for s in scenario.series] + [""]
        for alert, at, fires in scenario.checks:
            check(alert, at, fires)
    return "\n".join(lines)


def run_checker(test: str, tmp_path: Path, rules: dict, text: str) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    (tmp_path / "scenarios.test").write_text(text)
    env = {
        **os.environ,
        "RULES": str(tmp_path / "rules.yaml"),
        "SCRIPT": str(tmp_path / "scenarios.test"),
    }
    proc = subprocess.run(
        [promql_rules_checker(), "-test.run", f"^{test}$", "-test.count=1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_alert_rules_load_in_prometheus_v3(tmp_path: Path) -> None:
    rules, _ = rendered_alerts()
    run_checker("TestRulesLoad", tmp_path, rules, "")


def test_every_scenario_covers_a_real_alert() -> None:
    _, exprs = rendered_alerts()
    covered = {alert for s in SCENARIOS for alert, _, _ in s.checks}
    assert covered == set(exprs), f"alerts without a scenario: {sorted(set(exprs) - covered)}"


def test_alerts_fire_exactly_when_documented(tmp_path: Path) -> None:
    _, exprs = rendered_alerts()
    run_checker("TestAlertScenarios", tmp_path, {}, script(exprs))


def test_the_checker_catches_a_wrong_expectation(tmp_path: Path) -> None:
    """A scenario that expects the wrong outcome fails: the checks are not vacuous."""
    _, exprs = rendered_alerts()
    wrong = script(exprs).replace(
        f"eval instant at 10m count({exprs[NOT_WRITTEN]})\n  {{}} 1\n",
        f"eval instant at 10m count({exprs[NOT_WRITTEN]})\n",
        1,
    )
    with pytest.raises(AssertionError, match="unexpected metric"):
        run_checker("TestAlertScenarios", tmp_path, {}, wrong)
