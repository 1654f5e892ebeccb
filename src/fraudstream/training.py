"""Train the CatBoost fraud model (``fraudstream train --data FILE``).

Time-based split (train on the earlier part, validate on the later one), native categorical
features, class imbalance handled by class weights, early stopping on validation PR AUC. The
decision threshold is the highest one that reaches the target recall on validation. The model
goes to the BentoML model store as ``fraud-model`` with its metadata (threshold, features,
metrics, data fingerprint, package version, the drift reference of :mod:`fraudstream.drift`),
which is what :class:`fraudstream.scoring.Scorer` and the scorer service read.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraudstream import __version__, drift
from fraudstream.features import CATEGORICAL_FEATURES, feature_names

if TYPE_CHECKING:
    import catboost
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)
MODEL_NAME = "fraud-model"
DEFAULT_TARGET_RECALL = 0.98


@dataclass
class TrainConfig:
    history_features: bool = True
    target_recall: float = DEFAULT_TARGET_RECALL
    # aim above the target on validation by this many standard errors of the recall estimate,
    # so that unseen data still reaches it (a small validation set gets a larger margin)
    margin_z: float = 1.0
    # spare false-positive budget buys recall: the threshold is lowered below the recall-based
    # one as long as the validation false-positive rate stays within max_fpr (0 disables)
    max_fpr: float = 0.004
    valid_fraction: float = 0.2
    # at most this many legitimate training rows, sampled at random (all frauds are kept; 0 =
    # no limit): bounds the training time on big files at a small cost in quality. The threshold
    # is chosen on the full validation period, so scores need no re-weighting.
    max_legit_rows: int = 300_000
    iterations: int = 1500
    learning_rate: float = 0.12
    depth: int = 6
    early_stopping: int = 100
    threads: int = 2
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def data_fingerprint(path: str | Path) -> str:
    """sha256 of the training file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def time_split(times: pd.Series, valid_fraction: float) -> np.ndarray:
    """Boolean mask of validation rows: the latest ``valid_fraction`` of the period, by time."""
    import numpy as np

    cut = times.quantile(1 - valid_fraction)
    valid = (times > cut).to_numpy()
    if not valid.any() or valid.all():
        raise ValueError("cannot split by time: not enough distinct times")
    return np.asarray(valid)


def allowed_misses(n_fraud: int, target_recall: float, margin_z: float = 0.0) -> int:
    """Most frauds a threshold may miss among ``n_fraud`` so that the miss rate, plus
    ``margin_z`` standard errors, stays within ``1 - target_recall``."""
    budget = 1 - target_recall
    best = 0
    for k in range(n_fraud + 1):
        p = k / n_fraud
        spread = margin_z * math.sqrt(max(p, 1 / n_fraud) * (1 - p) / n_fraud)
        if p + spread > budget + 1e-12:
            break
        best = k
    return best


def choose_threshold(
    y: np.ndarray,
    scores: np.ndarray,
    target_recall: float,
    margin_z: float = 0.0,
    max_fpr: float = 0.0,
) -> float:
    """Highest threshold t with recall(score >= t) >= target_recall (plus the margin); lower
    if that keeps the false-positive rate within ``max_fpr`` (more recall for free)."""
    import numpy as np

    y = np.asarray(y)
    scores = np.asarray(scores, dtype=float)
    fraud_scores = np.sort(scores[y == 1])
    if len(fraud_scores) == 0:
        raise ValueError("no fraudulent transactions in the validation period")
    k = allowed_misses(len(fraud_scores), target_recall, margin_z)
    threshold = float(fraud_scores[min(k, len(fraud_scores) - 1)])
    legit_scores = np.sort(scores[y == 0])[::-1]
    allowed_fp = int(np.floor(max_fpr * len(legit_scores)))
    if max_fpr > 0 and allowed_fp < len(legit_scores):
        # flag only scores above the (allowed_fp + 1)-th highest legitimate score
        by_fpr = float(np.nextafter(legit_scores[allowed_fp], np.inf))
        threshold = min(threshold, by_fpr)
    return threshold


def fit(
    frame: pd.DataFrame, config: TrainConfig
) -> tuple[catboost.CatBoostClassifier, dict[str, Any]]:
    """Train on a loaded frame (TETA columns + target); return (model, metadata)."""
    import catboost
    import numpy as np

    from fraudstream.evaluation import quality_metrics
    from fraudstream.features import build_features

    started = time.perf_counter()
    names = feature_names(config.history_features)
    features = build_features(frame, history=config.history_features)[names]
    log.info("features for %d rows in %.1f s", len(frame), time.perf_counter() - started)
    y = frame["target"].to_numpy()
    valid = time_split(frame["transaction_time"], config.valid_fraction)
    if y[valid].sum() == 0 or y[~valid].sum() == 0:
        raise ValueError("both the training and the validation period need fraudulent rows")
    cats = list(CATEGORICAL_FEATURES)
    train = ~valid
    n_legit = int((train & (y == 0)).sum())
    legit_sample = 1.0
    if config.max_legit_rows and n_legit > config.max_legit_rows:
        legit_sample = config.max_legit_rows / n_legit
        keep = np.random.default_rng(config.seed).random(len(y)) < legit_sample
        train &= keep | (y == 1)
        log.info("training on %.0f%% of %d legitimate rows", 100 * legit_sample, n_legit)
    train_pool = catboost.Pool(features[train], y[train], cat_features=cats)
    valid_pool = catboost.Pool(features[valid], y[valid], cat_features=cats)
    model = catboost.CatBoostClassifier(
        iterations=config.iterations,
        learning_rate=config.learning_rate,
        depth=config.depth,
        loss_function="Logloss",
        eval_metric="PRAUC",
        one_hot_max_size=16,
        max_ctr_complexity=1,
        border_count=128,
        auto_class_weights="SqrtBalanced",
        od_type="Iter",
        od_wait=config.early_stopping,
        use_best_model=True,
        random_seed=config.seed,
        thread_count=config.threads,
        allow_writing_files=False,
        verbose=False,
        **config.extra,
    )
    fit_started = time.perf_counter()
    model.fit(train_pool, eval_set=valid_pool)
    log.info("trained %d trees in %.1f s", model.tree_count_, time.perf_counter() - fit_started)
    scores = model.predict_proba(valid_pool, thread_count=config.threads)[:, 1]
    threshold = choose_threshold(
        y[valid], scores, config.target_recall, config.margin_z, config.max_fpr
    )
    metrics = quality_metrics(y[valid], scores, threshold)
    # drift reference: the validation period (every row, out-of-sample scores) is the traffic
    # the model was tuned for; the training rows are subsampled and scored in sample
    monitored = drift.top_features(
        names, model.get_feature_importance(), drift.DEFAULT_TOP_FEATURES
    )
    valid_features = {name: features[name].to_numpy()[valid] for name in monitored}
    reference = drift.build_reference(valid_features, scores, monitored, cats)
    times = frame["transaction_time"]
    metadata: dict[str, Any] = {
        "threshold": threshold,
        "target_recall": config.target_recall,
        "margin_z": config.margin_z,
        "max_fpr": config.max_fpr,
        "feature_names": names,
        "categorical_features": cats,
        "history_features": config.history_features,
        "metrics": metrics,
        "fraudstream_version": __version__,
        "catboost_version": catboost.__version__,
        "train_rows": int(train.sum()),
        "legit_sample": legit_sample,
        "valid_rows": int(valid.sum()),
        "train_period": [str(times[~valid].min()), str(times[~valid].max())],
        "valid_period": [str(times[valid].min()), str(times[valid].max())],
        "best_iteration": int(model.get_best_iteration() or 0),
        "training_seconds": round(time.perf_counter() - started, 1),
        "fraud_share": float(np.mean(y)),
        drift.REFERENCE_KEY: reference.to_metadata(),
    }
    return model, metadata


def save(model: catboost.CatBoostClassifier, metadata: dict[str, Any]) -> str:
    """Save to the BentoML model store; return the tag ('fraud-model:...')."""
    import bentoml

    labels = {
        "history_features": "yes" if metadata["history_features"] else "no",
        "owner": "fraudstream",
    }
    saved = bentoml.catboost.save_model(
        MODEL_NAME,
        model,
        metadata=metadata,
        labels=labels,
        signatures={"predict_proba": {"batchable": True, "batch_dim": 0}},
    )
    return str(saved.tag)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="labelled CSV (TETA or Kaggle shape)")
    parser.add_argument(
        "--history-features",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="use per-card history features (default: yes)",
    )
    parser.add_argument(
        "--target-recall",
        type=float,
        default=DEFAULT_TARGET_RECALL,
        help="recall the threshold must reach on validation (default 0.98)",
    )
    parser.add_argument(
        "--margin-z",
        type=float,
        default=TrainConfig.margin_z,
        help="standard errors of validation recall to keep above the target (default 1.0)",
    )
    parser.add_argument(
        "--max-fpr",
        type=float,
        default=TrainConfig.max_fpr,
        help="lower the threshold for more recall while validation FPR stays within this "
        "(default 0.004; 0 = threshold from the recall target only)",
    )
    parser.add_argument(
        "--max-legit-rows",
        type=int,
        default=TrainConfig.max_legit_rows,
        help="sample at most this many legitimate training rows, all frauds kept "
        "(default %(default)s; 0 = all)",
    )
    parser.add_argument("--valid-fraction", type=float, default=TrainConfig.valid_fraction)
    parser.add_argument("--iterations", type=int, default=TrainConfig.iterations)
    parser.add_argument("--learning-rate", type=float, default=TrainConfig.learning_rate)
    parser.add_argument("--depth", type=int, default=TrainConfig.depth)
    parser.add_argument("--threads", type=int, default=TrainConfig.threads)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def train_file(path: str | Path, config: TrainConfig) -> tuple[str, dict[str, Any]]:
    """Load, train and save; return (tag, metadata). Raises DataError / ValueError."""
    from fraudstream.loader import load_csv, report_errors

    result = load_csv(path, require_target=True)
    if result.errors:
        print(report_errors(result))
    model, metadata = fit(result.frame, config)
    metadata["data_fingerprint"] = data_fingerprint(path)
    metadata["data_rows"] = len(result.frame)
    return save(model, metadata), metadata


def config_from(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of the options :func:`add_arguments` defines."""
    return TrainConfig(
        history_features=args.history_features,
        target_recall=args.target_recall,
        margin_z=args.margin_z,
        max_fpr=args.max_fpr,
        valid_fraction=args.valid_fraction,
        max_legit_rows=args.max_legit_rows,
        iterations=args.iterations,
        learning_rate=args.learning_rate,
        depth=args.depth,
        threads=args.threads,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    import json

    from fraudstream.loader import DataError

    config = config_from(args)
    try:
        tag, metadata = train_file(args.data, config)
    except DataError as err:
        print(f"error: {err}")
        return 2
    except ValueError as err:
        print(f"error: {args.data}: {err}")
        return 2
    m = metadata["metrics"]
    if args.json:
        print(json.dumps({"tag": tag, **metadata}))
    else:
        print(
            f"saved {tag} (history features: {'yes' if config.history_features else 'no'}; "
            f"{metadata['train_rows']:,} train / {metadata['valid_rows']:,} validation rows; "
            f"{metadata['training_seconds']} s)\n"
            f"validation: threshold {m['threshold']:.4f}  recall {m['recall']:.4f}  "
            f"FPR {m['fpr']:.4f}  precision {m['precision']:.4f}  PR AUC {m['pr_auc']:.4f}  "
            f"ROC AUC {m['roc_auc']:.4f}"
        )
    return 0
