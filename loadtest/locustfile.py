"""Locust load test of the fraud scorer: single transactions on ``POST /score`` at a fixed rate.

    make serve                                            # a scorer on :3000 (other terminal)
    .venv/bin/locust -f loadtest/locustfile.py --config loadtest/locust.conf
    .venv/bin/locust -f loadtest/locustfile.py --config loadtest/locust.conf \\
        --host http://127.0.0.1:3000 --users 40 --run-time 60s     # flags override the file

``locust.conf`` runs headless: 40 users at 10 requests/s each (400/s, the system target) for
60 s. Payloads are simulated transactions (``fraudstream.simulator``), each sent with a fresh
``transaction_id``. When Locust quits, the run fails (exit code 1) if any request failed, if the
achieved rate is below 95 % of USERS x 10 /s, or if p99 latency is above ``LOCUST_P99_MS``
(default 50 ms). For rates far above the target use ``loadtest/bench_scorer.py``, whose load
generator costs much less CPU than Locust on a small machine.
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from datetime import date

from locust import FastHttpUser, constant_throughput, events, task

PER_USER_RATE = 10.0  # requests per second per simulated user
P99_LIMIT_MS = float(os.environ.get("LOCUST_P99_MS", "50"))


def _payloads(count: int = 20_000) -> list[str]:
    from fraudstream.simulator import simulate

    frame = simulate(150, date(2020, 7, 1), date(2020, 9, 30), seed=5)
    frame = frame.drop(columns=["target"]).sort_values("transaction_time").head(count)
    frame["transaction_time"] = frame["transaction_time"].dt.strftime("%Y-%m-%d %H:%M:%S")
    return [json.dumps(row) for row in frame.to_dict("records")]


PAYLOADS = _payloads()
RUN = uuid.uuid4().hex[:8]
COUNTER = itertools.count()


class ScorerUser(FastHttpUser):
    """A source of single transactions (as the Kafka bridge's fallback or an online caller)."""

    wait_time = constant_throughput(PER_USER_RATE)

    @task
    def score(self) -> None:
        n = next(COUNTER)
        body = PAYLOADS[n % len(PAYLOADS)]
        body = '{"transaction_id": "locust-%s-%d", %s' % (RUN, n, body[1:])  # noqa: UP031
        with self.client.post(
            "/score",
            data=body,
            headers={"Content-Type": "application/json"},
            name="/score",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
            elif '"score"' not in resp.text:
                resp.failure("no score in the answer")


@events.quitting.add_listener
def _check_targets(environment, **_kwargs) -> None:
    stats = environment.stats.total
    users = environment.parsed_options.num_users if environment.parsed_options else 0
    expected = users * PER_USER_RATE
    p99 = stats.get_response_time_percentile(0.99) or 0.0
    rate = stats.total_rps
    problems = []
    if stats.num_failures:
        problems.append(f"{stats.num_failures} failed requests")
    if expected and rate < 0.95 * expected:
        problems.append(f"achieved {rate:.0f}/s, below 95 % of {expected:.0f}/s")
    if p99 > P99_LIMIT_MS:
        problems.append(f"p99 {p99:.0f} ms above {P99_LIMIT_MS:.0f} ms")
    print(
        f"scorer load test: {stats.num_requests} requests, {stats.num_failures} failures, "
        f"{rate:.0f}/s, p50 {stats.get_response_time_percentile(0.5):.0f} ms, "
        f"p95 {stats.get_response_time_percentile(0.95):.0f} ms, p99 {p99:.0f} ms"
    )
    if problems:
        print("targets missed: " + "; ".join(problems))
        environment.process_exit_code = 1
    else:
        environment.process_exit_code = 0
