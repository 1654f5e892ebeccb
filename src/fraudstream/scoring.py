"""Score transactions with the trained model: the one object the Bento service and tools use.

    ref = bentoml.models.get("fraud-model:latest")
    scorer = Scorer(bentoml.catboost.load_model(ref), ref.info.metadata, store,
                    model_version=str(ref.tag))
    results = scorer.score([Transaction(**EXAMPLE_TRANSACTION)])

Features come from :mod:`fraudstream.features` (the code training used); history features are
computed causally through a :class:`fraudstream.history.HistoryStore` and each scored
transaction is added to it, idempotently on its ``transaction_id`` (derived from the content
when absent: :func:`fraudstream.identity.transaction_ids`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from fraudstream.features import (
    CATEGORICAL_FEATURES,
    HISTORY_FEATURES,
    events_from_columns,
    stateless_columns,
    time_order,
    transaction_columns,
)
from fraudstream.history import HistoryStore, InMemoryHistoryStore
from fraudstream.identity import transaction_ids
from fraudstream.schema import Transaction

if TYPE_CHECKING:
    import catboost
    import numpy as np

# The model input of a batch: a 2-D object array, one row per transaction, columns in the
# model's feature order (categorical values as strings). Not a DataFrame: for the small batches
# of online traffic, building frames cost several times more than the prediction; and not a list
# of rows, which CatBoost converts whole just to check its shape (4x slower for 500 rows).

log = logging.getLogger(__name__)
N_REASONS = 3


class Reason(BaseModel):
    """One feature that pushed the score up (SHAP contribution, in log-odds)."""

    feature: str = Field(description="feature name", examples=["h_amt_rel_mean"])
    value: str | float = Field(description="the feature's value for this transaction")
    impact: float = Field(description="SHAP contribution to the log-odds (positive = riskier)")


class ScoreResult(BaseModel):
    """The score of one transaction."""

    transaction_id: str
    score: float = Field(ge=0, le=1, description="fraud probability from the model")
    fraud_flag: bool = Field(description="score >= threshold")
    threshold: float
    model_version: str
    reasons: list[Reason] = Field(
        default_factory=list, description="top features behind a flag; empty when not flagged"
    )


class Scorer:
    """Model + metadata + history store; ``score`` is thread-safe."""

    prediction_threads = 1
    # CatBoost's SHAP algorithm for reasons: "Regular" (exact tree SHAP, ~ms per row and tree
    # count) or "Approximate" (much faster; the scorer service uses it, see SHAP_CALC_TYPE)
    shap_calc_type = "Regular"

    def __init__(
        self,
        model: catboost.CatBoostClassifier,
        metadata: dict,
        history: HistoryStore | None = None,
        threshold: float | None = None,
        model_version: str = "unknown",
    ) -> None:
        self.model = model
        self.metadata = dict(metadata)
        self.feature_names: list[str] = list(metadata["feature_names"])
        self.categorical_features: list[str] = list(
            metadata.get("categorical_features", CATEGORICAL_FEATURES)
        )
        self.history: HistoryStore = history if history is not None else InMemoryHistoryStore()
        self.threshold: float = float(threshold if threshold is not None else metadata["threshold"])
        self.model_version = model_version
        # called with (model-input rows, scores) of every scored batch (the scorer service's
        # drift window counts them: fraudstream.drift)
        self.on_scored: Callable[[np.ndarray, np.ndarray], None] | None = None
        self._lock = threading.Lock()

    def features(self, transactions: Sequence[Transaction]) -> tuple[list[str], np.ndarray]:
        """(transaction ids, model input rows) for a batch; records the batch in the history."""
        import numpy as np

        ids = transaction_ids(transactions)  # missing ones derived from the content
        cols = transaction_columns(transactions)
        features = {name: values.tolist() for name, values in stateless_columns(cols).items()}
        order = time_order(cols["transaction_time"]).tolist()
        events = events_from_columns(cols)
        with self._lock:
            values = self.history.apply([ids[i] for i in order], [events[i] for i in order])
        history: list[tuple] = [()] * len(ids)
        for position, row in zip(order, values, strict=True):
            history[position] = row
        for j, name in enumerate(HISTORY_FEATURES):
            features[name] = [float(row[j]) for row in history]
        rows = np.empty((len(ids), len(self.feature_names)), dtype=object)
        for j, name in enumerate(self.feature_names):
            rows[:, j] = features[name]
        return ids, rows

    def predict(self, rows: np.ndarray) -> Any:
        """Fraud probabilities (numpy array) of model-input rows."""
        return self.model.predict_proba(rows, thread_count=self.prediction_threads)[:, 1]

    def score(self, transactions: Sequence[Transaction], explain: bool = True) -> list[ScoreResult]:
        """Scores in input order; reasons (top-3 SHAP) only for flagged transactions."""
        if not transactions:
            return []
        ids, features = self.features(transactions)
        scores = self.predict(features)
        if self.on_scored is not None:
            self.on_scored(features, scores)
        flags = scores >= self.threshold
        reasons: dict[int, list[Reason]] = {}
        if explain and flags.any():
            reasons = self._reasons(features, [i for i, f in enumerate(flags) if f])
        return [
            ScoreResult(
                transaction_id=ids[i],
                score=float(scores[i]),
                fraud_flag=bool(flags[i]),
                threshold=self.threshold,
                model_version=self.model_version,
                reasons=reasons.get(i, []),
            )
            for i in range(len(ids))
        ]

    def _reasons(self, features: np.ndarray, rows: list[int]) -> dict[int, list[Reason]]:
        import catboost
        import numpy as np

        subset = features[rows]
        cat_indices = [self.feature_names.index(c) for c in self.categorical_features]
        pool = catboost.Pool(subset, cat_features=cat_indices)
        shap = self.model.get_feature_importance(
            pool,
            type="ShapValues",
            shap_calc_type=self.shap_calc_type,
            thread_count=self.prediction_threads,
        )[:, :-1]
        out: dict[int, list[Reason]] = {}
        names = self.feature_names
        for pos, row in enumerate(rows):
            contrib = shap[pos]
            top = [j for j in np.argsort(-contrib)[:N_REASONS] if contrib[j] > 0]
            out[row] = [
                Reason(
                    feature=names[j],
                    value=_display(subset[pos, j]),
                    impact=round(float(contrib[j]), 6),
                )
                for j in top
            ]
        return out


def _display(value: Any) -> str | float:
    if isinstance(value, str):
        return value
    number = float(value)
    return "missing" if math.isnan(number) else round(number, 6)
