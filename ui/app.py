"""fraudstream analyst page: upload a CSV, see its flagged transactions; watch the latest frauds.

Run: ``streamlit run ui/app.py`` with KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL pointing at a
running pipeline (``make up`` prints both; ``make ui`` uses them). An upload goes through the
real pipeline: the rows are validated by the shared loader, produced to the ``transactions``
topic by the same code as ``fraudstream replay``, scored by the bridge and the scorer, and read
back from the ``scores`` table. Names, streets and home coordinates are never shown or stored.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from fraudstream.loader import DataError, load_csv
from fraudstream.results import latest_frauds, latest_scores, reasons_text, scores_for
from fraudstream.settings import DatabaseSettings, KafkaSettings, UiSettings

MAX_ERRORS_SHOWN = 200
SHOWN = ["event_time", "merchant", "category", "amount", "score", "reasons", "transaction_id"]


def _table(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["reasons"] = out["reasons"].map(reasons_text)
    return out[SHOWN]


def _send(frame: pd.DataFrame, kafka: KafkaSettings) -> list[str]:
    """Produce the rows to the transactions topic; return their transaction ids: the file's
    own, or derived from the content, so the same file sent again is scored once."""
    from fraudstream.identity import frame_transaction_ids
    from fraudstream.kafka_runner import make_producer
    from fraudstream.replay import replay_frame

    frame = frame.assign(transaction_id=frame_transaction_ids(frame))
    producer = make_producer(kafka.kafka_bootstrap_servers)
    try:
        result = replay_frame(frame, producer, kafka.topic_transactions)
    finally:
        producer.close()
    if result.failed or result.rejected:
        st.warning(f"{result.rejected} rows rejected, {result.failed} not delivered to Kafka")
    return list(frame["transaction_id"])


def _wait_for_scores(dsn: str, ids: list[str], timeout: float) -> pd.DataFrame:
    bar = st.progress(0.0, text="scoring ...")
    deadline = time.monotonic() + timeout
    found = scores_for(dsn, ids)
    while len(found) < len(ids) and time.monotonic() < deadline:
        bar.progress(len(found) / len(ids), text=f"scored {len(found):,} of {len(ids):,}")
        time.sleep(0.5)
        found = scores_for(dsn, ids)
    bar.progress(1.0, text=f"scored {len(found):,} of {len(ids):,}")
    return found


def upload_section(kafka: KafkaSettings, dsn: str, ui: UiSettings) -> None:
    st.header("Score a CSV")
    st.caption("TETA or Kaggle column names; a `target` column is ignored.")
    upload = st.file_uploader("Transactions CSV", type=["csv"])
    if upload is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.csv"
        path.write_bytes(upload.getvalue())
        try:
            loaded = load_csv(path)
        except DataError as err:
            st.error(f"Cannot read {upload.name}: {str(err).replace(str(path), upload.name)}")
            return
    frame = loaded.frame
    skipped = len({e.line for e in loaded.errors})
    st.write(f"**{len(frame):,}** valid rows, **{skipped:,}** rejected ({loaded.shape} shape).")
    if loaded.errors:
        with st.expander(f"Rejected rows ({skipped:,})", expanded=True):
            shown = loaded.errors[:MAX_ERRORS_SHOWN]
            st.table(pd.DataFrame([vars(e) for e in shown]).set_index("line"))
            if len(loaded.errors) > len(shown):
                st.caption(f"... and {len(loaded.errors) - len(shown):,} more problems")
    if len(frame) > ui.ui_max_rows:
        st.error(f"{len(frame):,} rows is more than this page scores at once ({ui.ui_max_rows:,}).")
        return
    if not st.button(f"Score {len(frame):,} transactions", type="primary"):
        return
    ids = _send(frame, kafka)
    scored = _wait_for_scores(dsn, ids, ui.ui_result_timeout_s)
    if len(scored) < len(ids):
        st.error(
            f"only {len(scored):,} of {len(ids):,} scores arrived within "
            f"{ui.ui_result_timeout_s:.0f} s; is the pipeline running?"
        )
    flagged = scored[scored["fraud_flag"]].sort_values("score", ascending=False)
    left, middle, right = st.columns(3)
    left.metric("scored", f"{len(scored):,}")
    middle.metric("flagged as fraud", f"{len(flagged):,}")
    right.metric("flag rate", f"{len(flagged) / max(len(scored), 1):.2%}")
    st.subheader("Flagged transactions")
    st.dataframe(_table(flagged), hide_index=True)
    st.download_button(
        "Download all scores (CSV)",
        _table(scored).to_csv(index=False).encode(),
        file_name="scores.csv",
        mime="text/csv",
    )


def live_section(dsn: str) -> None:
    st.header("Latest results")
    st.button("Refresh")
    st.subheader("10 latest frauds")
    st.dataframe(_table(latest_frauds(dsn, 10)), hide_index=True)
    with st.expander("Last 100 scores"):
        st.dataframe(_table(latest_scores(dsn, 100)), hide_index=True)


def main() -> None:
    st.set_page_config(page_title="fraudstream", layout="wide")
    st.title("fraudstream: flagged card transactions")
    kafka, dsn, ui = KafkaSettings(), DatabaseSettings().database_url, UiSettings()
    if not dsn:
        st.error("DATABASE_URL is not set: this page reads results from PostgreSQL.")
        return
    upload_section(kafka, dsn, ui)
    live_section(dsn)


main()
