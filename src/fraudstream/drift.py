"""Drift of the model's input and output: population stability index (PSI) of live traffic
against the distribution the model was trained for.

* At training, :func:`build_reference` bins the score and the model's most important features
  on the validation period (the latest part of the training file, every row, scores out of
  sample) and records each bin's share: a :class:`DriftReference`, saved in the model's
  metadata under :data:`REFERENCE_KEY`.
* At serving, a :class:`DriftWindow` keeps the bin of each monitored value for the last ``size``
  scored transactions (a ring buffer of small integers: bounded memory; batches are binned
  together by numpy, 1,000 transactions at a time), and :meth:`DriftWindow.psi` compares the
  window's shares with the reference's.

Bins: a numeric feature is cut at its reference deciles (at its distinct values when it has
few, e.g. a 0/1 flag), plus one bin for a missing value (NaN); a categorical one has a bin per
reference category (the most frequent :data:`MAX_CATEGORIES`) plus one for any other value.

    PSI = sum over bins of (actual - expected) x ln(actual / expected)

with shares below :data:`EPSILON` raised to it, so an empty bin counts as a large but finite
difference. Rule of thumb: below 0.1 stable, 0.1 to 0.2 a moderate shift, above 0.2 a
significant one.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

REFERENCE_KEY = "drift_reference"  # the model metadata entry
SCORE = "score"  # the name the model's output is monitored under
DEFAULT_BINS = 10
DEFAULT_TOP_FEATURES = 5
MAX_CATEGORIES = 50
EPSILON = 1e-4
BIN_EVERY = 1000  # scored transactions binned together (see DriftWindow.add)


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """Population stability index of ``actual`` against ``expected`` (shares or counts of the
    same bins; each side is normalised to sum to 1). Empty bins count as :data:`EPSILON`."""
    import numpy as np

    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1:
        raise ValueError(f"bins differ: {e.shape} vs {a.shape}")
    if e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("each side needs at least one observation")
    e = np.maximum(e / e.sum(), EPSILON)
    a = np.maximum(a / a.sum(), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class FeatureBins:
    """The bins of one monitored value and the reference share of each."""

    name: str
    shares: tuple[float, ...]
    # numeric: inner cut points; bin k holds edges[k-1] <= x < edges[k], the last bin NaN
    edges: tuple[float, ...] = ()
    # categorical: one bin per category, then one for any other value
    categories: tuple[str, ...] = ()

    @property
    def categorical(self) -> bool:
        return bool(self.categories)

    @property
    def n_bins(self) -> int:
        return len(self.categories) + 1 if self.categorical else len(self.edges) + 2

    def codes(self, values: np.ndarray) -> np.ndarray:
        """The bin of each value (integers, 0 to ``n_bins - 1``)."""
        import numpy as np

        if self.categorical:
            index, other = self._index, len(self.categories)
            return np.fromiter((index.get(v, other) for v in values), np.int64, len(values))
        numbers = np.asarray(values, dtype=np.float64)
        codes = np.searchsorted(self._edges, numbers, side="right")
        codes[np.isnan(numbers)] = len(self.edges) + 1
        return codes

    @functools.cached_property
    def _edges(self) -> np.ndarray:
        import numpy as np

        return np.array(self.edges, dtype=np.float64)

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.categories)}

    @classmethod
    def numeric(cls, name: str, values: np.ndarray, bins: int = DEFAULT_BINS) -> FeatureBins:
        """Cut at the deciles (``bins`` quantiles) of ``values``, or at each distinct value
        when there are at most ``bins`` of them."""
        import numpy as np

        numbers = np.asarray(values, dtype=np.float64)
        present = numbers[~np.isnan(numbers)]
        distinct = np.unique(present)
        if len(distinct) <= bins:
            edges = distinct[1:]  # one bin per value (the first: the smallest and below)
        else:
            edges = np.unique(np.quantile(present, np.arange(1, bins) / bins))
        made = cls(name, (), edges=tuple(float(x) for x in edges))
        return made._with_shares(made.codes(numbers))

    @classmethod
    def categorical_of(cls, name: str, values: np.ndarray) -> FeatureBins:
        """One bin per category, the most frequent :data:`MAX_CATEGORIES` of them."""
        import numpy as np

        names, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
        top = names[np.argsort(-counts, kind="stable")][:MAX_CATEGORIES]
        made = cls(name, (), categories=tuple(str(x) for x in top))
        return made._with_shares(made.codes(np.asarray(values, dtype=object)))

    def _with_shares(self, codes: np.ndarray) -> FeatureBins:
        import numpy as np

        counts = np.bincount(codes, minlength=self.n_bins)
        shares = tuple(float(x) for x in counts / max(len(codes), 1))
        return FeatureBins(self.name, shares, self.edges, self.categories)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "shares": list(self.shares)}
        if self.categorical:
            out["categories"] = list(self.categories)
        else:
            out["edges"] = list(self.edges)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureBins:
        made = cls(
            str(data["name"]),
            tuple(float(x) for x in data["shares"]),
            edges=tuple(float(x) for x in data.get("edges", ())),
            categories=tuple(str(x) for x in data.get("categories", ())),
        )
        if len(made.shares) != made.n_bins or made.n_bins > 255:
            raise ValueError(f"{made.name}: {len(made.shares)} shares for {made.n_bins} bins")
        return made


@dataclass(frozen=True)
class DriftReference:
    """The reference bins of the score and of the monitored features, in that order."""

    features: tuple[FeatureBins, ...]
    rows: int  # how many transactions the shares were measured on

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_metadata(self) -> dict[str, Any]:
        return {"rows": self.rows, "features": [f.to_dict() for f in self.features]}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> DriftReference | None:
        """The reference saved with a model; None for a model trained without one.
        Raises ValueError when it is there but unreadable."""
        data = metadata.get(REFERENCE_KEY)
        if data is None:
            return None
        try:
            features = tuple(FeatureBins.from_dict(f) for f in data["features"])
            return cls(features, int(data["rows"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed {REFERENCE_KEY}: {err!r}") from err


def top_features(names: Sequence[str], importances: Sequence[float], k: int) -> list[str]:
    """The ``k`` most important feature names, most important first."""
    ranked = sorted(zip(importances, range(len(names)), strict=True), key=lambda p: (-p[0], p[1]))
    return [names[i] for _, i in ranked[:k]]


def build_reference(
    features: Mapping[str, np.ndarray],
    scores: np.ndarray,
    monitored: Sequence[str],
    categorical: Sequence[str],
    bins: int = DEFAULT_BINS,
) -> DriftReference:
    """Reference bins of the score and of the ``monitored`` feature columns."""
    parts = [FeatureBins.numeric(SCORE, scores, bins)]
    for name in monitored:
        values = features[name]
        if name in categorical:
            parts.append(FeatureBins.categorical_of(name, values))
        else:
            parts.append(FeatureBins.numeric(name, values, bins))
    return DriftReference(tuple(parts), len(scores))


class DriftWindow:
    """The bins of the score and monitored features of the last ``size`` scored transactions.

    :meth:`add` only keeps a reference to the batch: batches are binned together once
    :data:`BIN_EVERY` transactions wait (or when the counts are read), so a one-transaction
    ``/score`` call pays no numpy work of its own. Memory: ``size`` x (monitored values) bytes
    of bins, plus the batches waiting to be binned. Thread-safe.
    """

    def __init__(self, reference: DriftReference, feature_names: Sequence[str], size: int) -> None:
        import numpy as np

        if size < 1:
            raise ValueError("the window needs at least one transaction")
        if reference.features[0].name != SCORE:
            raise ValueError(f"the reference must start with {SCORE!r}")
        missing = set(reference.names[1:]) - set(feature_names)
        if missing:
            raise ValueError(f"reference features the model lacks: {sorted(missing)}")
        self.reference = reference
        self.size = size
        self._columns = [list(feature_names).index(name) for name in reference.names[1:]]
        self._codes = np.zeros((size, len(reference.features)), dtype=np.uint8)
        self._next = 0  # where the next binned transaction goes in the ring
        self._count = 0  # binned transactions in the ring
        self._waiting: list[tuple[np.ndarray, np.ndarray]] = []  # batches not binned yet
        self._waiting_rows = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Transactions in the window."""
        return min(self._count + self._waiting_rows, self.size)

    def add(self, rows: np.ndarray, scores: np.ndarray) -> None:
        """Count a scored batch: model-input ``rows`` (2-D, the model's feature order) and
        their ``scores``. The arrays must not be changed afterwards."""
        with self._lock:
            self._waiting.append((rows, scores))
            self._waiting_rows += len(scores)
            if self._waiting_rows >= min(BIN_EVERY, self.size):
                self._bin_waiting()

    def counts(self) -> dict[str, np.ndarray]:
        """Transactions per bin in the window, by monitored value."""
        import numpy as np

        with self._lock:
            self._bin_waiting()
            window = self._codes[: self._count].copy()
        return {
            f.name: np.bincount(window[:, k], minlength=f.n_bins)
            for k, f in enumerate(self.reference.features)
        }

    def psi(self) -> dict[str, float]:
        """PSI of each monitored value over the window (empty while the window is)."""
        counts = self.counts()
        if not self._count:
            return {}
        return {f.name: psi(f.shares, counts[f.name]) for f in self.reference.features}

    def _bin_waiting(self) -> None:
        """Bin the waiting batches into the ring (the lock is held)."""
        import numpy as np

        if not self._waiting:
            return
        rows = np.concatenate([r for r, _ in self._waiting])[-self.size :]
        scores = np.concatenate([s for _, s in self._waiting])[-self.size :]
        self._waiting.clear()
        self._waiting_rows = 0
        n = len(scores)
        bins = self.reference.features
        codes = np.empty((n, len(bins)), dtype=np.uint8)
        codes[:, 0] = bins[0].codes(scores)
        for k, column in enumerate(self._columns, start=1):
            codes[:, k] = bins[k].codes(rows[:, column])
        first = self._next
        head = min(n, self.size - first)
        self._codes[first : first + head] = codes[:head]
        self._codes[: n - head] = codes[head:]
        self._next = (first + n) % self.size
        self._count = min(self._count + n, self.size)
