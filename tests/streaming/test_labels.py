"""Labels and live quality on the real pipeline: real Kafka and PostgreSQL, ``fraudstream bridge``,
``writer`` and ``labels consume`` as processes (the stub scorer flags amounts from 1,000 on);
``fraudstream replay``, ``labels load`` and ``report`` through the CLI's entry point.

- a labelled file replayed, then its labels loaded: ``fraudstream report`` and the quality
  gauges agree with the confusion matrix computed here from ``scores`` and the file;
- the same label twice is one row, a later label overrides, an older one does not; a label
  for a transaction not scored yet is stored and counted once its score exists; a malformed
  label goes to the DLQ naming the field; no personal value reaches the table or the log.
"""

from __future__ import annotations

import csv
import json
import random
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from fraudstream.local.paths import free_port
from fraudstream.schema import EXAMPLE_TRANSACTION, PERSONAL_FIELDS, TETA_COLUMNS

from .conftest import FRAUDSTREAM, Component, read_topic, topic_env, wait_until

pytestmark = pytest.mark.integration

PERSONAL_VALUES = ("Darlene", "33.9659", "-80.9355")


def query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def labelled_csv(path: Path, n: int = 160) -> None:
    """``n`` labelled transactions in the TETA shape without ids (so the ids are derived from
    the content), 16 card holders, amounts on both sides of the stub's 1,000; the last row
    repeats the first (a true duplicate: its own id, occurrence 1) with another label."""
    rng = random.Random(11)
    amounts = (12.5, 80.0, 450.0, 999.99, 1000.0, 1500.0, 1999.0)
    start = datetime(2020, 6, 1, 8, 0, 0)
    rows = []
    for i in range(n - 1):
        rows.append(
            {
                **EXAMPLE_TRANSACTION,
                "transaction_time": (start + timedelta(minutes=7 * i)).strftime(
                    "%Y-%m-%d %H:%M:%S"
                ),
                "name_1": f"Jane{i % 16}",
                "amount": rng.choice(amounts),
                "target": int(rng.random() < 0.3),
            }
        )
    rows.append({**rows[0], "target": 1 - rows[0]["target"]})
    columns = [*TETA_COLUMNS, "target"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def confusion(url: str, truth: dict[str, bool]) -> dict[str, float]:
    """The confusion matrix of ``scores`` against ``truth`` (id -> is fraud), counted here."""
    counts = {"true_positives": 0, "false_positives": 0, "false_negatives": 0}
    counts |= {"true_negatives": 0, "missed_fraud_amount": 0.0}
    for tx_id, flagged, amount in query(
        url, "SELECT transaction_id, fraud_flag, amount FROM scores"
    ):
        if tx_id not in truth:
            continue
        fraud = truth[tx_id]
        if flagged and fraud:
            counts["true_positives"] += 1
        elif flagged:
            counts["false_positives"] += 1
        elif fraud:
            counts["false_negatives"] += 1
            counts["missed_fraud_amount"] += float(amount)
        else:
            counts["true_negatives"] += 1
    return counts


def report(url: str, capsys, *args: str) -> str:
    """``fraudstream report ...`` (its entry point, in this process: no interpreter to start)."""
    from fraudstream.cli import main

    capsys.readouterr()
    assert main(["report", *args, "--database-url", url]) == 0
    return capsys.readouterr().out


def report_json(url: str, capsys) -> list[dict]:
    return json.loads(report(url, capsys, "--since", "1h", "--json"))


def labels_consumer(pipe, **env: str) -> Component:
    """``fraudstream labels consume`` in this test's group, refreshing the gauges every second."""
    port = free_port()
    argv = [*FRAUDSTREAM, "labels", "consume", "--metrics-port", str(port)]
    group = f"labels-{uuid.uuid4().hex[:8]}"
    comp = Component(
        "labels",
        argv,
        pipe.env(LABELS_GROUP_ID=group, QUALITY_REFRESH_S="1", QUALITY_WINDOW_S="3600", **env),
        pipe.workdir,
    )
    comp.port = port  # type: ignore[attr-defined]
    pipe.components.append(comp)
    return comp.start()


def gauge(port: int, name: str, version: str) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    prefix = f'fraudstream_quality_{name}{{model_version="{version}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


def create_labels_topic(pipe) -> None:
    from fraudstream.topics import create_topics

    create_topics(pipe.bootstrap, [pipe.topics["labels"]], 3, 3600_000, 1)


def test_report_and_gauges_match_a_confusion_matrix_of_a_replayed_labelled_file(
    pipeline_factory, stub_scorer, kafka_bootstrap, topics, tmp_path, capsys, monkeypatch
):
    from fraudstream.cli import main
    from fraudstream.identity import frame_transaction_ids
    from fraudstream.loader import load_csv

    path = tmp_path / "labelled.csv"
    labelled_csv(path)
    frame = load_csv(path).frame
    truth = dict(zip(frame_transaction_ids(frame), frame["target"].astype(bool), strict=True))
    assert len(truth) == len(frame) == 160

    pipe = pipeline_factory(stub_scorer.url)
    create_labels_topic(pipe)
    pipe.component("bridge").start()
    pipe.component("writer").start()
    consumer = labels_consumer(pipe)
    env = topic_env(kafka_bootstrap, topics)

    # the commands' entry points in this process (no interpreter to start for each)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["replay", str(path), "--rate", "0"]) == 0
    pipe.wait_rows(len(truth), timeout=60)
    assert pipe.ids() == set(truth)  # replay and the test derive the same ids

    assert main(["labels", "load", str(path), "--source", "test-file"]) == 0
    assert "sent 160 label(s)" in capsys.readouterr().out
    wait_until(
        lambda: query(pipe.pg_url, "SELECT count(*) FROM labels")[0][0] == len(truth),
        30,
        what="the labels stored",
    )
    assert query(pipe.pg_url, "SELECT DISTINCT source FROM labels") == [("test-file",)]

    expected = confusion(pipe.pg_url, truth)
    assert all(expected[k] for k in ("true_positives", "false_positives", "false_negatives"))
    (got,) = report_json(pipe.pg_url, capsys)
    assert got["model_version"] == "stub:1"
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    tp, fp = expected["true_positives"], expected["false_positives"]
    fn, tn = expected["false_negatives"], expected["true_negatives"]
    assert got["labelled"] == len(truth)
    assert got["recall"] == pytest.approx(tp / (tp + fn))
    assert got["precision"] == pytest.approx(tp / (tp + fp))
    assert got["false_positive_rate"] == pytest.approx(fp / (fp + tn))
    assert got["alert_rate"] == pytest.approx((tp + fp) / len(truth))

    table = report(pipe.pg_url, capsys, "--since", "7d")
    row = next(line for line in table.splitlines() if line.startswith("stub:1"))
    assert row.split()[1:5] == [str(len(truth)), str(tp + fn), str(tp + fp), f"{got['recall']:.2%}"]

    # the labels consumer's gauges say the same
    wait_until(
        lambda: gauge(consumer.port, "labelled_transactions", "stub:1") == len(truth),
        15,
        what="the quality gauges",
    )
    assert gauge(consumer.port, "recall", "stub:1") == pytest.approx(got["recall"])
    assert gauge(consumer.port, "false_positive_rate", "stub:1") == pytest.approx(
        got["false_positive_rate"]
    )
    assert gauge(consumer.port, "missed_fraud_amount", "stub:1") == pytest.approx(
        expected["missed_fraud_amount"]
    )
    pipe.stop_all()
    assert consumer.proc.returncode == 0, consumer.tail()
    log = consumer.log_path.read_text()
    assert not [v for v in PERSONAL_VALUES if v in log]


def label_message(tx_id: str, is_fraud, at: datetime, **extra) -> tuple[bytes, bytes]:
    doc = {"transaction_id": tx_id, "is_fraud": is_fraud, "labelled_at": at.isoformat()}
    return tx_id.encode(), json.dumps({"source": "chargeback", **doc, **extra}).encode()


def score_message(tx_id: str, flagged: bool, amount: float) -> tuple[bytes, bytes]:
    doc = {
        "transaction_id": tx_id,
        "score": 0.9 if flagged else 0.1,
        "fraud_flag": flagged,
        "threshold": 0.5,
        "model_version": "m:2",
        "amount": amount,
        "category": "shopping_net",
        "merchant": "fraud_Kirlin and Sons",
        "event_time": "2020-06-21 22:41:07",
        "scored_at": datetime.now(UTC).isoformat(),
    }
    return tx_id.encode(), json.dumps(doc).encode()


def produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    from fraudstream.kafka_runner import make_producer, wait_delivered

    producer = make_producer(bootstrap)
    try:
        wait_delivered(producer, [producer.send(topic, key=k, value=v) for k, v in values])
    finally:
        producer.close()


def test_labels_are_idempotent_latest_wins_early_ones_wait_and_bad_ones_go_to_the_dlq(
    pipeline_factory, kafka_bootstrap, pg_url, capsys
):
    pipe = pipeline_factory("http://127.0.0.1:9")  # no bridge: scores are produced directly
    create_labels_topic(pipe)
    pipe.component("writer").start()
    labels_consumer(pipe)
    t0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    scored, early = str(uuid.uuid4()), str(uuid.uuid4())

    def label_of(tx_id: str) -> list[tuple]:
        return query(
            pg_url, "SELECT is_fraud, labelled_at, source FROM labels WHERE transaction_id = %s",
            (tx_id,),
        )  # fmt: skip

    produce(kafka_bootstrap, pipe.topics["scoring"], [score_message(scored, False, 640.0)])
    pipe.wait_rows(1, timeout=30)
    # the same label twice (once with personal fields a sender should not have added)
    first = label_message(scored, True, t0)
    produce(kafka_bootstrap, pipe.topics["labels"], [first, first])
    produce(
        kafka_bootstrap,
        pipe.topics["labels"],
        [label_message(scored, 1, t0, street="351 Darlene Green", lat=33.9659)],
    )
    # a label for a transaction not scored yet, and two malformed ones
    produce(
        kafka_bootstrap,
        pipe.topics["labels"],
        [
            label_message(early, False, t0),
            label_message(scored, "maybe", t0),
            (b"x", b"{not json"),
        ],
    )
    wait_until(lambda: len(read_topic(kafka_bootstrap, pipe.topics["dlq"], 2)) >= 2, 30, what="DLQ")
    wait_until(lambda: query(pg_url, "SELECT count(*) FROM labels") == [(2,)], 30, what="labels")
    assert label_of(scored) == [(True, t0, "chargeback")]
    dead = {}
    for record in read_topic(kafka_bootstrap, pipe.topics["dlq"]):
        headers = {k: v.decode() for k, v in record.headers}
        dead[headers["error_type"]] = headers
    assert set(dead) == {"invalid", "not_json"}
    assert dead["invalid"]["error"].startswith("is_fraud:")
    assert dead["invalid"]["source_topic"] == pipe.topics["labels"]
    columns = query(
        pg_url,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'labels'"
        " AND table_schema = current_schema() ORDER BY ordinal_position",
    )
    assert [c for (c,) in columns] == [
        "transaction_id", "is_fraud", "labelled_at", "source", "stored_at"
    ]  # fmt: skip
    assert not {c for (c,) in columns} & PERSONAL_FIELDS

    # the early label counts once its score is there; only the scored one counts before
    (before,) = report_json(pg_url, capsys)
    assert (before["labelled"], before["false_negatives"]) == (1, 1)
    assert before["missed_fraud_amount"] == 640.0 and before["recall"] == 0.0
    produce(kafka_bootstrap, pipe.topics["scoring"], [score_message(early, True, 20.0)])
    pipe.wait_rows(2, timeout=30)
    (after,) = report_json(pg_url, capsys)
    assert (after["labelled"], after["false_positives"], after["false_negatives"]) == (2, 1, 1)
    assert after["precision"] == 0.0 and after["false_positive_rate"] == 1.0

    # a later label overrides (not fraud after all); an older one does not
    later, older = t0 + timedelta(days=2), t0 - timedelta(days=1)
    produce(kafka_bootstrap, pipe.topics["labels"], [label_message(scored, False, later)])
    wait_until(lambda: label_of(scored)[0][0] is False, 30, what="the later label")
    produce(kafka_bootstrap, pipe.topics["labels"], [label_message(scored, True, older)])
    sentinel = str(uuid.uuid4())  # labels are in order per key only: wait for a later one
    produce(kafka_bootstrap, pipe.topics["labels"], [label_message(sentinel, True, t0)])
    wait_until(lambda: label_of(sentinel), 30, what="the sentinel label")
    wait_until(lambda: query(pg_url, "SELECT count(*) FROM labels") == [(3,)], 10)
    assert label_of(scored) == [(False, later, "chargeback")]
    (last,) = report_json(pg_url, capsys)
    assert (last["true_negatives"], last["false_negatives"], last["recall"]) == (1, 0, None)
    pipe.stop_all()
    for comp in pipe.components:
        assert not [v for v in PERSONAL_VALUES if v in comp.log_path.read_text()], comp.name


def test_labels_load_sends_a_kaggle_labels_file_and_reports_bad_rows(
    kafka_bootstrap, topics, tmp_path, monkeypatch, capsys
):
    from fraudstream.cli import main
    from fraudstream.topics import create_topics

    create_topics(kafka_bootstrap, [topics["labels"]], 1, 3600_000, 1)
    path = tmp_path / "labels.csv"
    path.write_text("trans_num,is_fraud\nk-1,1\nk-2,0\nk-3,maybe\n")
    for name, value in topic_env(kafka_bootstrap, topics).items():
        monkeypatch.setenv(name, value)
    assert main(["labels", "load", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "sent 2 label(s) (1 fraud)" in out
    assert "line 4, column is_fraud" in err
    values = [json.loads(r.value) for r in read_topic(kafka_bootstrap, topics["labels"])]
    assert sorted((v["transaction_id"], v["is_fraud"], v["source"]) for v in values) == [
        ("k-1", True, "csv"),
        ("k-2", False, "csv"),
    ]
    assert main(["labels", "load", str(tmp_path / "nope.csv")]) == 1
    assert "no such file" in capsys.readouterr().err
