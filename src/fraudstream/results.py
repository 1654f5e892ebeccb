"""Read side of the ``scores`` table: what the analyst page and tests ask of the results.

Every column of ``scores`` (:data:`fraudstream.scored_transaction.TABLE_COLUMNS`: the result
contract's fields, the row id and ``written_at``; no personal data is ever stored there); queries
are cheap thanks to the primary key and the partial index of flagged rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from fraudstream.database import connect
from fraudstream.scored_transaction import TABLE_COLUMNS

_SELECT = ", ".join(TABLE_COLUMNS)


def _query(dsn: str, sql: str, params: Sequence | None = None) -> pd.DataFrame:
    with connect(dsn, application_name="fraudstream-ui") as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
        columns = [d.name for d in cur.description]
    conn.close()
    frame = pd.DataFrame(rows, columns=columns)
    if "amount" in frame:
        frame["amount"] = frame["amount"].astype(float)
    return frame


def latest_frauds(dsn: str, limit: int = 10) -> pd.DataFrame:
    """The most recently written flagged transactions, newest first (the partial index
    ``scores_fraud_recent``, as the view ``scores_recent_fraud``)."""
    return _query(
        dsn, f"SELECT {_SELECT} FROM scores WHERE fraud_flag ORDER BY id DESC LIMIT %s", (limit,)
    )


def latest_scores(dsn: str, limit: int = 100) -> pd.DataFrame:
    """The most recently written scores, newest first."""
    return _query(dsn, f"SELECT {_SELECT} FROM scores ORDER BY id DESC LIMIT %s", (limit,))


def scores_for(dsn: str, transaction_ids: Sequence[str]) -> pd.DataFrame:
    """The stored scores of these transactions (those written so far), in no particular order."""
    if not transaction_ids:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    return _query(
        dsn,
        f"SELECT {_SELECT} FROM scores WHERE transaction_id = ANY(%s)",
        (list(transaction_ids),),
    )


def reasons_text(reasons: list[dict] | None) -> str:
    """'amount_vs_mean=12.3, hour=23' for a table cell."""
    return ", ".join(f"{r['feature']}={r['value']}" for r in reasons or [])
