"""Labels and live quality without Kafka or PostgreSQL: the metric arithmetic (no value where a
denominator is 0), the gauges, ``--since``, the label contract, reading label files, the step."""

from __future__ import annotations

import json
from collections import namedtuple
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from fraudstream.cli import main
from fraudstream.dlq import DeadLetters
from fraudstream.identity import frame_transaction_ids
from fraudstream.labels import Label, LabelStep, read_label_file
from fraudstream.loader import DataError, load_csv
from fraudstream.quality import Quality, QualityGauges, format_report, parse_since, ratio
from fraudstream.schema import EXAMPLE_TRANSACTION, TETA_COLUMNS, validation_poison

pytestmark = pytest.mark.unit

Record = namedtuple("Record", "topic partition offset key value timestamp headers", defaults=[()])
NOW = datetime.now(UTC)


# --------------------------------------------------------------------------- arithmetic


def test_rates_of_a_confusion_matrix():
    q = Quality("m:1", true_positives=8, false_positives=4, false_negatives=2, true_negatives=86,
                missed_fraud_amount=1234.5)  # fmt: skip
    assert (q.labelled, q.frauds, q.alerts) == (100, 10, 12)
    assert q.recall == pytest.approx(0.8)
    assert q.precision == pytest.approx(8 / 12)
    assert q.false_positive_rate == pytest.approx(4 / 90)
    assert q.alert_rate == pytest.approx(0.12)
    doc = q.as_dict()
    assert doc["recall"] == pytest.approx(0.8) and doc["missed_fraud_amount"] == 1234.5
    assert doc["labelled"] == 100 and doc["model_version"] == "m:1"


@pytest.mark.parametrize(
    ("counts", "none"),
    [
        ((0, 0, 0, 0), {"recall", "precision", "false_positive_rate", "alert_rate"}),
        ((0, 0, 0, 5), {"recall", "precision"}),  # no fraud, no alert
        ((3, 0, 0, 0), {"false_positive_rate"}),  # no legitimate transaction
        ((0, 0, 4, 0), {"precision", "false_positive_rate"}),  # every fraud missed, no alert
    ],
)
def test_a_rate_without_a_denominator_has_no_value(counts, none):
    q = Quality("m", *counts)
    for name in ("recall", "precision", "false_positive_rate", "alert_rate"):
        value = getattr(q, name)
        assert (value is None) == (name in none), (name, value)
    json.dumps(q.as_dict())  # None, not NaN or an exception
    assert ratio(1, 0) is None and ratio(0, 0) is None and ratio(0, 4) == 0.0


def test_gauges_have_a_series_per_model_version_and_none_for_missing_values():
    registry = CollectorRegistry()
    gauges = QualityGauges(registry)

    def value(name: str, version: str) -> float | None:
        return registry.get_sample_value(f"fraudstream_quality_{name}", {"model_version": version})

    gauges.update([Quality("a", 1, 1, 1, 1, 50.0), Quality("b", 0, 0, 0, 7)])
    assert value("recall", "a") == 0.5 and value("missed_fraud_amount", "a") == 50.0
    assert value("recall", "b") is None and value("precision", "b") is None
    assert value("false_positive_rate", "b") == 0.0 and value("labelled_transactions", "b") == 7
    assert registry.get_sample_value("fraudstream_quality_refreshed_timestamp_seconds") > 0
    # a leaves the window; b gets a fraud
    gauges.update([Quality("b", 1, 0, 0, 7)])
    assert value("recall", "a") is None and value("labelled_transactions", "a") is None
    assert value("recall", "b") == 1.0 and value("labelled_frauds", "b") == 1


def test_report_table_shows_missing_rates_as_a_dash():
    text = format_report([Quality("stub:1", 0, 2, 0, 8, 0.0)], "12h", 1000)
    assert "last 12h" in text
    header, row = text.splitlines()[1:3]
    assert header.split()[:5] == ["model_version", "labelled", "frauds", "alerts", "recall"]
    assert row.split() == ["stub:1", "10", "0", "2", "-", "0.00%", "20.00%", "20.00%", "0.00"]
    assert format_report([], "7d", 1000).endswith(": none")


# --------------------------------------------------------------------------- --since


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("12h", 43200), ("7d", 604800), ("1.5h", 5400), ("2w", 1209600), ("45s", 45)],
)
def test_since_accepts_a_number_and_a_unit(text, seconds):
    assert parse_since(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["7x", "", "d7", "0d", "-1d", "7 days", "1e3h"])
def test_since_refuses_anything_else_clearly(text, capsys):
    with pytest.raises(ValueError, match="not a duration"):
        parse_since(text)
    with pytest.raises(SystemExit) as exit_:
        main(["report", f"--since={text}", "--database-url", "postgresql://nowhere/x"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --since" in err and "e.g. 30m, 12h or 7d" in err


# --------------------------------------------------------------------------- the label contract


def label(**changes: Any) -> dict[str, Any]:
    return {
        "transaction_id": "tx-1",
        "is_fraud": True,
        "labelled_at": "2026-01-02T03:04:05+00:00",
        "source": "chargeback",
        **changes,
    }


def test_label_contract_takes_booleans_or_0_1_and_makes_times_aware():
    assert Label.model_validate(label(is_fraud=0)).is_fraud is False
    assert Label.model_validate(label(is_fraud=1)).is_fraud is True
    naive = Label.model_validate(label(labelled_at="2026-01-02T03:04:05"))
    assert naive.labelled_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    # extra fields (even personal ones) are dropped, never stored
    full = Label.model_validate(label(name_1="Jane", street="351 Darlene Green"))
    assert full.row() == ("tx-1", True, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "chargeback")
    again = Label.model_validate_json(full.model_dump_json())
    assert again == full


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"is_fraud": "yes"}, "is_fraud"),
        ({"is_fraud": 2}, "is_fraud"),
        ({"is_fraud": None}, "is_fraud"),
        ({"transaction_id": ""}, "transaction_id"),
        ({"transaction_id": "tx\x00-1"}, "transaction_id"),
        ({"transaction_id": "x" * 65}, "transaction_id"),
        ({"labelled_at": "yesterday"}, "labelled_at"),
        ({"labelled_at": (NOW + timedelta(days=3)).isoformat()}, "labelled_at"),
        ({"labelled_at": "1970-01-01T00:00:00Z"}, "labelled_at"),
        ({"source": ""}, "source"),
    ],
)
def test_a_bad_label_is_refused_naming_the_field_never_the_value(changes, field):
    doc = label(**changes)
    with pytest.raises(ValidationError) as err:
        Label.model_validate_json(json.dumps(doc))
    kind, detail = validation_poison(err.value)
    assert kind == "invalid" and detail.startswith(f"{field}:"), detail
    assert "yes" not in detail and "yesterday" not in detail


def test_missing_fields_and_not_json_are_named():
    with pytest.raises(ValidationError) as err:
        Label.model_validate_json(b'{"transaction_id": "a"}')
    kind, detail = validation_poison(err.value)
    assert kind == "invalid"
    assert all(f in detail for f in ("is_fraud", "labelled_at", "source"))
    with pytest.raises(ValidationError) as err:
        Label.model_validate_json(b"not json")
    assert validation_poison(err.value)[0] == "not_json"


# --------------------------------------------------------------------------- label files


def test_a_teta_file_without_ids_gets_the_ids_replay_derives(tmp_path):
    path = tmp_path / "teta.csv"
    rows = [{**EXAMPLE_TRANSACTION, "amount": 10.0 + i, "target": i % 2} for i in range(4)] + [
        {**EXAMPLE_TRANSACTION, "amount": 10.0, "target": 1}
    ]  # the same as row 0: occurrence 1
    cols = [*TETA_COLUMNS, "target"]
    lines = [",".join(cols)] + [",".join(str(r[c]) for c in cols) for r in rows]
    lines.append(lines[1].replace("shopping_net", "no_such_category"))  # skipped, as replay does
    path.write_text("\n".join(lines) + "\n")
    labels = read_label_file(path)
    expected = frame_transaction_ids(load_csv(path).frame)
    assert labels.ids == expected and len(set(expected)) == 5
    assert labels.is_fraud == [False, True, False, True, True]
    assert labels.shape == "teta" and labels.rows_read == 6
    assert len(labels.errors) == 1 and "line 7, column cat_id" in labels.errors[0]


def test_kaggle_and_labels_only_files(tmp_path):
    kaggle = tmp_path / "labels.csv"
    kaggle.write_text("trans_num,is_fraud,extra\nabc,1,x\ndef,0,y\n,1,z\nghi,yes,w\n")
    labels = read_label_file(kaggle)
    assert (labels.ids, labels.is_fraud, labels.shape) == (["abc", "def"], [True, False], "labels")
    assert labels.errors == [
        "line 4, column trans_num: missing value",
        "line 5, column is_fraud: label must be 0 or 1",
    ]
    teta = tmp_path / "teta-labels.csv"
    teta.write_text("transaction_id,target\nt-1,0\n")
    assert read_label_file(teta).ids == ["t-1"]
    other = tmp_path / "other.csv"
    other.write_text("id,label\n1,0\n")
    with pytest.raises(DataError, match="no labels"):
        read_label_file(other)
    with pytest.raises(DataError, match="no such file"):
        read_label_file(tmp_path / "missing.csv")


# --------------------------------------------------------------------------- the step


class FakeFuture:
    exception = None


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, topic: str, key=None, value=None, headers=None) -> FakeFuture:
        self.sent.append({"topic": topic, "value": value, "headers": dict(headers or [])})
        return FakeFuture()

    def flush(self) -> None:
        pass


class FakeStore:
    def __init__(self) -> None:
        self.batches: list[list[tuple]] = []

    def insert(self, rows: list[tuple]) -> int:
        self.batches.append(rows)
        return len(rows)


def test_step_keeps_the_latest_label_of_a_batch_and_dead_letters_the_bad_ones():
    producer, store = FakeProducer(), FakeStore()
    step = LabelStep(store, DeadLetters(producer, "dlq", 0.9, 200))
    values = [
        label(is_fraud=False, labelled_at="2026-01-02T00:00:00Z"),
        label(is_fraud=True, labelled_at="2026-01-03T00:00:00Z"),  # later: wins
        label(is_fraud=False, labelled_at="2026-01-01T00:00:00Z"),  # older
        label(transaction_id="tx-2", is_fraud="maybe"),
    ]
    records = [
        Record("labels", 0, i, b"k", json.dumps(v).encode(), 0) for i, v in enumerate(values)
    ]
    step(records)
    (rows,) = store.batches
    assert [(r[0], r[1]) for r in rows] == [("tx-1", True)]
    (dead,) = producer.sent
    assert dead["headers"]["error_type"] == b"invalid"
    assert dead["headers"]["error"].startswith(b"is_fraud:")
    assert dead["headers"]["source_offset"] == b"3"


# a port where nothing listens: the connection is refused at once
UNREACHABLE = "postgresql://fraudstream@127.0.0.1:1/fraudstream?connect_timeout=2"


@pytest.mark.parametrize(
    "command",
    [["report"], ["report", "--shadow"], ["shadow", "compare"], ["scores", "prune"],
     ["history", "prune"]],
)  # fmt: skip
def test_a_database_that_cannot_be_reached_is_one_clear_line_and_exit_1(command, capsys):
    assert main([*command, "--database-url", UNREACHABLE]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    name = " ".join(c for c in command if not c.startswith("--"))
    assert err[-1].startswith(f"fraudstream {name}: OperationalError: "), err
