"""The end-to-end run's plan (scripts/e2e_kind): skaffold.yaml turned into builds and helm
commands the way skaffold runs them, and dashboard queries with their variables filled in."""

from __future__ import annotations

import pytest
from e2e_kind import monitoring
from e2e_kind.report import Report
from k8s_helpers import ROOT, skaffold_plan

pytestmark = pytest.mark.unit


def kind_config() -> dict:
    config = skaffold_plan.load_config()
    return skaffold_plan.with_profiles(config, kube_context="kind-fraudstream")


def test_kind_profile_activates_on_kind_contexts_only() -> None:
    config = skaffold_plan.load_config()
    assert skaffold_plan.with_profiles(config, kube_context="kind-x") != config
    assert skaffold_plan.with_profiles(config, kube_context="prod") == config
    with pytest.raises(ValueError, match="no profile"):
        skaffold_plan.with_profiles(config, names=["nope"])


def test_patches_add_replace_remove() -> None:
    doc = {"a": [1, 2], "b": {"c": 1}}
    out = skaffold_plan.apply_patches(
        doc,
        [
            {"op": "add", "path": "/a/1", "value": 9},
            {"op": "add", "path": "/a/-", "value": 7},
            {"op": "replace", "path": "/b/c", "value": 2},
            {"op": "remove", "path": "/a/0"},
        ],
    )
    assert out == {"a": [9, 2, 7], "b": {"c": 2}} and doc == {"a": [1, 2], "b": {"c": 1}}
    with pytest.raises(ValueError):
        skaffold_plan.apply_patches(doc, [{"op": "move", "path": "/a", "from": "/b"}])


def test_releases_in_skaffold_order_with_its_values() -> None:
    config = kind_config()
    images = {a.image: f"{a.image}:t1" for a in skaffold_plan.artifacts(config)}
    assert {"fraud-scorer", "fraudstream-consumers"} <= set(images)
    releases = skaffold_plan.releases(config, images)
    names = [r.name for r in releases]
    assert names.index("kube-prometheus-stack") < names.index("infra") < names.index("fraudstream")
    assert "metrics-server" in names
    (app,) = [r for r in releases if r.name == "fraudstream"]
    assert app.sets["images.scorer.repository"] == "fraud-scorer"
    assert app.sets["images.scorer.tag"] == "t1"
    assert "images.scorer.digest" not in app.sets  # loaded into the nodes: no registry digest
    assert app.sets["scorer.service.type"] == "NodePort"
    argv = app.argv("kind-fraudstream", installed=False)
    assert argv[:5] == ["helm", "--kube-context", "kind-fraudstream", "install", "fraudstream"]
    assert "--create-namespace" in argv and "--set-string" in argv
    assert "--create-namespace" not in app.argv("kind-fraudstream", installed=True)
    remote = [r for r in releases if r.remote]
    assert remote and all(not r.upgrade_on_change for r in remote)


def test_builds_as_skaffold_does() -> None:
    arts = {a.image: a for a in skaffold_plan.artifacts(kind_config())}
    argv, env = arts["fraud-scorer"].build_argv("fraud-scorer:t1")
    assert env["IMAGE"] == "fraud-scorer:t1" and env["PUSH_IMAGE"] == "false"
    assert "scripts/build-scorer-image.sh" in argv[-1]
    argv, env = arts["fraudstream-consumers"].build_argv("fraudstream-consumers:t1")
    assert argv[:2] == ["docker", "build"] and argv[argv.index("-t") + 1].endswith(":t1")
    consumers = arts["fraudstream-consumers"]
    names = {p.relative_to(ROOT).as_posix() for p in consumers.inputs()}
    assert "src/fraudstream/bridge.py" in names and "consumers/Dockerfile" in names
    assert not any(n.startswith(("tests/", "charts/", ".venv/")) for n in names)
    assert consumers.tag() == consumers.tag() and consumers.tag().startswith("e2e-")


def test_dashboard_queries_have_no_variables_left() -> None:
    queries = monitoring.panel_queries("fraudstream")
    assert len(queries) >= 10
    for q in queries:
        assert "$" not in q.query, (q.dashboard, q.panel, q.query)


def test_fill_all_and_fixed_values() -> None:
    expr = 'rate(x{namespace="$namespace", pod=~"$pod", v="${model}"}[$__rate_interval])'
    out = monitoring.fill(expr, {"pod": None, "model": "m1"}, "ns")
    assert out == 'rate(x{namespace="ns", pod=~".*", v="m1"}[1m])'


def test_report_fails_on_any_failed_gate() -> None:
    report = Report()
    report.gate("a", True, "1")
    report.gate("b", None, "skipped")
    assert report.passed
    report.gate("c", False, "0")
    assert not report.passed and "RESULT: FAILED (1 failed)" in report.text()
