"""Score a labelled CSV with a stored model and report quality (``fraudstream evaluate``).

History features are computed through the file in time order (the same code as training and
serving), optionally warmed up with ``--history``: a file of the same card holders' earlier
transactions. ``--json`` prints one JSON object; otherwise a table, a confusion matrix and PR/ROC
curves saved as PNG.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import catboost
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)
DEFAULT_MODEL = "fraud-model:latest"


def quality_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Threshold-free (ROC AUC, PR AUC) and at-threshold figures of scores against labels."""
    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y).astype(int)
    scores = np.asarray(scores, dtype=float)
    flagged = scores >= threshold
    tp = int(np.sum(flagged & (y == 1)))
    fp = int(np.sum(flagged & (y == 0)))
    fn = int(np.sum(~flagged & (y == 1)))
    tn = int(np.sum(~flagged & (y == 0)))
    both = 0 < y.sum() < len(y)
    recall = tp / (tp + fn) if tp + fn else math.nan
    precision = tp / (tp + fp) if tp + fp else math.nan
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {
        "roc_auc": float(roc_auc_score(y, scores)) if both else math.nan,
        "pr_auc": float(average_precision_score(y, scores)) if both else math.nan,
        "threshold": float(threshold),
        "recall": recall,
        "precision": precision,
        "fpr": fp / (fp + tn) if fp + tn else math.nan,
        "f1": f1,
        "n": int(len(y)),
        "n_fraud": int(y.sum()),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def load_model(tag: str = DEFAULT_MODEL) -> tuple[catboost.CatBoostClassifier, dict, str]:
    """(model, metadata, full tag) from the BentoML model store."""
    import bentoml

    ref = bentoml.models.get(tag)
    return bentoml.catboost.load_model(ref), dict(ref.info.metadata), str(ref.tag)


def model_input(
    metadata: dict, frame: pd.DataFrame, history: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The model's input for a frame, history warmed up from an earlier frame (batch path)."""
    from fraudstream.features import CardState, build_features, history_features

    use_history = bool(metadata.get("history_features", True))
    states: dict[str, CardState] = {}
    if use_history and history is not None:
        history_features(history, states)
    features = build_features(frame, history=use_history, states=states)
    return features[list(metadata["feature_names"])]


def evaluate(
    model: catboost.CatBoostClassifier,
    metadata: dict,
    frame: pd.DataFrame,
    history: pd.DataFrame | None = None,
    threshold: float | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """(metrics at the stored threshold, scores) of a labelled frame."""
    features = model_input(metadata, frame, history)
    scores = model.predict_proba(features)[:, 1]
    limit = float(metadata["threshold"] if threshold is None else threshold)
    return quality_metrics(frame["target"].to_numpy(), scores, limit), scores


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _plots(y: np.ndarray, scores: np.ndarray, metrics: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    precision, recall, _ = precision_recall_curve(y, scores)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(recall, precision)
    ax.scatter([metrics["recall"]], [metrics["precision"]], color="red", label="threshold")
    ax.set(xlabel="recall", ylabel="precision", title=f"PR curve (AUC {metrics['pr_auc']:.4f})")
    ax.legend()
    paths.append(out_dir / "pr_curve.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    fpr, tpr, _ = roc_curve(y, scores)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(fpr, tpr)
    ax.scatter([metrics["fpr"]], [metrics["recall"]], color="red", label="threshold")
    ax.set(
        xlabel="false-positive rate",
        ylabel="recall",
        xscale="log",
        title=f"ROC curve (AUC {metrics['roc_auc']:.4f})",
    )
    ax.legend()
    paths.append(out_dir / "roc_curve.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="labelled CSV (TETA or Kaggle shape)")
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"model tag (default {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--history", help="CSV of earlier transactions to warm up the per-card history"
    )
    parser.add_argument("--threshold", type=float, help="override the model's threshold")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--plots-dir", default=".", help="where to save pr_curve.png and roc_curve.png"
    )


def run(args: argparse.Namespace) -> int:
    from fraudstream.loader import DataError, load_csv, report_errors

    try:
        data = load_csv(args.data, require_target=True)
        history = load_csv(args.history) if args.history else None
    except DataError as err:
        print(f"error: {err}")
        return 2
    try:
        model, metadata, tag = load_model(args.model)
    except ModuleNotFoundError:
        raise  # no 'train' extra: the CLI names what to install
    except Exception as err:  # noqa: BLE001 - bentoml raises several kinds
        print(f"error: cannot load model {args.model}: {err}")
        return 2
    if not args.json:
        for result in (data, history):
            if result is not None and result.errors:
                print(report_errors(result))
    metrics, scores = evaluate(
        model, metadata, data.frame, history.frame if history else None, args.threshold
    )
    if args.json:
        out = {k: _clean(v) for k, v in metrics.items()}
        out.update(
            model=tag,
            history_features=bool(metadata.get("history_features", True)),
            skipped_rows=len({e.line for e in data.errors}),
        )
        print(json.dumps(out))
        return 0
    m = metrics
    print(f"model {tag}  data {args.data} ({data.shape} shape)")
    print(f"{'transactions':<22}{m['n']:>12,}")
    print(f"{'fraudulent':<22}{m['n_fraud']:>12,}")
    for name in ("threshold", "recall", "precision", "fpr", "f1", "pr_auc", "roc_auc"):
        print(f"{name:<22}{m[name]:>12.4f}")
    print("\nconfusion matrix      predicted legit  predicted fraud")
    print(f"actual legit          {m['tn']:>15,}  {m['fp']:>15,}")
    print(f"actual fraud          {m['fn']:>15,}  {m['tp']:>15,}")
    if 0 < m["n_fraud"] < m["n"]:
        paths = _plots(data.frame["target"].to_numpy(), scores, m, Path(args.plots_dir))
        print("\ncurves: " + ", ".join(str(p) for p in paths))
    return 0
