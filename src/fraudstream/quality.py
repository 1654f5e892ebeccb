"""Live quality per model version: ``scores`` x ``labels``, as gauges and ``fraudstream report``.

The transactions counted are those written to ``scores`` within a sliding window (the
``scores_written_at`` index finds them) that have a label; at most ``max_rows`` of them, the
most recently scored, so the query stays bounded however busy the pipeline is (and the
connection's ``DB_STATEMENT_TIMEOUT_MS`` bounds it in time). A label without a score yet is not
counted; it is once the score is written. Per ``model_version``, from the confusion matrix
(flagged = the score's ``fraud_flag``, fraud = the label's ``is_fraud``):

* recall = caught frauds / frauds (TP / (TP + FN))
* false-positive rate = flagged legitimate / legitimate (FP / (FP + TN))
* precision = caught frauds / flagged (TP / (TP + FP))
* alert rate = flagged / labelled ((TP + FP) / N)
* missed fraud amount = sum of the amounts of the frauds not flagged (USD)

A ratio whose denominator is 0 has no value (``None``: no series on ``/metrics``, ``-`` in the
report), never a division error. ``fraudstream labels consume`` refreshes the gauges every
``QUALITY_REFRESH_S`` (:class:`QualityRefresher`); ``fraudstream report --since 7d`` prints the
same figures as a table (``--json``: as JSON).

With a challenger in shadow (:mod:`fraudstream.shadow`), the same refresh compares it with the
champion on the labelled transactions both scored (``fraudstream_quality_shadow_*{role}``), and
``fraudstream report --shadow`` prints that comparison below the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)

QUALITY_SQL = """
WITH labelled AS (
    SELECT s.model_version, s.fraud_flag, s.amount, l.is_fraud
    FROM scores s JOIN labels l ON l.transaction_id = s.transaction_id
    WHERE s.written_at >= now() - make_interval(secs => %(window_s)s)
    ORDER BY s.written_at DESC
    LIMIT %(max_rows)s
)
SELECT model_version,
       count(*) FILTER (WHERE fraud_flag AND is_fraud),
       count(*) FILTER (WHERE fraud_flag AND NOT is_fraud),
       count(*) FILTER (WHERE NOT fraud_flag AND is_fraud),
       count(*) FILTER (WHERE NOT fraud_flag AND NOT is_fraud),
       coalesce(sum(amount) FILTER (WHERE NOT fraud_flag AND is_fraud), 0)
FROM labelled
GROUP BY model_version
ORDER BY model_version
"""


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or None when there is nothing to divide by."""
    return numerator / denominator if denominator else None


@dataclass(frozen=True)
class Quality:
    """One model version's confusion matrix over the labelled transactions, and its rates."""

    model_version: str
    true_positives: int  # flagged and fraud
    false_positives: int  # flagged, legitimate
    false_negatives: int  # not flagged, fraud
    true_negatives: int  # not flagged, legitimate
    missed_fraud_amount: float = 0.0  # USD of the false negatives

    @property
    def labelled(self) -> int:
        return self.alerts + self.false_negatives + self.true_negatives

    @property
    def frauds(self) -> int:
        return self.true_positives + self.false_negatives

    @property
    def alerts(self) -> int:
        return self.true_positives + self.false_positives

    @property
    def recall(self) -> float | None:
        return ratio(self.true_positives, self.frauds)

    @property
    def false_positive_rate(self) -> float | None:
        return ratio(self.false_positives, self.false_positives + self.true_negatives)

    @property
    def precision(self) -> float | None:
        return ratio(self.true_positives, self.alerts)

    @property
    def alert_rate(self) -> float | None:
        return ratio(self.alerts, self.labelled)

    def as_dict(self) -> dict[str, Any]:
        rates = ("recall", "precision", "false_positive_rate", "alert_rate")
        counts = ("labelled", "frauds", "alerts")
        return {
            **asdict(self),
            **{name: getattr(self, name) for name in counts},
            **{name: getattr(self, name) for name in rates},
        }


def query_quality(conn: Any, window_s: float, max_rows: int) -> list[Quality]:
    """Per model version, the transactions written to ``scores`` in the last ``window_s``
    seconds that have a label (the ``max_rows`` most recent at most)."""
    with conn.cursor() as cur:
        cur.execute(QUALITY_SQL, {"window_s": float(window_s), "max_rows": int(max_rows)})
        rows = cur.fetchall()
    conn.rollback()  # end the read-only transaction: no snapshot held between refreshes
    return [Quality(str(r[0]), *(int(v) for v in r[1:5]), float(r[5])) for r in rows]


# --------------------------------------------------------------------------- gauges


class QualityGauges:
    """The ``fraudstream_quality_*`` gauges, by ``model_version``. A value that does not exist
    (no fraud to recall, ...) or a model version no longer in the window has no series."""

    RATES = ("recall", "precision", "false_positive_rate", "alert_rate")

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Gauge

        reg = registry if registry is not None else REGISTRY
        helps = {
            "recall": "caught frauds / labelled frauds (TP / (TP + FN))",
            "precision": "caught frauds / flagged (TP / (TP + FP))",
            "false_positive_rate": "flagged legitimate / labelled legitimate (FP / (FP + TN))",
            "alert_rate": "flagged / labelled transactions ((TP + FP) / N)",
            "missed_fraud_amount": "USD of the labelled frauds not flagged (FN)",
            "labelled_transactions": "scored transactions with a label in the window",
            "labelled_frauds": "of them labelled fraud",
        }
        self.gauges = {
            name: Gauge(
                f"fraudstream_quality_{name}",
                f"{text}, scored in the quality window",
                ["model_version"],
                registry=reg,
            )
            for name, text in helps.items()
        }
        self.refreshed = Gauge(
            "fraudstream_quality_refreshed_timestamp_seconds",
            "when the quality gauges were last computed (Unix time)",
            registry=reg,
        )
        self._shown: dict[str, set[str]] = {name: set() for name in self.gauges}

    def update(self, qualities: list[Quality]) -> None:
        values: dict[str, dict[str, float]] = {name: {} for name in self.gauges}
        for q in qualities:
            for name in self.RATES:
                value = getattr(q, name)
                if value is not None:
                    values[name][q.model_version] = value
            values["missed_fraud_amount"][q.model_version] = q.missed_fraud_amount
            values["labelled_transactions"][q.model_version] = q.labelled
            values["labelled_frauds"][q.model_version] = q.frauds
        for name, gauge in self.gauges.items():
            for version in self._shown[name] - set(values[name]):
                gauge.remove(version)
            for version, value in values[name].items():
                gauge.labels(version).set(value)
            self._shown[name] = set(values[name])
        self.refreshed.set_to_current_time()


class ShadowQualityGauges:
    """``fraudstream_quality_shadow_*{role}``: the champion and the challenger on the same
    labelled transactions (:func:`fraudstream.shadow.compare`), so the model dashboard can put
    them side by side. No series while there is nothing to compare (no challenger)."""

    # gauge name -> field of fraudstream.shadow.ModelQuality
    RATES = {
        "recall": "recall",
        "false_positive_rate": "fpr",
        "precision": "precision",
        "pr_auc": "pr_auc",
    }

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Gauge

        reg = registry if registry is not None else REGISTRY
        self.gauges = {
            name: Gauge(
                f"fraudstream_quality_shadow_{name}",
                f"{name} at the model's operating threshold, on the labelled transactions both"
                " the champion and the challenger scored in the quality window",
                ["role"],
                registry=reg,
            )
            for name in self.RATES
        }
        self.compared = Gauge(
            "fraudstream_quality_shadow_labelled_transactions",
            "labelled transactions both the champion and the challenger scored in the window",
            registry=reg,
        )

    def update(self, comparison: Any) -> None:
        for role in ("champion", "challenger"):
            model = getattr(comparison, role)
            for name, field in self.RATES.items():
                value = getattr(model, field)
                if value is None:
                    with contextlib.suppress(KeyError):  # no series to remove
                        self.gauges[name].remove(role)
                else:
                    self.gauges[name].labels(role).set(value)
        self.compared.set(comparison.champion.transactions)


class QualityRefresher:
    """A thread that computes the quality every ``interval_s`` seconds into
    :class:`QualityGauges` on its own connection; a failed refresh is logged and tried again at
    the next one (the gauges keep their last values; ``..._refreshed_timestamp_seconds`` shows
    their age)."""

    def __init__(
        self,
        dsn: str,
        *,
        window_s: float,
        max_rows: int,
        interval_s: float,
        gauges: QualityGauges | None = None,
        shadow_gauges: ShadowQualityGauges | None = None,
    ) -> None:
        self.dsn = dsn
        self.window_s = window_s
        self.max_rows = max_rows
        self.interval_s = interval_s
        self.gauges = gauges or QualityGauges()
        self.shadow_gauges = shadow_gauges or ShadowQualityGauges()
        self.stop = threading.Event()
        self.conn: Any = None
        self.thread = threading.Thread(target=self._loop, name="quality", daemon=True)

    def start(self) -> QualityRefresher:
        self.thread.start()
        return self

    def refresh(self) -> list[Quality]:
        from fraudstream.database import connect
        from fraudstream.shadow import compare

        if self.conn is None or self.conn.closed:
            self.conn = connect(self.dsn, application_name="fraudstream-quality")
        qualities = query_quality(self.conn, self.window_s, self.max_rows)
        self.gauges.update(qualities)
        since = datetime.now(UTC) - timedelta(seconds=self.window_s)
        self.shadow_gauges.update(compare(self.conn, since, max_rows=self.max_rows))
        return qualities

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                qualities = self.refresh()
                log.debug("quality refreshed", extra={"model_versions": len(qualities)})
            except Exception as err:  # noqa: BLE001 - the next refresh tries again
                log.warning("quality refresh failed: %s", type(err).__name__)
                self._close_connection()
            self.stop.wait(self.interval_s)
        self._close_connection()

    def _close_connection(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):  # it is gone either way
                self.conn.close()
            self.conn = None

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)


# --------------------------------------------------------------------------- fraudstream report

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str) -> timedelta:
    """``30m``, ``12h``, ``7d`` (units s, m, h, d, w) as a timedelta; ValueError otherwise."""
    match = _DURATION.match(text or "")
    if not match or float(match.group(1)) <= 0:
        raise ValueError(
            f"{text!r} is not a duration: give a positive number and a unit, e.g. 30m, 12h or"
            " 7d (units: s, m, h, d, w)"
        )
    return timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])


def parse_since_argument(text: str) -> tuple[str, timedelta]:
    try:
        return text.strip(), parse_since(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def format_report(qualities: list[Quality], since: str, max_rows: int) -> str:
    """A readable table, one row per model version."""
    title = f"quality of the transactions scored in the last {since} that have a label"
    if not qualities:
        return f"{title}: none"
    head = (
        "model_version",
        "labelled",
        "frauds",
        "alerts",
        "recall",
        "precision",
        "false_pos_rate",
        "alert_rate",
        "missed_fraud_usd",
    )
    rows = [head] + [
        (
            q.model_version,
            f"{q.labelled:,}",
            f"{q.frauds:,}",
            f"{q.alerts:,}",
            _percent(q.recall),
            _percent(q.precision),
            _percent(q.false_positive_rate),
            _percent(q.alert_rate),
            f"{q.missed_fraud_amount:,.2f}",
        )
        for q in qualities
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    out = [f"{title}:", *lines]
    if sum(q.labelled for q in qualities) >= max_rows:
        out.append(f"(the {max_rows:,} most recently scored only: see --max-rows)")
    return "\n".join(out)


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        type=parse_since_argument,
        default=("7d", timedelta(days=7)),
        help="window of scored transactions, e.g. 30m, 12h, 7d (default: 7d)",
    )
    parser.add_argument(
        "--max-rows",
        type=int,
        default=None,
        help="most labelled transactions counted (default: $QUALITY_MAX_ROWS, 1,000,000)",
    )
    parser.add_argument(
        "--shadow",
        action="store_true",
        help="also compare the champion and the challenger on the same labelled transactions",
    )
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    parser.add_argument("--database-url", help="default: $DATABASE_URL")


def run_report(args: argparse.Namespace) -> int:
    from fraudstream.database import read_for_command
    from fraudstream.settings import LabelsSettings

    since, window = args.since
    max_rows = args.max_rows or LabelsSettings().quality_max_rows

    def read(conn: Any) -> tuple[list[Quality], Any]:
        qualities = query_quality(conn, window.total_seconds(), max_rows)
        if not args.shadow:
            return qualities, None
        from fraudstream.shadow import compare

        return qualities, compare(conn, datetime.now(UTC) - window, max_rows=max_rows)

    code, result = read_for_command(args.database_url, "report", "fraudstream-report", read)
    if result is None:
        return code
    qualities, shadow = result
    if args.json:
        rows = [q.as_dict() for q in qualities]
        print(
            json.dumps({"quality": rows, "shadow": shadow.as_dict()} if shadow else rows, indent=2)
        )
    else:
        print(format_report(qualities, since, max_rows))
        if shadow is not None:
            print(f"\nchampion vs challenger, {shadow.table()}")
    return 0
