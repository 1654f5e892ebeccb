"""Benchmark of the fraud model: quality, speed and memory figures, printed (not asserted).

    .venv/bin/python loadtest/bench_model.py                  # full run (~1M training rows)
    .venv/bin/python loadtest/bench_model.py --customers 300  # quick run
    .venv/bin/python loadtest/bench_model.py --calibration-only  # only step 5

1. simulator: time to simulate and write ~1M rows (``--sim-customers``, a year);
2. quality on a later unseen period: train on 2019 (``--customers`` holders), evaluate on
   Jan-Mar 2020 with the history warmed up from 2019; with and without history features;
   training time (wall and CPU) on the 2019 rows;
3. speed: features + prediction of 10,000 transactions through the Scorer (in-memory history
   store already holding 2019), pinned to one core, best of 3 distinct batches;
4. memory: RSS of a fresh process holding the model and scoring one transaction;
5. calibration: the default model, trained only on simulated data as ``make model`` trains it,
   scored on a labelled file of the public data's shape (``--calibration PATH`` or
   ``$CALIBRATION_FILE``, e.g. a sample made by the public Sparkov generator: the project never
   ships one nor trains on it). Prints recall, FPR and precision at the model's threshold
   (flagged = score >= threshold, as the scorer decides), PR AUC, and a comparison of the
   simulated and the calibration data (fraud rate, amounts, hours, episodes, categories) that
   explains the figure. Skipped, with a message, when the file is absent.

Wall times on a shared machine are noisy; CPU times are printed next to them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# a labelled file of the public data's shape (e.g. made by the public Sparkov generator); never
# part of the project
DEFAULT_CALIBRATION = os.environ.get("CALIBRATION_FILE", "")
# what `make model` trains the default model on (the Makefile's `model` target)
MAKE_MODEL_CUSTOMERS, MAKE_MODEL_SEED, MAKE_MODEL_YEAR = 500, 42, 2019
FLOOR_RECALL, FLOOR_FPR = 0.98, 0.05
HOLDER = ["name_1", "name_2", "street"]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_simulator(customers: int, folder: Path) -> None:
    from fraudstream.simulator import simulate, write_csv

    wall, cpu = time.perf_counter(), cpu_seconds()
    frame = simulate(customers, date(2019, 1, 1), date(2019, 12, 31), seed=1)
    write_csv(frame, str(folder / "sim.csv"))
    print(
        f"simulator: {len(frame):,} rows ({int(frame['target'].sum()):,} fraud) simulated and "
        f"written in {time.perf_counter() - wall:.1f} s wall / {cpu_seconds() - cpu:.1f} s CPU",
        flush=True,
    )


def bench_quality(customers: int, folder: Path, threads: int) -> tuple:
    from fraudstream.evaluation import evaluate
    from fraudstream.loader import load_csv
    from fraudstream.simulator import simulate, write_csv
    from fraudstream.training import TrainConfig, fit

    frame = simulate(customers, date(2019, 1, 1), date(2020, 3, 31), seed=2)
    later = frame["transaction_time"] >= "2020-01-01"
    write_csv(frame[~later], str(folder / "train.csv"))
    write_csv(frame[later], str(folder / "test.csv"))
    del frame
    wall, cpu = time.perf_counter(), cpu_seconds()
    train = load_csv(folder / "train.csv").frame
    load_wall = time.perf_counter() - wall
    test = load_csv(folder / "test.csv").frame
    print(
        f"data: train 2019 {len(train):,} rows ({int(train['target'].sum()):,} fraud), "
        f"test 2020-Q1 {len(test):,} rows ({int(test['target'].sum()):,} fraud)",
        flush=True,
    )
    models = {}
    for history in (True, False):
        wall, cpu = time.perf_counter(), cpu_seconds()
        model, metadata = fit(train, TrainConfig(history_features=history, threads=threads))
        fit_wall, fit_cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        metrics, _ = evaluate(model, metadata, test, train)
        label = "with history   " if history else "without history"
        print(
            f"quality {label}: recall {metrics['recall']:.4f}  FPR {metrics['fpr']:.5f}  "
            f"PR AUC {metrics['pr_auc']:.4f}  ROC AUC {metrics['roc_auc']:.5f}  "
            f"precision {metrics['precision']:.4f}  threshold {metrics['threshold']:.4f}  "
            f"(n {metrics['n']:,}, fraud {metrics['n_fraud']:,}, trees {model.tree_count_})",
            flush=True,
        )
        print(
            f"training {label}: {len(train):,} rows in {fit_wall + load_wall:.0f} s wall "
            f"(load {load_wall:.0f} s + features/fit {fit_wall:.0f} s), "
            f"{fit_cpu:.0f} s CPU for features/fit, {threads} threads",
            flush=True,
        )
        models[history] = (model, metadata)
    return models[True], train, test


def bench_speed(model, metadata, train, test) -> None:
    import numpy as np

    from fraudstream.features import CardState, history_features
    from fraudstream.history import InMemoryHistoryStore
    from fraudstream.loader import to_transactions
    from fraudstream.scoring import Scorer

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    store = InMemoryHistoryStore()
    states: dict[str, CardState] = {}
    history_features(train, states)
    store.states.update(states)
    scorer = Scorer(model, metadata, store)
    scorer.prediction_threads = 1
    best = {"features": float("inf"), "predict": float("inf"), "wall": float("inf")}
    reasons_cpu, flagged = [], 0
    for i in range(3):
        rows = np.arange(i * 10_000, (i + 1) * 10_000) % len(test)  # wraps on small test sets
        batch = test.iloc[np.sort(rows)]
        txs = to_transactions(batch.assign(transaction_id=[f"b{i}-{j}" for j in range(len(batch))]))
        wall, cpu = time.perf_counter(), time.process_time()
        _, features = scorer.features(txs)
        mid = time.process_time()
        scores = scorer.predict(features)
        end, end_wall = time.process_time(), time.perf_counter()
        best["features"] = min(best["features"], mid - cpu)
        best["predict"] = min(best["predict"], end - mid)
        best["wall"] = min(best["wall"], end_wall - wall)
        rows_flagged = [int(j) for j in np.flatnonzero(scores >= scorer.threshold)]
        start = time.process_time()
        scorer._reasons(features, rows_flagged)
        reasons_cpu.append(time.process_time() - start)
        flagged += len(rows_flagged)
    print(
        f"speed: 10,000 transactions, features + prediction on one core: "
        f"{best['features'] + best['predict']:.3f} s CPU (features {best['features']:.3f} s, "
        f"prediction {best['predict']:.3f} s), {best['wall']:.3f} s wall; best of 3 batches",
        flush=True,
    )
    print(
        f"speed: SHAP reasons for the flagged ones: {flagged / 3:.0f} per batch, "
        f"{np.mean(reasons_cpu):.3f} s CPU per batch",
        flush=True,
    )


MEMORY_PROBE = """
import json, sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1]) / 1024
import catboost
from fraudstream.schema import EXAMPLE_TRANSACTION, Transaction
from fraudstream.scoring import Scorer
base = rss()
model = catboost.CatBoostClassifier()
model.load_model(sys.argv[1])
metadata = json.load(open(sys.argv[2]))
scorer = Scorer(model, metadata)
result = scorer.score([Transaction(**EXAMPLE_TRANSACTION)])
print(json.dumps({"imports_mb": base, "total_mb": rss()}))
"""


def bench_memory(model, metadata, folder: Path) -> None:
    model_path, meta_path = folder / "model.cbm", folder / "metadata.json"
    model.save_model(str(model_path))
    meta_path.write_text(json.dumps(metadata))
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(model_path), str(meta_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    print(
        f"memory: {figures['total_mb']:.0f} MB RSS with the model loaded and one transaction "
        f"scored (imports alone {figures['imports_mb']:.0f} MB)",
        flush=True,
    )


def load_labelled(path: Path, folder: Path) -> pd.DataFrame:
    """A labelled CSV (TETA or Kaggle shape) through the project's loader; gzip is unpacked."""
    from fraudstream.loader import load_csv

    if path.suffix == ".gz":
        plain = folder / path.stem
        with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
            dst.write(src.read())
        path = plain
    return load_csv(path, require_target=True).frame


def shape_figures(frame: pd.DataFrame) -> dict[str, str]:
    """Compact figures of a labelled frame's shape, as printable strings."""
    import numpy as np

    fraud = frame["target"].to_numpy() == 1
    hour = frame["transaction_time"].dt.hour.to_numpy()
    night = (hour >= 22) | (hour < 4)

    def quantiles(values: pd.Series) -> str:
        return " ".join(f"{v:,.0f}" for v in values.quantile([0.1, 0.5, 0.9, 0.99]))

    def blocks(rows: np.ndarray) -> str:  # share of each 4-hour block, in %
        counts = np.bincount(hour[rows] // 4, minlength=6)
        return " ".join(f"{100 * c / max(counts.sum(), 1):2.0f}" for c in counts)

    cards = frame[fraud].groupby(HOLDER)["transaction_time"].agg(["min", "max", "size"])
    days = frame["transaction_time"].dt.normalize()
    card_days = frame.assign(day=days).groupby([*HOLDER, "day"])["target"].agg(["min", "max"])
    fraud_days = card_days[card_days["max"] == 1]
    span_h = (cards["max"] - cards["min"]).dt.total_seconds() / 3600
    return {
        "rows (holders)": f"{len(frame):,} ({frame.groupby(HOLDER).ngroups:,})",
        "fraud rate": f"{100 * fraud.mean():.2f} %",
        "legit amount p10 p50 p90 p99": quantiles(frame.loc[~fraud, "amount"]),
        "fraud amount p10 p50 p90 p99": quantiles(frame.loc[fraud, "amount"]),
        "night 22-04 legit / fraud": f"{100 * night[~fraud].mean():.0f} % / "
        f"{100 * night[fraud].mean():.0f} %",
        "legit % by hour 0-4-8-12-16-20": blocks(~fraud),
        "fraud % by hour 0-4-8-12-16-20": blocks(fraud),
        "frauds per card (median, max)": f"{cards['size'].median():.0f}, {cards['size'].max()}",
        "hours first-last fraud (median)": f"{span_h.median():.0f}",
        "fraud card-days with legit too": f"{100 * (fraud_days['min'] == 0).mean():.0f} %",
    }


def category_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per category: share of legit and of fraud rows (%), median legit and fraud amount."""
    import pandas as pd

    fraud = frame["target"] == 1
    legit_rows, fraud_rows = frame[~fraud], frame[fraud]
    return pd.DataFrame(
        {
            "legit%": 100 * legit_rows["cat_id"].value_counts(normalize=True),
            "fraud%": 100 * fraud_rows["cat_id"].value_counts(normalize=True),
            "legit$": legit_rows.groupby("cat_id")["amount"].median(),
            "fraud$": fraud_rows.groupby("cat_id")["amount"].median(),
        }
    ).fillna(0.0)


def print_comparison(simulated: pd.DataFrame, calibration: pd.DataFrame) -> None:
    sim, cal = shape_figures(simulated), shape_figures(calibration)
    print(f"calibration: shape {'':<24}{'simulated':>26}  {'calibration':>26}")
    for name in sim:
        print(f"calibration: {name:<30}{sim[name]:>26}  {cal[name]:>26}")
    table = category_table(simulated).add_suffix(" sim")
    table = table.join(category_table(calibration).add_suffix(" cal"), how="outer")
    columns = ["legit% sim", "legit% cal", "fraud% sim", "fraud% cal"]
    columns += ["legit$ sim", "legit$ cal", "fraud$ sim", "fraud$ cal"]
    header = "".join(f"{c:>11}" for c in columns)
    print(f"calibration: {'category (amounts: medians)':<30}{header}")
    for cat, row in table.fillna(0.0)[columns].iterrows():
        print(f"calibration: {cat:<30}" + "".join(f"{v:>11.1f}" for v in row))


def bench_calibration(path: str, folder: Path, threads: int) -> None:
    """Train the default model on simulated data only; score the calibration file with it."""
    from fraudstream.evaluation import evaluate
    from fraudstream.loader import load_csv
    from fraudstream.simulator import simulate, write_csv
    from fraudstream.training import TrainConfig, fit

    if not path:
        print("calibration: skipped (no --calibration PATH, no $CALIBRATION_FILE)", flush=True)
        return
    if not Path(path).is_file():
        print(f"calibration: skipped: no calibration file at {path} (--calibration PATH)")
        return
    calibration = load_labelled(Path(path), folder)
    year = MAKE_MODEL_YEAR
    simulated = simulate(
        MAKE_MODEL_CUSTOMERS, date(year, 1, 1), date(year, 12, 31), seed=MAKE_MODEL_SEED
    )
    write_csv(simulated, str(folder / "model.csv"))
    simulated = load_csv(folder / "model.csv").frame  # what `fraudstream train` reads
    wall = time.perf_counter()
    model, metadata = fit(simulated, TrainConfig(threads=threads, seed=0))
    metrics, _ = evaluate(model, metadata, calibration)
    floor = metrics["recall"] >= FLOOR_RECALL and metrics["fpr"] <= FLOOR_FPR
    print(
        f"calibration: model trained as `make model` does ({MAKE_MODEL_CUSTOMERS} simulated "
        f"holders, {year}, seed {MAKE_MODEL_SEED}; {len(simulated):,} rows, "
        f"{time.perf_counter() - wall:.0f} s), scored on {path} "
        f"({metrics['n']:,} rows, {metrics['n_fraud']:,} fraud)",
        flush=True,
    )
    print(
        f"calibration: recall {metrics['recall']:.4f}  FPR {metrics['fpr']:.4f}  "
        f"PR AUC {metrics['pr_auc']:.4f}  precision {metrics['precision']:.4f}  "
        f"ROC AUC {metrics['roc_auc']:.4f}  at threshold {metrics['threshold']:.4f} "
        f"(flagged: score >= threshold; missed {metrics['fn']}, false alarms {metrics['fp']:,}) "
        f"-> business floor (recall >= {FLOOR_RECALL} at FPR <= {FLOOR_FPR}): "
        f"{'met' if floor else 'MISSED'}",
        flush=True,
    )
    print_comparison(simulated, calibration)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1200, help="holders for quality/training")
    parser.add_argument("--sim-customers", type=int, default=1200, help="holders for the simulator")
    parser.add_argument("--threads", type=int, default=2, help="training threads")
    parser.add_argument(
        "--calibration",
        default=DEFAULT_CALIBRATION,
        help="labelled CSV (TETA or Kaggle shape, may be .gz) of the public data's shape to score "
        "the default model on (default: $CALIBRATION_FILE; skipped when not set or absent)",
    )
    parser.add_argument(
        "--calibration-only", action="store_true", help="run only the calibration check"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        folder = Path(tmp)
        if args.calibration_only:
            bench_calibration(args.calibration, folder, args.threads)
            return 0
        bench_simulator(args.sim_customers, folder)
        (model, metadata), train, test = bench_quality(args.customers, folder, args.threads)
        bench_memory(model, metadata, folder)
        bench_speed(model, metadata, train, test)
        bench_calibration(args.calibration, folder, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
