"""A challenger in shadow (:mod:`fraudstream.shadow`): the bridge also sends every batch to a
second scorer, best effort, and a second writer stores its results in ``scores_shadow``.

Real Kafka and PostgreSQL, ``fraudstream bridge`` / ``writer`` processes, stub scorers as the
champion and the challenger; the comparison against a hand-computed confusion matrix.
"""

from __future__ import annotations

import json
import re
import statistics
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from fraudstream.shadow import average_precision, compare
from fraudstream.topics import create_topics

from .conftest import Pipeline, committed_and_end, metric_value, produce, read_topic, wait_until

pytestmark = pytest.mark.integration
RUN_TIMEOUT = 60
JOINED = re.compile(r"partitions assigned: \[\d")


def shadow_pipeline(pipeline_factory, champion_url: str) -> Pipeline:
    pipe = pipeline_factory(champion_url, SCORER_SHADOW_TIMEOUT_S="0.5")
    pipe.topics["shadow"] = pipe.topics["scoring"] + ".shadow"
    create_topics(
        pipe.bootstrap, [pipe.topics["shadow"]], 6, retention_ms=3600_000, replication_factor=1
    )
    pipe.extra_env["TOPIC_SCORING_SHADOW"] = pipe.topics["shadow"]
    return pipe


def start_shadow_writer(pipe: Pipeline):
    return pipe.component(
        "writer",
        TOPIC_SCORING=pipe.topics["shadow"],
        WRITER_TABLE="scores_shadow",
        WRITER_GROUP_ID=pipe.writer_group + "-shadow",
        WRITER_GROUP_INSTANCE_ID=pipe.writer_group + "-shadow-0",
    ).start()


def table_ids(pg_url: str, table: str) -> dict[str, str]:
    """transaction_id -> model_version in ``table``."""
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT transaction_id, model_version FROM {table}")  # noqa: S608 - ours
        return dict(cur.fetchall())


def wait_joined(component, timeout: float = 60) -> None:
    wait_until(
        lambda: component.log_path.exists() and JOINED.search(component.log_path.read_text()),
        timeout,
        what=f"{component.name} to get partitions",
    )


def test_every_transaction_is_scored_by_champion_and_challenger(
    pipeline_factory, stub_scorer_factory, kafka_bootstrap, loaded_transactions, pg_url
):
    champion = stub_scorer_factory()
    challenger = stub_scorer_factory(STUB_MODEL_VERSION="challenger:2")
    pipe = shadow_pipeline(pipeline_factory, champion.url)
    bridge = pipe.component("bridge", SCORER_SHADOW_URL=challenger.url).start()
    pipe.component("writer").start()
    start_shadow_writer(pipe)
    ids = produce(kafka_bootstrap, pipe.topics["transactions"], loaded_transactions.iloc[:1000])
    pipe.wait_rows(len(ids), RUN_TIMEOUT)
    wait_until(
        lambda: len(table_ids(pg_url, "scores_shadow")) >= len(ids),
        RUN_TIMEOUT,
        what="every transaction in scores_shadow",
    )
    scores, shadow = table_ids(pg_url, "scores"), table_ids(pg_url, "scores_shadow")
    assert set(scores) == set(shadow) == set(ids)
    assert set(scores.values()) == {"stub:1"} and set(shadow.values()) == {"challenger:2"}
    scored = metric_value(bridge, "fraudstream_bridge_shadow_scored_total")
    dropped = metric_value(bridge, 'fraudstream_bridge_shadow_dropped_total{reason="queue_full"}')
    assert scored >= len(ids) and dropped == 0
    assert read_topic(kafka_bootstrap, pipe.topics["dlq"], 3) == []
    print(f"{len(ids)} transactions in scores and in scores_shadow")


def latencies(pg_url: str, ids: list[str]) -> list[float]:
    """Per transaction: produced to `transactions` -> scored by the champion, in seconds."""
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT extract(epoch FROM scored_at - produced_at) FROM scores"
            " WHERE transaction_id = ANY(%s)",
            (ids,),
        )
        return sorted(float(r[0]) for r in cur.fetchall())


def p99(values: list[float]) -> float:
    return values[min(len(values) - 1, int(len(values) * 0.99))]


PHASE = 600  # transactions per phase, at 200/s
WARM_UP = 200  # through each phase's bridge (and the writer) before it is measured


def test_a_hanging_challenger_never_slows_the_champion(
    pipeline_factory, stub_scorer_factory, kafka_bootstrap, loaded_transactions, pg_url
):
    """Two phases of 600 transactions at 200/s through the same (warmed-up) pipeline: no
    challenger, then a
    challenger that never answers. The champion's latency (produced -> scored) stays within a
    bound of the first phase's, every transaction is stored, nothing goes to the DLQ, the
    offsets reach the end; the shadow's losses are counted. (A challenger answering 500, or
    nonsense: tests/test_shadow_sender.py.)"""
    champion = stub_scorer_factory()
    hanging = stub_scorer_factory(STUB_DELAY_S="3600")
    pipe = shadow_pipeline(pipeline_factory, champion.url)
    pipe.component("writer").start()
    figures: dict[str, tuple[float, float, float]] = {}
    drops: dict[str, float] = {}
    for n, (phase, url) in enumerate([("no challenger", ""), ("hanging", hanging.url)]):
        bridge = pipe.component("bridge", SCORER_SHADOW_URL=url).start()
        wait_joined(bridge)
        # each phase's bridge is a new process: its connections, first batches and imports
        # are not the shadow's to pay or to win, so each is warmed up before it is measured
        start = 2 * PHASE + n * WARM_UP
        warm = loaded_transactions.iloc[start : start + WARM_UP]
        produce(kafka_bootstrap, pipe.topics["transactions"], warm)
        pipe.wait_rows((WARM_UP + PHASE) * n + WARM_UP, RUN_TIMEOUT)
        frame = loaded_transactions.iloc[n * PHASE : (n + 1) * PHASE]
        ids = produce(kafka_bootstrap, pipe.topics["transactions"], frame, rate=200)
        pipe.wait_rows((WARM_UP + PHASE) * (n + 1), RUN_TIMEOUT)
        if url:
            drops = {
                reason: metric_value(
                    bridge, f'fraudstream_bridge_shadow_dropped_total{{reason="{reason}"}}'
                )
                for reason in ("queue_full", "timeout", "http_error")
            }
        assert bridge.terminate() == 0, bridge.tail()
        values = latencies(pg_url, ids)
        assert len(values) == len(ids)
        figures[phase] = (statistics.median(values), p99(values), values[-1])
    for phase, (p50, p99_, worst) in figures.items():
        print(f"{phase:14s} champion latency p50 {p50 * 1000:6.1f} ms  p99 {p99_ * 1000:6.1f} ms"
              f"  max {worst * 1000:6.1f} ms")  # fmt: skip
    print(f"shadow drops with the hanging challenger: {drops}")
    base = figures["no challenger"][1]
    assert figures["hanging"][1] <= 2 * base + 0.1, figures
    assert drops["timeout"] > 0 and drops["queue_full"] > 0, drops
    assert read_topic(kafka_bootstrap, pipe.topics["dlq"], 3) == []
    committed, end = committed_and_end(
        kafka_bootstrap, pipe.bridge_group, pipe.topics["transactions"]
    )
    assert committed == end == 2 * (WARM_UP + PHASE)
    assert len(pipe.ids()) == 2 * (WARM_UP + PHASE)


# --------------------------------------------------------------------------- comparison

LABELS_DDL = """
CREATE TABLE IF NOT EXISTS labels (
    transaction_id text PRIMARY KEY,
    is_fraud boolean,
    labelled_at timestamptz,
    source text,
    stored_at timestamptz
)
"""
# id: (champion score, flag), (challenger score, flag), is_fraud; thresholds 0.5
CASES = {
    "t1": ((0.9, True), (0.8, True), True),
    "t2": ((0.7, True), (0.3, False), True),
    "t3": ((0.2, False), (0.6, True), True),
    "t4": ((0.6, True), (0.1, False), False),
    "t5": ((0.1, False), (0.2, False), False),
    "t6": ((0.3, False), (0.7, True), False),
    "t7": ((0.05, False), (0.05, False), False),
    "t8": ((0.4, False), (0.55, True), False),
}


def insert_score(cur, table: str, tx_id: str, score: float, flag: bool, version: str, at) -> None:
    cur.execute(
        f"INSERT INTO {table} (transaction_id, score, fraud_flag, threshold, model_version,"  # noqa: S608
        " amount, category, merchant, event_time, scored_at)"
        " VALUES (%s, %s, %s, 0.5, %s, 10, 'c', 'm', '2020-01-01 00:00:00', %s)",
        (tx_id, score, flag, version, at),
    )


def test_compare_champion_and_challenger_on_labelled_transactions(pg_url, capsys):
    from fraudstream.cli import main
    from fraudstream.migrations import migrate

    migrate(pg_url)
    now = datetime.now(UTC)
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute(LABELS_DDL)
        for tx_id, ((cs, cf), (ss, sf), fraud) in CASES.items():
            insert_score(cur, "scores", tx_id, cs, cf, "champ:1", now - timedelta(hours=1))
            insert_score(cur, "scores_shadow", tx_id, ss, sf, "chall:2", now - timedelta(hours=1))
            cur.execute("INSERT INTO labels VALUES (%s, %s, now(), 'test', now())", (tx_id, fraud))
        # left out: no label; no shadow score; scored before the window
        insert_score(cur, "scores", "t9", 0.9, True, "champ:1", now)
        insert_score(cur, "scores_shadow", "t9", 0.9, True, "chall:2", now)
        insert_score(cur, "scores", "t10", 0.9, True, "champ:1", now)
        cur.execute("INSERT INTO labels VALUES ('t10', false, now(), 'test', now())")
        insert_score(cur, "scores", "t11", 0.9, True, "champ:1", now - timedelta(days=30))
        insert_score(cur, "scores_shadow", "t11", 0.9, True, "chall:2", now - timedelta(days=30))
        cur.execute("INSERT INTO labels VALUES ('t11', false, now(), 'test', now())")
    conn = psycopg2.connect(pg_url)
    try:
        result = compare(conn, now - timedelta(days=7))
    finally:
        conn.close()
    champ, chall = result.champion, result.challenger
    # champion: flags t1 t2 t4; frauds t1 t2 t3
    assert (champ.tp, champ.fp, champ.fn, champ.tn) == (2, 1, 1, 4)
    assert champ.recall == pytest.approx(2 / 3) and champ.fpr == pytest.approx(1 / 5)
    assert champ.precision == pytest.approx(2 / 3)
    # ranked .9F .7F .6 .4 .3 .2F ...: 1/3*1 + 1/3*1 + 1/3*3/6
    assert champ.pr_auc == pytest.approx(5 / 6)
    # challenger: flags t1 t3 t6 t8
    assert (chall.tp, chall.fp, chall.fn, chall.tn) == (2, 2, 1, 3)
    assert chall.recall == pytest.approx(2 / 3) and chall.fpr == pytest.approx(2 / 5)
    # ranked .8F .7 .6F .55 .3F ...: 1/3*1 + 1/3*2/3 + 1/3*3/5
    assert chall.pr_auc == pytest.approx(34 / 45)
    assert champ.model_versions == ["champ:1"] and chall.model_versions == ["chall:2"]
    assert champ.transactions == chall.transactions == 8

    sklearn = pytest.importorskip("sklearn.metrics")
    labels = [c[2] for c in CASES.values()]
    for i in (0, 1):
        scores = [c[i][0] for c in CASES.values()]
        assert average_precision(scores, labels) == pytest.approx(
            sklearn.average_precision_score(labels, scores)
        )
    assert average_precision([0.5, 0.5, 0.1], [True, False, True]) == pytest.approx(
        sklearn.average_precision_score([1, 0, 1], [0.5, 0.5, 0.1])
    )

    assert main(["shadow", "compare", "--since", "7d", "--json", "--database-url", pg_url]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["champion"]["tp"] == 2 and printed["challenger"]["fp"] == 2
    assert main(["shadow", "compare", "--since", "2h", "--database-url", pg_url]) == 0
    assert "pr_auc" in capsys.readouterr().out

    # the same comparison below `fraudstream report`, and as the model dashboard's gauges
    assert main(["report", "--since", "7d", "--shadow", "--database-url", pg_url]) == 0
    report = capsys.readouterr().out
    assert "champion vs challenger" in report and "0.8333" in report and "0.7556" in report
    assert main(["report", "--shadow", "--json", "--database-url", pg_url]) == 0
    assert json.loads(capsys.readouterr().out)["shadow"]["challenger"]["tp"] == 2

    from prometheus_client import CollectorRegistry

    from fraudstream.quality import QualityGauges, QualityRefresher, ShadowQualityGauges

    registry = CollectorRegistry()
    refresher = QualityRefresher(
        pg_url,
        window_s=7 * 86400,
        max_rows=1000,
        interval_s=60,
        gauges=QualityGauges(registry),
        shadow_gauges=ShadowQualityGauges(registry),
    )
    try:
        refresher.refresh()
    finally:
        refresher._close_connection()

    def gauge(name: str, role: str) -> float | None:
        return registry.get_sample_value(f"fraudstream_quality_shadow_{name}", {"role": role})

    assert gauge("recall", "champion") == pytest.approx(2 / 3)
    assert gauge("false_positive_rate", "challenger") == pytest.approx(2 / 5)
    assert gauge("pr_auc", "champion") == pytest.approx(5 / 6)
    assert gauge("pr_auc", "challenger") == pytest.approx(34 / 45)
    assert registry.get_sample_value("fraudstream_quality_shadow_labelled_transactions") == 8
