"""The business steps and helpers without Kafka: parsing, DLQ guard, scorer client, messages."""

from __future__ import annotations

import json
import threading
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from fraudstream.bridge import (
    BridgeStep,
    ScorerClient,
    ScorerDeploymentError,
    ScorerFailedError,
    ScorerRejectedError,
)
from fraudstream.dlq import DeadLetters, DlqRatioExceededError
from fraudstream.kafka_runner import ShutdownRequestedError
from fraudstream.schema import EXAMPLE_TRANSACTION, Transaction
from fraudstream.scored_transaction import ScoredTransaction
from fraudstream.writer import RowsRejectedError, WriterStep

from .stub_scorer import REJECT_MERCHANT, serve, stub_score

pytestmark = pytest.mark.unit

Record = namedtuple("Record", "topic partition offset key value timestamp headers", defaults=[()])


class FakeFuture:
    exception = None


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, topic: str, key=None, value=None, headers=None, partition=None) -> FakeFuture:
        self.sent.append(
            {"topic": topic, "key": key, "value": value, "headers": dict(headers or [])}
        )
        return FakeFuture()

    def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def flush(self) -> None:
        pass


def tx_record(offset: int, **changes: Any) -> Record:
    doc = {**EXAMPLE_TRANSACTION, "transaction_id": f"tx-{offset}", **changes}
    return Record("transactions", 0, offset, b"card", json.dumps(doc).encode(), 1_700_000_000_000)


def make_step(
    url: str, producer: FakeProducer, max_ratio: float = 0.5, max_attempts: int = 2
) -> BridgeStep:
    stop = threading.Event()
    client = ScorerClient(url, timeout_s=5, backoff_max_s=0.05, stop=stop)
    dlq = DeadLetters(producer, "dlq", max_ratio=max_ratio, window=200)
    return BridgeStep(client, producer, "scoring", dlq, max_attempts=max_attempts)


@pytest.fixture
def stub_url():
    server = serve(0)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def stub_factory():
    servers = []

    def make(**config: Any) -> str:
        servers.append(serve(0, **config))
        return f"http://127.0.0.1:{servers[-1].server_address[1]}"

    yield make
    for server in servers:
        server.shutdown()


def test_bridge_step_scores_and_publishes_every_field(stub_url):
    producer = FakeProducer()
    make_step(stub_url, producer)([tx_record(i, amount=100.0 + i) for i in range(5)])
    out = [json.loads(m["value"]) for m in producer.sent if m["topic"] == "scoring"]
    assert [m["transaction_id"] for m in out] == [f"tx-{i}" for i in range(5)]
    first = out[0]
    assert list(first) == list(ScoredTransaction.model_fields)
    assert first["score"] == stub_score({"transaction_id": "x", "amount": 100.0})["score"]
    assert first["event_time"] == EXAMPLE_TRANSACTION["transaction_time"]
    assert first["category"] == "shopping_net" and first["merchant"].startswith("fraud_")
    assert first["produced_at"].startswith("2023-11-14T22:13:20")
    assert producer.sent[0]["key"] == b"tx-0"
    # nothing personal travels on the scoring topic
    for field in ("Jane", "Doe", "Darlene", "33.9659"):
        assert all(field not in m["value"].decode() for m in producer.sent)


def test_poison_of_each_kind_goes_to_the_dlq_with_reason_and_offset(stub_url):
    producer = FakeProducer()
    records = [tx_record(i) for i in range(20)]
    records += [
        Record("transactions", 3, 100, b"k", b"{not json", 0),
        Record("transactions", 3, 101, b"k", b"\xff\xfe\x00", 0),
        Record("transactions", 3, 102, b"k", b"[1, 2]", 0),
        tx_record(103, amount=-5),
        tx_record(104, cat_id="groceries"),
        tx_record(105, surprise="field"),
        tx_record(106, merch=REJECT_MERCHANT),  # valid, but the scorer says 400 (invalid_value)
        tx_record(107, merch="fraud_\x00Kirlin"),  # psycopg2 cannot store it
        tx_record(108, population_city=10**400),  # the scorer cannot compute with it
    ]
    make_step(stub_url, producer)(records)
    dlq = [m for m in producer.sent if m["topic"] == "dlq"]
    by_offset = {int(m["headers"]["source_offset"]): m for m in dlq}
    assert sorted(by_offset) == [100, 101, 102, 103, 104, 105, 106, 107, 108]
    kinds = {o: m["headers"]["error_type"].decode() for o, m in by_offset.items()}
    assert kinds == {
        100: "not_json",
        101: "not_json",
        102: "invalid",
        103: "invalid",
        104: "invalid",
        105: "invalid",
        106: "scorer_rejected",
        107: "invalid",
        108: "invalid",
    }
    assert b"amount" in by_offset[103]["headers"]["error"]
    assert b"cat_id" in by_offset[104]["headers"]["error"]
    assert b"400" in by_offset[106]["headers"]["error"]
    assert b"invalid_value" in by_offset[106]["headers"]["error"]
    assert b"merch" in by_offset[107]["headers"]["error"]
    assert b"population_city" in by_offset[108]["headers"]["error"]
    assert by_offset[101]["value"] == b"\xff\xfe\x00"  # original bytes, untouched
    assert by_offset[100]["headers"]["source_partition"] == b"3"
    scored = [m for m in producer.sent if m["topic"] == "scoring"]
    assert len(scored) == 20  # the 400 was narrowed down to its one record
    for m in dlq:  # nothing personal in the reasons
        assert not any(v in m["headers"]["error"] for v in (b"Jane", b"Darlene", b"\x00"))


def test_dlq_ratio_guard_stops_before_any_side_effect(stub_url):
    producer = FakeProducer()
    step = make_step(stub_url, producer, max_ratio=0.5)
    bad = [Record("transactions", 0, i, b"k", b"garbage", 0) for i in range(60)]
    good = [tx_record(100 + i) for i in range(20)]
    with pytest.raises(DlqRatioExceededError):
        step(good + bad)
    assert producer.sent == []


def test_a_record_without_id_gets_a_stable_one(stub_url):
    doc = {k: v for k, v in EXAMPLE_TRANSACTION.items() if k != "transaction_id"}
    record = Record("transactions", 2, 41, b"k", json.dumps(doc).encode(), 0)
    ids = []
    for _ in range(2):
        producer = FakeProducer()
        make_step(stub_url, producer)([record])
        ids.append(json.loads(producer.sent[0]["value"])["transaction_id"])
    assert ids[0] == ids[1] and len(ids[0]) == 36


class FlakyHandler(BaseHTTPRequestHandler):
    failures = 0
    calls = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        type(self).calls += 1
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if type(self).calls <= type(self).failures:
            status, out = 503, {"error": "warming up"}
        else:
            status, out = 200, [stub_score(t) for t in body["transactions"]]
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_scorer_client_retries_5xx_until_it_answers():
    FlakyHandler.failures, FlakyHandler.calls = 3, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ScorerClient(
            f"http://127.0.0.1:{server.server_address[1]}", 5, 0.05, threading.Event()
        )
        body = json.dumps({**EXAMPLE_TRANSACTION}).encode()
        assert (
            client.score_batch([body])[0]["transaction_id"] == EXAMPLE_TRANSACTION["transaction_id"]
        )
        assert FlakyHandler.calls == 4
    finally:
        server.shutdown()


def test_scorer_client_waits_for_a_down_scorer_until_shutdown():
    from fraudstream.local.paths import free_port

    stop = threading.Event()
    client = ScorerClient(f"http://127.0.0.1:{free_port()}", 1, 0.05, stop)
    threading.Timer(0.5, stop.set).start()
    with pytest.raises(ShutdownRequestedError):
        client.score_batch([b"{}"])


def test_scorer_client_does_not_retry_a_rejection(stub_url):
    client = ScorerClient(stub_url, 5, 0.05, threading.Event())
    body = json.dumps({**EXAMPLE_TRANSACTION, "merch": REJECT_MERCHANT}).encode()
    with pytest.raises(ScorerRejectedError):
        client.score_batch([body])


class FakeStore:
    def __init__(self) -> None:
        self.rows: dict[str, tuple] = {}

    def insert(self, rows: list[tuple]) -> int:
        new = [r for r in rows if r[0] not in self.rows]
        self.rows.update({r[0]: r for r in new})
        return len(new)


def test_writer_step_validates_and_is_idempotent():
    producer = FakeProducer()
    store = FakeStore()
    step = WriterStep(store, DeadLetters(producer, "dlq", 0.5, 200))
    msg = {
        "transaction_id": "a",
        "score": 0.9,
        "fraud_flag": True,
        "threshold": 0.5,
        "model_version": "m:1",
        "reasons": [{"feature": "amount", "value": 1.0, "impact": 0.3}],
        "amount": 12.5,
        "category": "travel",
        "merchant": "fraud_X",
        "event_time": "2020-01-01 10:00:00",
        "produced_at": "2026-01-01T00:00:00.000+00:00",
        "scored_at": "2026-01-01T00:00:00.100+00:00",
    }
    records = [
        Record(
            "scoring", 0, i, b"a", json.dumps({**msg, "transaction_id": f"id{i % 5}"}).encode(), 0
        )
        for i in range(10)
    ]
    records.append(Record("scoring", 0, 10, b"x", b"oops", 0))
    step(records)
    step(records)  # the same batch again (a lost commit): nothing new
    assert sorted(store.rows) == [f"id{i}" for i in range(5)]
    assert [m["headers"]["source_offset"] for m in producer.sent] == [b"10", b"10"]
    row = store.rows["id0"]
    assert row[5] == json.dumps(msg["reasons"]) and str(row[9]) == "2020-01-01 10:00:00"
    assert ScoredTransaction.model_validate(msg).row()[0] == "a"


def test_dead_letter_window_needs_enough_traffic():
    guard = DeadLetters(FakeProducer(), "dlq", max_ratio=0.5, window=200)
    guard.check([True] * 8 + [False] * 2)  # few records: no verdict yet
    with pytest.raises(DlqRatioExceededError):
        guard.check([True] * 80 + [False] * 20)


def test_dead_letter_guard_judges_a_batch_larger_than_the_window_as_a_whole():
    guard = DeadLetters(FakeProducer(), "dlq", max_ratio=0.5, window=200)
    # 60 % poison, all at the front: the last 200 records alone would look clean
    with pytest.raises(DlqRatioExceededError):
        guard.check([True] * 300 + [False] * 200)
    guard = DeadLetters(FakeProducer(), "dlq", max_ratio=0.5, window=200)
    guard.check([True] * 200 + [False] * 300)  # 40 %: fine


def test_cached_partitioner_matches_kafkas_default():
    from kafka.cluster import ClusterMetadata
    from kafka.partitioner.default import DefaultPartitioner

    from fraudstream.kafka_runner import _cached_partitioner

    class Cluster(ClusterMetadata):
        def topics(self, exclude_internal_topics=True):
            return {"t"}

        def partitions_for_topic(self, topic):
            return {0, 1, 2, 3, 4, 5}

        def available_partitions_for_topic(self, topic):
            return {0, 1, 2, 3, 4, 5}

    cluster = Cluster()
    ours, theirs = _cached_partitioner(), DefaultPartitioner()
    for i in range(300):
        key = Transaction(**{**EXAMPLE_TRANSACTION, "name_1": f"N{i}"}).card_key.encode()
        for _ in range(2):  # second time from the cache
            assert ours.partition("t", key, key, None, None, cluster) == theirs.partition(
                "t", key, key, None, None, cluster
            )


# --------------------------------------------------------------------------- issue 10: poison


def test_a_scorer_rejecting_every_record_trips_the_guard_one_record_at_a_time(stub_url):
    """Batches of one, every record refused by the scorer (400 with its reason): each rejected
    record counts once, so the guard stops the bridge well before it drains the topic."""
    producer = FakeProducer()
    step = make_step(stub_url, producer, max_ratio=0.5)
    with pytest.raises(DlqRatioExceededError):
        for i in range(200):
            step([tx_record(i, merch=REJECT_MERCHANT)])
    dead = [m for m in producer.sent if m["topic"] == "dlq"]
    assert len(dead) < 50


REFUSALS = [
    pytest.param(404, "Not Found", ScorerDeploymentError, id="404"),
    pytest.param(401, '{"detail": "no"}', ScorerDeploymentError, id="401"),
    pytest.param(403, '{"error": "x", "reason": "forbidden"}', ScorerDeploymentError, id="403"),
    pytest.param(405, "", ScorerDeploymentError, id="405"),
    pytest.param(
        415,
        '{"error": "content-type", "field": "content-type", "reason": "unsupported_media_type"}',
        ScorerDeploymentError,
        id="415-even-with-reason",
    ),
    pytest.param(400, '{"error": "bad request"}', ScorerDeploymentError, id="400-no-reason"),
    pytest.param(400, "<html>Bad Request</html>", ScorerDeploymentError, id="400-not-json"),
    pytest.param(302, "", ScorerDeploymentError, id="redirect"),
    pytest.param(
        400,
        '{"error": "transactions.0.amount: x", "field": "transactions.0.amount", '
        '"reason": "invalid_value"}',
        ScorerRejectedError,
        id="400-with-reason",
    ),
    pytest.param(500, '{"error": "boom"}', ScorerFailedError, id="500"),
    pytest.param(501, "", ScorerFailedError, id="501"),
]


@pytest.mark.parametrize(("status", "body", "error"), REFUSALS)
def test_scorer_client_tells_a_broken_deployment_from_a_bad_record(
    stub_factory, status, body, error
):
    url = stub_factory(status=status, body=body.encode())
    client = ScorerClient(url, 5, 0.01, threading.Event())
    with pytest.raises(error):
        client.score_batch([json.dumps(EXAMPLE_TRANSACTION).encode()], max_attempts=3)


def test_a_scorer_result_outside_the_result_contract_stops_the_bridge(stub_factory):
    """A 200 whose result does not fit :class:`ScoredTransaction` (here a score above 1) is no
    record's fault but a scorer that is not ours: nothing is published or dead-lettered."""
    result = {**stub_score({"transaction_id": "tx-0", "amount": 100.0}), "score": 1.5}
    url = stub_factory(status=200, body=json.dumps([result]).encode())
    producer = FakeProducer()
    with pytest.raises(ScorerDeploymentError, match=r"contract \(score\)"):
        make_step(url, producer)([tx_record(0)])
    assert producer.sent == []


def test_a_record_the_scorer_fails_on_is_found_by_bisection(stub_factory):
    url = stub_factory(error_ids=frozenset({"tx-37"}))
    producer = FakeProducer()
    make_step(url, producer, max_attempts=2)([tx_record(i) for i in range(100)])
    dead = [m for m in producer.sent if m["topic"] == "dlq"]
    assert [m["headers"]["source_offset"] for m in dead] == [b"37"]
    assert dead[0]["headers"]["error_type"] == b"scorer_error"
    assert b"500" in dead[0]["headers"]["error"]
    scored = {
        json.loads(m["value"])["transaction_id"] for m in producer.sent if m["topic"] == "scoring"
    }
    assert scored == {f"tx-{i}" for i in range(100) if i != 37}


def test_records_the_scorer_fails_on_count_in_the_guard(stub_factory):
    url = stub_factory(error_ids=frozenset(f"tx-{i}" for i in range(80)))
    producer = FakeProducer()
    with pytest.raises(DlqRatioExceededError):
        make_step(url, producer, max_attempts=1)([tx_record(i) for i in range(100)])
    assert producer.sent == []


def test_a_scorer_failing_everything_is_waited_for_not_bisected(stub_factory):
    """500 for the batch and for a transaction the scorer accepted before: no record is to
    blame, so nothing goes to the DLQ; the step waits (here: until shutdown)."""
    url = stub_factory(status=500)
    producer = FakeProducer()
    step = make_step(url, producer, max_attempts=2)
    threading.Timer(1.0, step.scorer.stop.set).start()
    with pytest.raises(ShutdownRequestedError):
        step([tx_record(i) for i in range(10)])
    assert producer.sent == []


class RefusingStore(FakeStore):
    """PostgreSQL that refuses any insert containing one of ``bad`` ids (as a DataError)."""

    def __init__(self, bad: set[str]) -> None:
        super().__init__()
        self.bad = bad
        self.calls = 0

    def insert(self, rows: list[tuple]) -> int:
        self.calls += 1
        if any(r[0] in self.bad for r in rows):
            raise RowsRejectedError("NumericValueOutOfRange (22003)")
        return super().insert(rows)


def score_record(offset: int, tx_id: str, **changes: Any) -> Record:
    msg = {
        "transaction_id": tx_id,
        "score": 0.1,
        "fraud_flag": False,
        "threshold": 0.5,
        "model_version": "m:1",
        "reasons": [],
        "amount": 12.5,
        "category": "travel",
        "merchant": "fraud_X",
        "event_time": "2020-01-01 10:00:00",
        "scored_at": "2026-01-01T00:00:00.100+00:00",
        **changes,
    }
    return Record("scoring", 0, offset, tx_id.encode(), json.dumps(msg).encode(), 0)


def test_writer_bisects_a_batch_postgresql_refuses_down_to_the_row():
    producer = FakeProducer()
    store = RefusingStore({"id-13", "id-77"})
    step = WriterStep(store, DeadLetters(producer, "dlq", 0.5, 200))
    step([score_record(i, f"id-{i}") for i in range(100)])
    assert sorted(store.rows) == sorted(f"id-{i}" for i in range(100) if i not in (13, 77))
    dead = {int(m["headers"]["source_offset"]): m["headers"] for m in producer.sent}
    assert sorted(dead) == [13, 77]
    assert all(h["error_type"] == b"write_error" for h in dead.values())
    assert b"22003" in dead[13]["error"]
    assert store.calls < 40  # bisection, not one insert per row


def test_writer_sends_control_characters_to_the_dlq_instead_of_crashing():
    producer = FakeProducer()
    store = FakeStore()
    step = WriterStep(store, DeadLetters(producer, "dlq", 0.5, 200))
    step(
        [score_record(i, f"id-{i}") for i in range(10)]
        + [
            score_record(10, "id-10", merchant="fraud_\x00X"),
            score_record(11, "id-11", reasons=[{"feature": "a\x07", "value": 1, "impact": 1}]),
            score_record(12, "id-\x1b12"),
        ]
    )
    assert sorted(store.rows) == sorted(f"id-{i}" for i in range(10))
    kinds = {m["headers"]["source_offset"]: m["headers"]["error_type"] for m in producer.sent}
    assert kinds == {b"10": b"invalid", b"11": b"invalid", b"12": b"invalid"}


def test_every_dlq_reason_has_a_series_before_the_first_poison() -> None:
    """A dashboard panel on the DLQ counter must show 0, not "no data", on a healthy system."""
    from prometheus_client import CollectorRegistry

    from fraudstream.dlq import ERROR_TYPES
    from fraudstream.kafka_runner import ConsumerMetrics

    registry = CollectorRegistry()
    DeadLetters(FakeProducer(), "dlq", 0.5, 200, metrics=ConsumerMetrics.create("t", registry))
    for reason in ERROR_TYPES:
        assert (
            registry.get_sample_value("fraudstream_t_dlq_messages_total", {"reason": reason}) == 0
        )
