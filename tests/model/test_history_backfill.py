"""``fraudstream history backfill``: a PostgreSQL history warmed up from past files gives the
scorer the features it would have computed after seeing the same past transactions live."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import psycopg2
import pytest

from fraudstream.cli import main
from fraudstream.features import HISTORY_FEATURES, feature_names
from fraudstream.history import InMemoryHistoryStore, PostgresHistoryStore
from fraudstream.identity import frame_transaction_ids
from fraudstream.loader import load_csv, to_transactions
from fraudstream.scoring import Scorer
from fraudstream.simulator import simulate, write_csv

pytestmark = pytest.mark.integration
BATCH = 100


def replayed(path: Path) -> list:
    """The transactions of a file as replay sends them (ids derived per file)."""
    frame = load_csv(path).frame
    return to_transactions(frame.assign(transaction_id=frame_transaction_ids(frame)))


def history_rows(scorer: Scorer, transactions: list) -> np.ndarray:
    """History features of ``transactions`` scored in batches, as the bridge sends them."""
    names = scorer.feature_names
    columns = [names.index(h) for h in HISTORY_FEATURES]
    rows = []
    for start in range(0, len(transactions), BATCH):
        rows.extend(scorer.features(transactions[start : start + BATCH])[1][:, columns])
    return np.asarray(rows, dtype=float)


def feature_scorer(store) -> Scorer:  # noqa: ANN001 - a history store
    return Scorer(None, {"feature_names": feature_names(), "threshold": 0.5}, store)


def card_counts(url: str) -> int:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT sum((state::jsonb->>'n')::int) FROM card_history")
        total = cur.fetchone()[0]
    conn.close()
    return int(total or 0)


def test_backfilled_history_gives_the_features_of_a_scorer_that_saw_the_past_live(
    pg_url: str, tmp_path: Path, capsys
):
    frame = simulate(25, date(2019, 11, 1), date(2019, 12, 15), seed=5, episodes_per_year=6)
    times = frame["transaction_time"]
    parts = {
        "early": frame[times < "2019-11-16"],
        "late": frame[(times >= "2019-11-16") & (times < "2019-12-01")],
        "now": frame[times >= "2019-12-01"],
    }
    paths = {name: tmp_path / f"{name}.csv" for name in parts}
    for name, part in parts.items():
        write_csv(part, str(paths[name]))
    now = replayed(paths["now"])
    # a card seen only through a fraud episode in the present (a dormant card) has no past
    holder = ["name_1", "name_2", "street"]
    past_cards = set(frame.loc[times < "2019-12-01", holder].itertuples(index=False, name=None))
    has_past = np.array([(t.name_1, t.name_2, t.street) in past_cards for t in now])
    assert has_past.mean() > 0.8

    # live: a scorer that saw the past files replayed, then the present
    live = feature_scorer(InMemoryHistoryStore())
    for name in ("early", "late"):
        history_rows(live, replayed(paths[name]))
    expected = history_rows(live, now)

    # a new deployment: the past backfilled from the files (given in any order), then the present
    past = len(parts["early"]) + len(parts["late"])
    argv = ["history", "backfill", str(paths["late"]), str(paths["early"])]
    assert main([*argv, "--database-url", pg_url, "--batch-size", "97"]) == 0
    out = capsys.readouterr().out
    assert f"backfilled {past:,} transaction(s) of {len(past_cards)} card(s)" in out
    assert card_counts(pg_url) == past
    assert main([*argv, "--database-url", pg_url]) == 0  # again: the ids are known, no change
    assert card_counts(pg_url) == past
    store = PostgresHistoryStore(pg_url)
    try:
        warmed = history_rows(feature_scorer(store), now)
    finally:
        store.close()
    np.testing.assert_array_equal(warmed, expected)

    # without the backfill every card would look new at first
    cold = history_rows(feature_scorer(InMemoryHistoryStore()), now)
    n_prev = HISTORY_FEATURES.index("h_n_prev")
    assert (cold[has_past, n_prev] < expected[has_past, n_prev]).all()
