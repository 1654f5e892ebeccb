"""Model features: one code path for training, evaluation and serving.

Two kinds of features:

* **stateless** ones, computed from the transaction alone (:func:`stateless_features`, vectorised
  over a frame of TETA columns);
* **per-card history** ones, computed causally from the earlier transactions of the same card
  holder (key = :func:`fraudstream.identity.card_key`) by :class:`CardState`. A state is fed one
  transaction at a time in time order; :meth:`CardState.step` returns the features of the
  transaction as seen *before* it and then adds it to the history.

The batch path (:func:`history_features`, used by training and evaluation) and the online path
(:class:`fraudstream.history.HistoryStore`, used by the scorer) both call ``CardState.step``, so
train and serve cannot disagree. Times are local times taken as naive timestamps; durations are
computed in seconds from their microsecond value.
"""

from __future__ import annotations

import json
import math
import zlib
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fraudstream.schema import CATEGORIES, TETA_COLUMNS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

HOUR = 3600.0
DAY = 24 * HOUR
WEEK = 7 * DAY
EPOCH = datetime(1970, 1, 1)
CATEGORY_INDEX: dict[str, int] = {name: i for i, name in enumerate(CATEGORIES)}

STATELESS_FEATURES: tuple[str, ...] = (
    "amount",
    "log_amount",
    "cat_id",
    "hour",
    "minute_of_day",
    "day_of_week",
    "is_night",
    "distance_km",
    "log_city_pop",
    "gender",
    "us_state",
)
CATEGORICAL_FEATURES: tuple[str, ...] = ("cat_id", "gender", "us_state")

HISTORY_FEATURES: tuple[str, ...] = (
    "h_n_prev",
    "h_n_1h",
    "h_n_24h",
    "h_n_7d",
    "h_amt_1h",
    "h_amt_24h",
    "h_amt_7d",
    "h_secs_since_prev",
    "h_amt_rel_mean",
    "h_amt_log_z",
    "h_cat_first",
    "h_cat_share",
    "h_cat_amt_rel",
    "h_merch_first",
    "h_new_merch_24h",
    "h_hour_share",
    "h_night_24h",
    "h_big_24h",
    "h_rate_per_day",
)
NAN = float("nan")
BIG = 3.0  # an amount over BIG x the holder's mean counts as big (h_big_24h)
# Per-card state bounds (see CardState): the most recent transactions kept per card ...
MAX_RECENT = 200
# ... and the most recently used merchants remembered per card (h_merch_first, h_new_merch_24h)
MAX_MERCHANTS = 100


def feature_names(history: bool = True) -> list[str]:
    return list(STATELESS_FEATURES) + (list(HISTORY_FEATURES) if history else [])


def to_seconds(value: datetime) -> float:
    """Seconds since 1970 of a naive local time (microsecond precision, same as the batch path)."""
    delta = value.replace(tzinfo=None) - EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return micros / 1e6


def merchant_code(name: str) -> int:
    """Stable small code of a merchant name (Python's ``hash`` differs between processes)."""
    return zlib.crc32(name.encode())


class CardState:
    """What the system remembers about one card holder: aggregates plus its recent transactions.

    ``step`` must see a card's transactions in time order; a late (out-of-order) transaction is
    handled: its windows only count transactions before it, the aggregates include everything
    seen so far. The per-transaction lists keep only the week before the latest time seen, so the
    state stays bounded whatever order times come in (a replayed file, a load test that wraps).

    The state is bounded in size too, whatever the card does. The JSON the PostgreSQL store reads
    and writes on every transaction of the card, measured by ``loadtest/bench_history.py`` for a
    card with 2,000 transactions a week: 6.7 kB (7.7 kB with microsecond times; at most ~8.5 kB
    with every amount near the 1,000,000 maximum); 58 kB without the caps, which made one
    ``apply`` of that card take p50 13 ms / p99 39 ms instead of 2.4 / 5.2 ms:

    * at most :data:`MAX_RECENT` (200) transactions are kept, the most recent ones. The 1 h and
      24 h windows stay exact while a card has fewer than 200 transactions within 24 h, the 7 d
      window while it has fewer within the week (about 29 a day, several times what a person
      spends; the simulated holders never get there). Beyond that the windows count only the
      200 most recent transactions, so ``h_n_7d`` (``h_n_24h``) stops at 200 and the amounts
      and flags of older transactions drop out: such a card is extreme on these features
      either way;
    * at most :data:`MAX_MERCHANTS` (100) merchants are remembered, the most recently used
      ones (in processing order). ``h_merch_first`` (and ``h_new_merch_24h``) mean "not among
      the holder's 100 most recently used merchants": a merchant last used before 100 others
      counts as new again. Categories are fixed-size counters and need no cap.

    Training and serving share this code (``step``), so the caps apply to both alike.
    """

    __slots__ = (
        "n",
        "sum_amt",
        "sum_log",
        "sum_log2",
        "last_t",
        "first_t",
        "ts",
        "amts",
        "newms",
        "nights",
        "bigs",
        "hours",
        "cat_n",
        "cat_sum",
        "merchants",
    )

    def __init__(self) -> None:
        self.n = 0
        self.sum_amt = 0.0
        self.sum_log = 0.0
        self.sum_log2 = 0.0
        self.last_t: float | None = None
        self.first_t: float | None = None
        self.ts: list[float] = []  # times of the last 7 days, sorted
        self.amts: list[float] = []
        self.newms: list[int] = []  # 1 if the transaction was at a new merchant
        self.nights: list[int] = []  # 1 if it was at night
        self.bigs: list[int] = []  # 1 if its amount was over BIG x the holder's mean before it
        self.hours = [0] * 24
        self.cat_n = [0] * len(CATEGORIES)
        self.cat_sum = [0.0] * len(CATEGORIES)
        # merchant codes, least recently used first (a dict keeps insertion order)
        self.merchants: dict[int, None] = {}

    def step(self, t: float, amount: float, cat: int, merchant: int, hour: int) -> tuple:
        """Features of this transaction from the history before it; then remember it."""
        n = self.n
        ts = self.ts
        last_t = self.last_t
        in_order = last_t is None or t >= last_t
        # the lists keep the week before the latest time seen, whatever order times come in
        cut = bisect_right(ts, (t if in_order else last_t) - WEEK)
        if cut:
            del ts[:cut]
            del self.amts[:cut]
            del self.newms[:cut]
            del self.nights[:cut]
            del self.bigs[:cut]
        end = len(ts) if in_order else bisect_right(ts, t)
        amts = self.amts
        i7 = bisect_right(ts, t - WEEK, 0, end)
        i24 = bisect_right(ts, t - DAY, i7, end)
        i1 = bisect_right(ts, t - HOUR, i24, end)
        log_amt = math.log1p(amount)
        new_merchant = merchant not in self.merchants
        night = hour >= 22 or hour < 4
        cat_n = self.cat_n[cat]
        if n:
            mean_log = self.sum_log / n
            var_log = max(self.sum_log2 / n - mean_log * mean_log, 0.0)
            hours = self.hours
            near = hours[hour] + hours[(hour + 1) % 24] + hours[(hour - 1) % 24]
            if end:
                since = t - ts[end - 1]
            elif last_t is not None and last_t <= t:
                since = t - last_t
            else:
                since = NAN
            features = (
                float(n),
                float(end - i1),
                float(end - i24),
                float(end - i7),
                sum(amts[i1:end]),
                sum(amts[i24:end]),
                sum(amts[i7:end]),
                since,
                amount * n / self.sum_amt,
                (log_amt - mean_log) / (math.sqrt(var_log) + 0.1) if n > 1 else NAN,
                0.0 if cat_n else 1.0,
                cat_n / n,
                amount * cat_n / self.cat_sum[cat] if cat_n else NAN,
                1.0 if new_merchant else 0.0,
                float(sum(self.newms[i24:end])),
                near / n,
                float(sum(self.nights[i24:end])),
                float(sum(self.bigs[i24:end])),
                n * DAY / max(t - self.first_t, DAY) if self.first_t is not None else NAN,
            )
        else:
            features = (
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                NAN,
                NAN,
                NAN,
                1.0,
                NAN,
                NAN,
                1.0,
                0.0,
                NAN,
                0.0,
                0.0,
                NAN,
            )
        # remember
        big = n > 0 and amount * n > BIG * self.sum_amt
        if not in_order and t <= last_t - WEEK:
            pass  # older than the kept week: counts in the aggregates only
        elif end == len(ts):
            ts.append(t)
            amts.append(amount)
            self.newms.append(1 if new_merchant else 0)
            self.nights.append(1 if night else 0)
            self.bigs.append(1 if big else 0)
        else:
            ts.insert(end, t)
            amts.insert(end, amount)
            self.newms.insert(end, 1 if new_merchant else 0)
            self.nights.insert(end, 1 if night else 0)
            self.bigs.insert(end, 1 if big else 0)
        if len(ts) > MAX_RECENT:  # keep the most recent MAX_RECENT (the list is in time order)
            drop = len(ts) - MAX_RECENT
            del ts[:drop]
            del amts[:drop]
            del self.newms[:drop]
            del self.nights[:drop]
            del self.bigs[:drop]
        if self.first_t is None or t < self.first_t:
            self.first_t = t
        self.n = n + 1
        self.sum_amt += amount
        self.sum_log += log_amt
        self.sum_log2 += log_amt * log_amt
        if last_t is None or t > last_t:
            self.last_t = t
        self.hours[hour] += 1
        self.cat_n[cat] = cat_n + 1
        self.cat_sum[cat] += amount
        merchants = self.merchants
        if not new_merchant:
            del merchants[merchant]  # re-added below: now the most recently used
        merchants[merchant] = None
        if len(merchants) > MAX_MERCHANTS:
            del merchants[next(iter(merchants))]
        return features

    # serialisation for the PostgreSQL store (JSON floats round-trip exactly)
    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "sum_amt": self.sum_amt,
            "sum_log": self.sum_log,
            "sum_log2": self.sum_log2,
            "last_t": self.last_t,
            "first_t": self.first_t,
            "ts": self.ts,
            "amts": self.amts,
            "newms": self.newms,
            "nights": self.nights,
            "bigs": self.bigs,
            "hours": self.hours,
            "cat_n": self.cat_n,
            "cat_sum": self.cat_sum,
            "merchants": list(self.merchants),  # least recently used first
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CardState:
        """The state ``to_dict`` gave (or its JSON, decoded); numbers are taken as they are.

        A state saved before the caps (:data:`MAX_RECENT`, :data:`MAX_MERCHANTS`) is cut to them
        (its merchants were saved sorted by code, not by use: the cut keeps an arbitrary 100).
        """
        state = cls()
        state.n = int(data["n"])
        state.sum_amt = float(data["sum_amt"])
        state.sum_log = float(data["sum_log"])
        state.sum_log2 = float(data["sum_log2"])
        state.last_t = None if data["last_t"] is None else float(data["last_t"])
        state.first_t = None if data["first_t"] is None else float(data["first_t"])
        state.ts = list(data["ts"])
        state.amts = list(data["amts"])
        state.newms = list(data["newms"])
        state.nights = list(data["nights"])
        state.bigs = list(data["bigs"])
        state.hours = list(data["hours"])
        state.cat_n = list(data["cat_n"])
        state.cat_sum = list(data["cat_sum"])
        state.merchants = dict.fromkeys(data["merchants"][-MAX_MERCHANTS:])
        drop = len(state.ts) - MAX_RECENT
        if drop > 0:
            for name in ("ts", "amts", "newms", "nights", "bigs"):
                del getattr(state, name)[:drop]
        return state

    def to_json(self) -> str:
        """Compact JSON of :meth:`to_dict` (what the PostgreSQL store keeps)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> CardState:
        return cls.from_dict(json.loads(text))


# (card key, seconds, amount, category index, merchant code, hour)
Event = tuple[str, float, float, int, int, int]


# The transaction columns feature code reads. Both paths hand the feature functions these as
# numpy arrays: training from a DataFrame (:func:`frame_columns`), serving straight from
# ``Transaction`` objects (:func:`transaction_columns`), so serving builds no DataFrame at all.
INPUT_COLUMNS: tuple[str, ...] = tuple(
    c for c in TETA_COLUMNS if c not in {"one_city", "post_code", "jobs"}
)
Columns = dict[str, "np.ndarray"]
_MICROS_PER_MINUTE = 60_000_000
_MICROS_PER_HOUR = 60 * _MICROS_PER_MINUTE
_MICROS_PER_DAY = 24 * _MICROS_PER_HOUR


def frame_columns(frame: pd.DataFrame) -> Columns:
    """The input columns of a frame of TETA columns (times as datetime64[us])."""
    cols = {c: frame[c].to_numpy() for c in INPUT_COLUMNS if c != "transaction_time"}
    cols["transaction_time"] = frame["transaction_time"].to_numpy(dtype="datetime64[us]")
    return cols


def transaction_columns(transactions: Sequence[Any]) -> Columns:
    """The input columns of ``Transaction`` objects (online path; no pandas)."""
    import numpy as np

    cols = {c: np.array([getattr(tx, c) for tx in transactions]) for c in INPUT_COLUMNS}
    cols["transaction_time"] = cols["transaction_time"].astype("datetime64[us]")
    return cols


def _clock(times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hour, minute, day of week with Monday = 0) of datetime64 times."""
    import numpy as np

    micros = times.astype("datetime64[us]").astype(np.int64)
    hour = (micros // _MICROS_PER_HOUR) % 24
    minute = (micros // _MICROS_PER_MINUTE) % 60
    day_of_week = (micros // _MICROS_PER_DAY + 3) % 7  # 1970-01-01 was a Thursday
    return hour, minute, day_of_week


def events_from_columns(cols: Columns) -> list[Event]:
    """History events of transactions given as input columns, in their order."""
    import numpy as np

    from fraudstream.identity import card_key

    times = cols["transaction_time"]
    seconds = (times.astype(np.int64) / 1e6).tolist()
    hours = _clock(times)[0].tolist()
    names = zip(
        cols["name_1"].tolist(), cols["name_2"].tolist(), cols["street"].tolist(), strict=True
    )
    key_cache: dict[tuple[str, str, str], str] = {}
    keys = []
    for triple in names:
        key = key_cache.get(triple)
        if key is None:
            key = key_cache[triple] = card_key(*triple)
        keys.append(key)
    merch = cols["merch"].tolist()
    merch_codes = {m: merchant_code(m) for m in set(merch)}
    merchants = [merch_codes[m] for m in merch]
    cats = [CATEGORY_INDEX[c] for c in cols["cat_id"].tolist()]
    amounts = cols["amount"].astype(np.float64).tolist()
    return list(zip(keys, seconds, amounts, cats, merchants, hours, strict=True))


def events_from_frame(frame: pd.DataFrame) -> list[Event]:
    """History events of a frame of TETA columns, in the frame's row order."""
    return events_from_columns(frame_columns(frame))


def run_events(events: Iterable[Event], states: dict[str, CardState]) -> list[tuple]:
    """Feed events (already in processing order) through per-card states; features per event."""
    out = []
    append = out.append
    get = states.get
    for key, t, amount, cat, merchant, hour in events:
        state = get(key)
        if state is None:
            state = states[key] = CardState()
        append(state.step(t, amount, cat, merchant, hour))
    return out


def processing_order(frame: pd.DataFrame) -> np.ndarray:
    """Row positions in time order (stable: ties keep the file order)."""
    return time_order(frame["transaction_time"].to_numpy())


def time_order(times: np.ndarray) -> np.ndarray:
    """Positions of ``times`` in time order (stable: ties keep their order)."""
    import numpy as np

    return np.argsort(times, kind="stable")


def history_features(
    frame: pd.DataFrame, states: dict[str, CardState] | None = None
) -> pd.DataFrame:
    """History features of every row, computed causally in time order (batch path).

    ``states`` may hold a warmed-up history (e.g. from an earlier period); it is updated.
    """
    import numpy as np
    import pandas as pd

    order = processing_order(frame)
    events = events_from_frame(frame)
    ordered = [events[i] for i in order]
    values = run_events(ordered, {} if states is None else states)
    array = np.empty((len(frame), len(HISTORY_FEATURES)), dtype=np.float64)
    if len(values):
        array[order] = np.asarray(values, dtype=np.float64)
    return pd.DataFrame(array, columns=list(HISTORY_FEATURES), index=frame.index)


def _haversine_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> Any:
    import numpy as np

    p1, l1, p2, l2 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (lat1, lon1, lat2, lon2))
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin((l2 - l1) / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def stateless_columns(cols: Columns) -> Columns:
    """Features of each transaction on its own (vectorised) from its input columns."""
    import numpy as np

    amount = cols["amount"].astype(np.float64)
    hour, minute, day_of_week = _clock(cols["transaction_time"])
    return {
        "amount": amount,
        "log_amount": np.log1p(amount),
        "cat_id": cols["cat_id"].astype(str).astype(object),
        "hour": hour.astype(np.float64),
        "minute_of_day": (hour * 60 + minute).astype(np.float64),
        "day_of_week": day_of_week.astype(np.float64),
        "is_night": ((hour >= 22) | (hour < 4)).astype(np.float64),
        "distance_km": _haversine_km(
            cols["lat"], cols["lon"], cols["merchant_lat"], cols["merchant_lon"]
        ),
        "log_city_pop": np.log1p(cols["population_city"].astype(np.float64)),
        "gender": cols["gender"].astype(str).astype(object),
        "us_state": cols["us_state"].astype(str).astype(object),
    }


def stateless_features(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`stateless_columns` of a frame of TETA columns, as a frame (batch path)."""
    import pandas as pd

    return pd.DataFrame(stateless_columns(frame_columns(frame)), index=frame.index)


def build_features(
    frame: pd.DataFrame,
    history: bool = True,
    states: dict[str, CardState] | None = None,
) -> pd.DataFrame:
    """The model's input for every row of a frame of TETA columns (batch path)."""
    import pandas as pd

    parts = [stateless_features(frame)]
    if history:
        parts.append(history_features(frame, states))
    return pd.concat(parts, axis=1)


def transactions_frame(transactions: Sequence[Any]) -> pd.DataFrame:
    """A frame of TETA columns from ``Transaction`` objects (for tests and tools)."""
    import pandas as pd

    return pd.DataFrame(transaction_columns(transactions))
