"""Per-card history: state size, PostgreSQL apply latency, bounded growth, in-memory footprint.

    .venv/bin/python loadtest/bench_history.py                 # PostgreSQL: $DATABASE_URL, or a
                                                               # local one (pgserver) started here
    .venv/bin/python loadtest/bench_history.py --no-postgres   # sizes and memory only

Prints figures; asserts nothing (wall times on a shared machine are noisy).

1. **State size** of a heavy card: 2,000 transactions in a week (one every 302.4 s, amounts
   log-normal, random categories, merchants drawn from 700), fed for ``--weeks`` (3) weeks:
   ``len(CardState.to_json())`` at the end of each day, the largest after the first week and at
   the end (no growth once the window is full). Times in whole seconds (the data contract's
   'YYYY-MM-DD HH:MM:SS'), and once more with microseconds (the longest JSON numbers).
2. **PostgresHistoryStore.apply** for single transactions of that card (one per call, as a
   lone ``POST /score``): p50 / p99 / max over the calls after the first week (state full), and
   the stored row (``octet_length`` of the text, ``pg_column_size`` after TOAST compression).
3. **In-memory store** (:class:`fraudstream.history.InMemoryHistoryStore`): Python memory
   (tracemalloc) per card, for simulated holders (a month of transactions each) and for heavy
   cards, and per remembered transaction id; the RSS growth of a store filled to the defaults
   of ``HISTORY_MAX_CARDS`` and ``HISTORY_MAX_IDS``.

Measured on the 2-core development machine (shared, load average 4-7): the heavy card's state
6.7 kB of JSON after the first week and 6.7 kB two weeks later (7.7 kB with microsecond times;
200 transactions and 100 merchants kept), 3.6 kB stored after compression; ``apply`` p50 2.4 ms,
p99 5.2 ms. Before the caps (the same run on the previous code): 58 kB of JSON (2,000
transactions, 700 merchants), 24.9 kB stored, p50 13.0 ms, p99 38.5 ms. In memory: 4.5 kB per
simulated card, 26.6 kB per heavy card, 0.7 kB per remembered id; filled to the defaults
(20,000 cards, 200,000 ids) the process grew by 251 MB RSS.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import date, datetime
from pathlib import Path

from fraudstream import features
from fraudstream.features import CardState, merchant_code

WEEK_S = 7 * 86_400
PER_WEEK = 2_000


def heavy_events(weeks: int, micro: bool, seed: int = 1) -> list[tuple]:
    """(t, amount, category, merchant, hour) of a card with PER_WEEK transactions a week."""
    rng = random.Random(seed)
    merchants = [merchant_code(f"fraud_merchant_{i}") for i in range(700)]
    start = datetime(2020, 7, 6).timestamp()
    gap = WEEK_S / PER_WEEK
    out = []
    for i in range(weeks * PER_WEEK):
        t = float(int(start + i * gap))
        if micro:
            t += rng.randrange(1, 1_000_000) / 1e6
        hour = int((t % 86_400) // 3600)
        amount = round(min(rng.lognormvariate(3.5, 1.2), 20_000.0), 2)
        out.append((t, amount, rng.randrange(14), rng.choice(merchants), hour))
    return out


def bench_size(weeks: int) -> None:
    caps = getattr(features, "MAX_RECENT", None), getattr(features, "MAX_MERCHANTS", None)
    print(f"1. state size, {PER_WEEK:,} transactions a week for {weeks} weeks "
          f"(caps: recent {caps[0]}, merchants {caps[1]})")  # fmt: skip
    for micro in (False, True):
        state = CardState()
        events = heavy_events(weeks, micro)
        per_day = PER_WEEK // 7
        sizes = []
        for i, event in enumerate(events, 1):
            state.step(*event)
            if i % per_day == 0:
                sizes.append(len(state.to_json()))
        after_week = sizes[7:]
        kind = "microsecond times" if micro else "whole-second times"
        print(
            f"   {kind}: JSON {sizes[6]:,} B after the first week, largest after it"
            f" {max(after_week):,} B, at the end {sizes[-1]:,} B; kept transactions"
            f" {len(state.ts)}, merchants {len(state.merchants)}"
        )
        print("   end of each day (B):", " ".join(f"{s:,}" for s in sizes))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_postgres(dsn: str, weeks: int) -> None:
    from fraudstream.database import connect
    from fraudstream.history import PostgresHistoryStore

    store = PostgresHistoryStore(dsn)
    key = f"bench-{os.getpid()}-{time.time_ns()}"
    events = heavy_events(weeks, micro=False, seed=2)
    timings = []
    try:
        for i, (t, amount, cat, merchant, hour) in enumerate(events):
            started = time.perf_counter()
            store.apply([f"{key}-{i}"], [(key, t, amount, cat, merchant, hour)])
            timings.append((time.perf_counter() - started) * 1000)
    finally:
        store.close()
    full = timings[PER_WEEK:]
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT octet_length(state), pg_column_size(state) FROM card_history"
            " WHERE card_key = %s",
            (key,),
        )
        length, stored = cur.fetchone()
        cur.execute("DELETE FROM card_history_seen WHERE card_key = %s", (key,))
        cur.execute("DELETE FROM card_history WHERE card_key = %s", (key,))
    conn.close()
    print(f"2. PostgresHistoryStore.apply, one transaction per call, {len(full):,} calls with "
          f"the state full: p50 {statistics.median(full):.2f} ms, p99 "
          f"{percentile(full, 0.99):.2f} ms, max {max(full):.2f} ms (first week: p50 "
          f"{statistics.median(timings[:PER_WEEK]):.2f} ms)")  # fmt: skip
    print(f"   the row: state {length:,} B of text, {stored:,} B stored (pg_column_size)")


def _measure(build) -> tuple[int, object]:  # noqa: ANN001 - a callable
    """(Python bytes allocated by build() and still held, what it returned)."""
    import gc

    gc.collect()
    tracemalloc.start()
    kept = build()
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return traced, kept


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_memory(customers: int) -> None:
    import gc

    from fraudstream.features import events_from_frame, run_events
    from fraudstream.history import InMemoryHistoryStore
    from fraudstream.settings import HistorySettings
    from fraudstream.simulator import simulate

    frame = simulate(customers, date(2019, 11, 1), date(2019, 11, 30), seed=3)
    events = events_from_frame(frame.sort_values("transaction_time", kind="stable"))
    ids = [f"{i:08x}-0000-8000-8000-{i:012x}" for i in range(len(events))]  # UUID-shaped

    def build_states() -> dict[str, CardState]:
        states: dict[str, CardState] = {}
        run_events(events, states)
        return states

    traced, states = _measure(build_states)
    n_cards = len(states)
    typical = traced / n_cards
    json_kb = sum(len(s.to_json()) for s in states.values()) / n_cards / 1024
    print(f"3. in-memory store: {n_cards:,} simulated cards, a month each "
          f"({len(events) / n_cards:.0f} transactions a card): {typical / 1024:.1f} kB of "
          f"Python memory per card (JSON {json_kb:.1f} kB)")  # fmt: skip

    heavy = CardState()
    for event in heavy_events(2, micro=False):
        heavy.step(*event)
    text = heavy.to_json()
    copies = 1000
    traced, kept = _measure(lambda: [CardState.from_json(text) for _ in range(copies)])
    del kept
    full = traced / copies
    print(f"   heavy card ({PER_WEEK:,} a week, state full): {full / 1024:.1f} kB per card "
          f"(JSON {len(text) / 1024:.1f} kB)")  # fmt: skip

    def with_ids() -> InMemoryHistoryStore:
        store = InMemoryHistoryStore(max_ids=len(ids) + 1, max_cards=n_cards + 1)
        for begin in range(0, len(events), 500):
            store.apply(ids[begin : begin + 500], events[begin : begin + 500])
        return store

    traced_all, store = _measure(with_ids)
    # + the id string itself (made before the measurement)
    per_id = (traced_all - typical * n_cards) / len(ids) + sys.getsizeof(ids[0])
    print(f"   per remembered transaction id (UUID + its 19 features): {per_id:.0f} B")

    # RSS of a store filled to the default caps: simulated cards (copies under new keys) and
    # remembered ids with feature tuples of their own (new float objects, as scoring makes)
    s = HistorySettings()
    samples = [
        (state.to_json(), store._seen[tx_id])
        for (tx_id, state) in zip(ids, states.values(), strict=False)
    ]
    del store, states
    gc.collect()
    rss0 = _rss()
    filled = InMemoryHistoryStore(max_ids=s.history_max_ids, max_cards=s.history_max_cards)
    for i in range(s.history_max_cards):
        filled.states[f"card-{i:027d}"] = CardState.from_json(samples[i % len(samples)][0])
    for i in range(s.history_max_ids):
        filled._seen[f"{i:08x}-1111-8000-8000-{i:012x}"] = tuple(
            [v + 0.0 for v in samples[i % len(samples)][1]]
        )
    grown = (_rss() - rss0) / 2**20
    cards_mb = s.history_max_cards * typical / 2**20
    worst_mb = s.history_max_cards * full / 2**20
    ids_mb = s.history_max_ids * per_id / 2**20
    print(f"   defaults HISTORY_MAX_CARDS={s.history_max_cards:,}, HISTORY_MAX_IDS="
          f"{s.history_max_ids:,}: filled with simulated cards, the process grew by "
          f"{grown:.0f} MB RSS (Python memory: cards {cards_mb:.0f} MB, {worst_mb:.0f} MB if "
          f"every card were heavy; ids {ids_mb:.0f} MB)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=3)
    parser.add_argument("--customers", type=int, default=1000, help="simulated cards (part 3)")
    parser.add_argument("--no-postgres", action="store_true", help="skip part 2")
    args = parser.parse_args()
    bench_size(args.weeks)
    if not args.no_postgres:
        dsn = os.environ.get("DATABASE_URL", "")
        if dsn:
            bench_postgres(dsn, args.weeks)
        else:
            from fraudstream.local.postgres import PostgresServer

            with tempfile.TemporaryDirectory(prefix="bench-history-") as folder:
                server = PostgresServer(Path(folder)).start()
                try:
                    bench_postgres(server.url, args.weeks)
                finally:
                    server.stop()
    bench_memory(args.customers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
