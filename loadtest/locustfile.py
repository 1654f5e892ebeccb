"""Locust load test of fraudstream at a fixed rate, on the HTTP path or the Kafka path.

    make serve                                   # a scorer on :3000 (other terminal)
    .venv/bin/locust --config loadtest/locust.conf                  # ScorerUser: 400/s, 60 s
    .venv/bin/locust --config loadtest/locust.conf --users 40 --run-time 5m ScorerUser

    make up                                      # Kafka, scorer, bridge, writer, PostgreSQL
    DATABASE_URL=postgresql://... .venv/bin/locust --config loadtest/locust.conf KafkaUser

    # distributed (what the chart's `loadtest` Jobs run): one master, N workers, same classes
    .venv/bin/locust --config loadtest/locust.conf --master --expect-workers 2 KafkaUser
    .venv/bin/locust -f loadtest/locustfile.py --worker --master-host 127.0.0.1 KafkaUser

User classes, chosen with Locust's own class selection (class names at the end of the command
line, or ``LOCUST_USER_CLASSES``); with none named, ``ScorerUser`` runs. Workers must be given
the same class names as their master. Each user runs ``--rate-per-user`` (10) transactions/s.

- ``ScorerUser``: ``POST /score`` of one transaction (``--host``, the scorer: in the cluster its
  Service). Every ``--http-recycle-s`` seconds (5) a user closes its keep-alive connection. A
  Kubernetes Service balances connections, not requests: a client that keeps its connections for
  ever keeps talking to the pods that existed when it connected, and scorer pods added by the
  HorizontalPodAutoscaler would get no traffic. A fresh connection now and then spreads the load
  over the current pods at the cost of one TCP handshake per 50 requests.
- ``KafkaUser``: produces the transaction to ``TOPIC_TRANSACTIONS`` (``KAFKA_BOOTSTRAP_SERVERS``)
  exactly as ``fraudstream replay`` does (key: card-holder key, value: the ``Transaction`` JSON,
  one shared idempotent ``acks=all`` producer per process) and waits for Kafka's ack (request
  type ``kafka``). The master (or the single local process) polls PostgreSQL's ``scores``
  (``DATABASE_URL``; the password may come from ``PGPASSWORD``) for this run's rows and reports
  each row's ``written_at - produced_at`` as request type ``e2e``, name ``kafka->scores``: from
  the moment the load test produced it (Kafka's record timestamp) to the writer's commit.
  Transactions acknowledged by Kafka but not stored ``--drain-s`` seconds (30) after the run are
  failures.
  For ``--label-share`` (0.1) of the transactions it also sends their simulated label
  (``{transaction_id, is_fraud, labelled_at, source: "loadtest"}``) to ``TOPIC_LABELS``, so the
  labels consumer's live quality gauges (recall, false-positive rate, ...) have data.

Payloads are simulated transactions (``fraudstream.simulator``, validated by the ``Transaction``
schema and serialised by ``fraudstream.replay.transaction_message``), each sent with an id unique
to the run: ``lt-<run id>-<process>-<n>``.

When Locust quits, the master (or single process) prints one line ``LOADTEST_RESULT {json}``
(requests, failures, rates, p50/p95/p99 per kind: ``http``, ``kafka``, ``e2e``; see
``loadtest/gate.py``), writes the same JSON to ``--result-file`` (``LOCUST_RESULT_FILE``) when set,
and exits 1 unless: the offered rate (HTTP + produces) is at least 95 % of users x rate per
user, nothing failed, HTTP p99 is below ``--p99-ms`` (``LOCUST_P99_MS``, 100) and end-to-end p99
is below ``--e2e-p99-ms`` (``LOCUST_E2E_P99_MS``, 1000). Workers always exit 0: the verdict is
the master's, over the statistics of all of them.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import random
import sys
import time
import uuid
from collections import deque
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

import gate  # loadtest/gate.py: Locust puts the locustfile's folder on sys.path
import gevent
import gevent.event
import gevent.lock
from locust import FastHttpUser, User, constant_throughput, events, task
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

log = logging.getLogger("loadtest")
# kafka-python logs every connection at INFO; its warnings and errors are what matter here
logging.getLogger("kafka").setLevel(logging.WARNING)

# the JSON of a transaction starts with its id (``transaction_message`` dumps the model's fields
# in order): a payload is stored as what follows the id, and each send puts a fresh id in front
ID_HEAD = b'{"transaction_id":"'
ID_MARK = "x"
E2E_NAME = "kafka->scores"
SEND_TIMEOUT_S = 30  # a transaction Kafka has not acknowledged by then is a failure


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--rate-per-user",
        type=float,
        default=10.0,
        env_var="LOCUST_RATE_PER_USER",
        help="transactions per second per user; the target rate is users x this",
    )
    parser.add_argument(
        "--p99-ms",
        type=float,
        default=100.0,
        env_var="LOCUST_P99_MS",
        help="the run fails unless HTTP p99 is below this (ms)",
    )
    parser.add_argument(
        "--e2e-p99-ms",
        type=float,
        default=1000.0,
        env_var="LOCUST_E2E_P99_MS",
        help="the run fails unless Kafka -> scores p99 is below this (ms)",
    )
    parser.add_argument(
        "--drain-s",
        type=float,
        default=30.0,
        env_var="LOCUST_DRAIN_S",
        help="after the run, how long to wait for produced transactions to be stored",
    )
    parser.add_argument(
        "--http-recycle-s",
        type=float,
        default=5.0,
        env_var="LOCUST_HTTP_RECYCLE_S",
        help="ScorerUser reconnects this often, so new scorer pods get traffic (0: never)",
    )
    parser.add_argument(
        "--label-share",
        type=float,
        default=0.1,
        env_var="LOCUST_LABEL_SHARE",
        help="KafkaUser: share of the sent transactions whose label (fraud or not) it also"
        " sends to the labels topic, for the live quality gauges (0: none)",
    )
    parser.add_argument(
        "--result-file",
        default="",
        env_var="LOCUST_RESULT_FILE",
        help="also write the result JSON to this file",
    )
    parser.add_argument(
        "--run-id",
        default="",
        include_in_web_ui=False,
        help="id of the run in transaction ids (set by the master at each start; leave empty)",
    )


def _is_worker() -> bool:
    return "--worker" in sys.argv or os.environ.get("LOCUST_MODE_WORKER", "") in ("1", "true")


def _is_master() -> bool:
    return "--master" in sys.argv or os.environ.get("LOCUST_MODE_MASTER", "") in ("1", "true")


# No class named: the HTTP test, as `locust --config loadtest/locust.conf` has always run. Locust
# reads this variable's default after importing the locustfile. A worker keeps every class: it
# runs whichever its master dispatches.
if not _is_worker():
    os.environ.setdefault("LOCUST_USER_CLASSES", "ScorerUser")


# --------------------------------------------------------------------------- payloads


@cache
def payloads(count: int = 10_000) -> list[tuple[bytes, bytes]]:
    """(Kafka key, JSON after the id) of ``count`` simulated transactions, in time order; their
    labels (fraud or not) are in :func:`frauds`."""
    from fraudstream.loader import to_transactions
    from fraudstream.replay import transaction_message
    from fraudstream.simulator import simulate

    frame = simulate(150, date(2020, 7, 1), date(2020, 9, 30), seed=5)
    frame = frame.sort_values("transaction_time").head(count)
    _frauds[:] = [bool(v) for v in frame["target"]]
    frame = frame.drop(columns=["target"])
    out = []
    for tx in to_transactions(frame):
        tx.transaction_id = ID_MARK
        key, value = transaction_message(tx)
        head = ID_HEAD + ID_MARK.encode()
        if not value.startswith(head):
            raise RuntimeError(f"transaction JSON no longer starts with its id: {value[:40]!r}")
        out.append((key, value[len(head) :]))
    return out


_frauds: list[bool] = []  # the label of payloads()[i], filled with it


# a master sends nothing itself: only the processes that run users build payloads (a few seconds
# of CPU; done at import, before Locust's runner and its heartbeats start). gevent's loop caches
# the time: refresh it, or the --run-time timer would start seconds in the past.
if not _is_master():
    payloads()
    gevent.get_hub().loop.update_now()

PROCESS = os.urandom(3).hex()  # tells this process's ids from other workers'
COUNTER = itertools.count()


def id_prefix(run_id: str) -> str:
    return f"lt-{run_id}-"


def next_transaction(environment: Any) -> tuple[str, bytes, bytes, bool]:
    """(transaction id, Kafka key, JSON value, is it fraud) of the next transaction to send."""
    n = next(COUNTER)
    key, rest = payloads()[n % len(payloads())]
    tid = f"{id_prefix(environment.parsed_options.run_id)}{PROCESS}-{n}"
    return tid, key, ID_HEAD + tid.encode() + rest, _frauds[n % len(payloads())]


# set on a worker when its master ends the run (see "the last figures" below): send nothing more
_paused = gevent.event.Event()
_http_in_flight = 0


def _start_phase(rate: float) -> None:
    """Sleep a random part of one interval: users spawned together do not send in lockstep."""
    gevent.sleep(random.uniform(0, 1.0 / rate))


# --------------------------------------------------------------------------- HTTP


class ScorerUser(FastHttpUser):
    """One transaction at a time on ``POST /score``, as an online caller would send it."""

    network_timeout = 10.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.pace = constant_throughput(opts.rate_per_user)
        self.recycle_s = opts.http_recycle_s
        # users spread their reconnects over the interval instead of all reconnecting together
        self.reconnect_at = time.monotonic() + random.uniform(0, self.recycle_s)
        _start_phase(opts.rate_per_user)

    def wait_time(self) -> float:
        return self.pace(self)

    @task
    def score(self) -> None:
        global _http_in_flight
        if _paused.is_set():
            return
        _http_in_flight += 1
        try:
            self._score()
        finally:
            _http_in_flight -= 1

    def _score(self) -> None:
        if self.recycle_s > 0 and time.monotonic() >= self.reconnect_at:
            self.client.client.close()  # the next request connects again through the Service
            self.reconnect_at = time.monotonic() + self.recycle_s
        _tid, _key, body, _fraud = next_transaction(self.environment)
        with self.client.post(
            "/score",
            data=body,
            headers={"Content-Type": "application/json"},
            name="/score",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
            elif b'"score"' not in (resp.content or b""):
                resp.failure("no score in the answer")


# --------------------------------------------------------------------------- Kafka

_producer: Any = None
_producer_lock = gevent.lock.Semaphore()


def shared_producer() -> Any:
    """This process's one producer (``make_producer``: acks=all, idempotent, linger 5 ms), with
    a delivery timeout short enough for a failure to show within the run."""
    global _producer
    with _producer_lock:
        if _producer is None:
            from fraudstream.kafka_runner import make_producer
            from fraudstream.settings import KafkaSettings

            _producer = make_producer(
                KafkaSettings().kafka_bootstrap_servers,
                request_timeout_ms=10_000,
                delivery_timeout_ms=SEND_TIMEOUT_S * 1000,
            )
        return _producer


def close_producer() -> None:
    global _producer
    if _producer is not None:
        _producer.close(timeout=5)
        _producer = None


class KafkaUser(User):
    """Transactions onto the ``transactions`` topic at a steady rate, each one's acknowledgement
    reported when it comes (request type ``kafka``): the user does not wait for it, so a slow
    broker shows as latency and failures, not as a lower offered rate."""

    def on_start(self) -> None:
        from fraudstream.settings import KafkaSettings

        opts = self.environment.parsed_options
        self.pace = constant_throughput(opts.rate_per_user)
        self.topic = KafkaSettings().topic_transactions
        self.labels_topic = KafkaSettings().topic_labels
        self.label_share = opts.label_share
        self.producer = shared_producer()
        _start_phase(opts.rate_per_user)

    def wait_time(self) -> float:
        return self.pace(self)

    @task
    def produce(self) -> None:
        if _paused.is_set():
            return
        tid, key, value, fraud = next_transaction(self.environment)
        started = time.perf_counter()
        try:
            future = self.producer.send(self.topic, key=key, value=value)
        except Exception as err:  # refused at once (buffer full, closed producer, ...)
            self._report(started, len(value), err)
            return
        future.add_callback(lambda _metadata: self._report(started, len(value), None))
        future.add_errback(lambda err: self._report(started, len(value), err))
        if random.random() < self.label_share:
            self._label(tid, fraud)

    def _label(self, tid: str, fraud: bool) -> None:
        """The confirmed outcome of a sent transaction on the ``labels`` topic (best effort: a
        lost label only makes the live quality's sample smaller)."""
        from fraudstream.labels import Label

        label = Label(
            transaction_id=tid, is_fraud=fraud, labelled_at=datetime.now(UTC), source="loadtest"
        )
        with contextlib.suppress(Exception):
            self.producer.send(
                self.labels_topic, key=tid.encode(), value=label.model_dump_json().encode()
            )

    def _report(self, started: float, size: int, error: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type=gate.KAFKA,
            name=self.topic,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=size,
            exception=error,
            context={},
        )


@events.test_stop.add_listener
def _flush_producer(environment: Any, **_kwargs: Any) -> None:
    """Users have stopped: wait for the acks still due, so they are in the final statistics."""
    if _producer is not None:
        _producer.flush(timeout=SEND_TIMEOUT_S)


# --------------------------------------------------------------------------- the last figures
#
# When the run ends, Locust's master sends "quit" to its workers and waits 0.5 s for their last
# statistics report before it stops listening; a busy worker (stopping users, waiting for the
# acks of its last sends) can miss that, and the master would judge the run on figures a few
# seconds short, and count fewer produced transactions than were stored. So when the master
# starts to stop, it first asks each worker to pause: the worker sends nothing more, waits for
# its requests in flight and the producer's acks, and answers. Its next regular report (every
# 3 s, after the answer on the same connection) then holds all its figures; the master waits
# for that report from every worker before it lets Locust quit them.

PAUSE, PAUSED = "fraudstream_pause", "fraudstream_paused"
FINAL_REPORT_TIMEOUT_S = 15.0
_paused_workers: set[str] = set()
_final_reports: set[str] = set()


def _pause(environment: Any, **_kwargs: Any) -> None:
    """On a worker: stop sending, let what is in flight finish, tell the master."""
    _paused.set()
    deadline = time.monotonic() + SEND_TIMEOUT_S
    while _http_in_flight and time.monotonic() < deadline:
        gevent.sleep(0.05)
    if _producer is not None:
        _producer.flush(timeout=SEND_TIMEOUT_S)
    environment.runner.send_message(PAUSED)


def _worker_paused(environment: Any, msg: Any, **_kwargs: Any) -> None:
    _paused_workers.add(msg.node_id)


@events.worker_report.add_listener
def _report_after_pause(client_id: str, **_kwargs: Any) -> None:
    if client_id in _paused_workers:
        _final_reports.add(client_id)


@events.init.add_listener
def _register_messages(environment: Any, **_kwargs: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(PAUSE, _pause, concurrent=True)
    elif isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(PAUSED, _worker_paused)


@events.test_stopping.add_listener
def _collect_final_reports(environment: Any, **_kwargs: Any) -> None:
    runner = environment.runner
    if not isinstance(runner, MasterRunner):
        return
    workers = {c.id for c in runner.clients.all if c.state != STATE_MISSING}
    if not workers:
        return
    _paused_workers.clear()
    _final_reports.clear()
    runner.send_message(PAUSE)
    deadline = time.monotonic() + FINAL_REPORT_TIMEOUT_S
    while not workers <= _final_reports and time.monotonic() < deadline:
        gevent.sleep(0.1)
    if not workers <= _final_reports:
        log.warning(
            "%d of %d workers sent no final report: their last figures may be missing",
            len(workers - _final_reports),
            len(workers),
        )


# --------------------------------------------------------------------------- end to end


def _green_psycopg2() -> None:
    """Let psycopg2 wait through gevent, so a query never stalls Locust's event loop."""
    import psycopg2
    import psycopg2.extensions as ext
    from gevent.socket import wait_read, wait_write

    def wait(conn: Any) -> None:
        while True:
            state = conn.poll()
            if state == ext.POLL_OK:
                return
            if state == ext.POLL_READ:
                wait_read(conn.fileno(), timeout=60)
            elif state == ext.POLL_WRITE:
                wait_write(conn.fileno(), timeout=60)
            else:
                raise psycopg2.OperationalError(f"unexpected connection state {state}")

    ext.set_wait_callback(wait)


class StoredScores:
    """This run's rows in ``scores``, each reported once as an ``e2e`` request.

    The latency is ``written_at - produced_at`` of the row: Kafka's record timestamp (the load
    test's clock when it produced the transaction) to the writer's transaction in PostgreSQL.
    Rows are found by their id prefix above the highest ``id`` at the start. Identity values
    are taken at insert and become visible at commit, so with several writers a lower id can
    appear after a higher one: each poll reads again the ids of the last ``WINDOW_S`` seconds
    (skipping rows already reported), and the drain ends with one scan over the whole run.
    """

    POLL_S = 1.0
    WINDOW_S = 10.0
    QUERY = (
        "SELECT id, produced_at IS NOT NULL,"
        " 1000 * EXTRACT(EPOCH FROM (written_at - produced_at))::float8"
        " FROM scores WHERE id > %s AND transaction_id LIKE %s ORDER BY id"
    )

    def __init__(self, environment: Any, dsn: str, prefix: str) -> None:
        self.environment = environment
        self.dsn = dsn
        self.like = prefix + "%"
        self.conn: Any = None
        self.start_id = 0
        self.seen: set[int] = set()
        self.marks: deque[tuple[float, int]] = deque()  # (poll time, highest id seen by then)
        self.greenlet: Any = None

    def _connect(self) -> Any:
        import psycopg2

        if self.conn is None or self.conn.closed:
            self.conn = psycopg2.connect(self.dsn, application_name="fraudstream-loadtest")
            self.conn.autocommit = True
            with self.conn.cursor() as cur:
                cur.execute("SET statement_timeout = '30s'")
        return self.conn

    def start(self) -> None:
        try:
            with self._connect().cursor() as cur:
                cur.execute("SELECT coalesce(max(id), 0) FROM scores")
                self.start_id = cur.fetchone()[0]
        except Exception as err:  # the prefix alone still finds the rows, only slower
            log.warning("end-to-end: cannot read scores yet (%s); scanning the whole table", err)
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            self.poll_safely()
            gevent.sleep(self.POLL_S)

    def poll_safely(self, full: bool = False) -> None:
        try:
            self.poll(full)
        except Exception as err:  # PostgreSQL away for a moment: try again at the next poll
            log.warning("end-to-end: reading scores failed: %s", err)
            if self.conn is not None:
                self.conn.close()

    def poll(self, full: bool = False) -> None:
        now = time.monotonic()
        while len(self.marks) > 1 and self.marks[1][0] <= now - self.WINDOW_S:
            self.marks.popleft()
        low = self.start_id
        if not full and self.marks and self.marks[0][0] <= now - self.WINDOW_S:
            low = self.marks[0][1]
        with self._connect().cursor() as cur:
            cur.execute(self.QUERY, (low, self.like))
            rows = cur.fetchall()
        fire = self.environment.events.request.fire
        for row_id, produced, latency_ms in rows:
            if row_id in self.seen:
                continue
            self.seen.add(row_id)
            fire(
                request_type=gate.E2E,
                name=E2E_NAME,
                # clocks of the producer and the database may differ by a little: never negative
                response_time=max(0.0, latency_ms) if produced else None,
                response_length=0,
                exception=None if produced else RuntimeError("stored without produced_at"),
                context={},
            )
        highest = max([row[0] for row in rows] + [self.marks[-1][1] if self.marks else low])
        self.marks.append((now, highest))

    def drain(self, expected: int, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for ``expected`` rows; report the ones still missing."""
        if self.greenlet is not None:
            self.greenlet.kill(block=True)
        deadline = time.monotonic() + timeout_s
        while len(self.seen) < expected and time.monotonic() < deadline:
            self.poll_safely()
            if len(self.seen) < expected:
                gevent.sleep(0.5)
        self.poll_safely(full=True)
        missing = expected - len(self.seen)
        if missing > 0:
            log.error("end-to-end: %d transactions not stored in %gs", missing, timeout_s)
        for _ in range(max(0, missing)):
            self.environment.events.request.fire(
                request_type=gate.E2E,
                name=E2E_NAME,
                response_time=None,
                response_length=0,
                exception=RuntimeError(f"not stored within {timeout_s:g} s after the run"),
                context={},
            )
        if self.conn is not None:
            self.conn.close()


_stored: StoredScores | None = None


@events.test_start.add_listener
def _on_test_start(environment: Any, **_kwargs: Any) -> None:
    global _stored
    _paused.clear()
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    # a new id for every run; the master hands it to its workers with the spawn messages
    environment.parsed_options.run_id = uuid.uuid4().hex[:10]
    if KafkaUser not in environment.user_classes:
        return
    from fraudstream.settings import DatabaseSettings

    dsn = DatabaseSettings().database_url
    if not dsn:
        log.error("KafkaUser needs DATABASE_URL to measure end to end; the gate will fail")
        return
    _green_psycopg2()
    _stored = StoredScores(environment, dsn, id_prefix(environment.parsed_options.run_id))
    _stored.start()


# --------------------------------------------------------------------------- verdict


def _produced(stats: Any) -> int:
    """Transactions Kafka acknowledged (workers' figures are already merged on the master)."""
    return sum(
        e.num_requests - e.num_failures for e in stats.entries.values() if e.method == gate.KAFKA
    )


@events.quitting.add_listener
def _on_quitting(environment: Any, **_kwargs: Any) -> None:
    close_producer()
    if isinstance(environment.runner, WorkerRunner):
        environment.process_exit_code = 0  # the master decides
        return
    opts = environment.parsed_options
    if opts is None:
        return
    if _stored is not None:
        _stored.drain(_produced(environment.stats), opts.drain_s)
    users = opts.num_users or getattr(environment.runner, "target_user_count", 0) or 0
    limits = gate.Limits(
        target_rate=users * opts.rate_per_user,
        http_p99_ms=opts.p99_ms,
        e2e_p99_ms=opts.e2e_p99_ms,
    )
    exceptions = sum(e["count"] for e in environment.runner.exceptions.values())
    result = gate.summarize(environment.stats.entries.values(), limits, exceptions=exceptions)
    result["users"] = users
    result["rate_per_user"] = opts.rate_per_user
    result["run_id"] = opts.run_id
    line = json.dumps(result, sort_keys=True)
    print(gate.RESULT_PREFIX + line, flush=True)
    if opts.result_file:
        with open(opts.result_file, "w") as out:
            out.write(line + "\n")
    if result["passed"]:
        log.info("load test passed: %.1f/s of %g/s", result["rate"], limits.target_rate)
    else:
        log.error("load test failed: %s", "; ".join(result["problems"]))
    environment.process_exit_code = 0 if result["passed"] else 1
