"""Benchmark of the fraud model: quality, speed and memory figures, printed (not asserted).

    .venv/bin/python loadtest/bench_model.py                  # full run (~1M training rows)
    .venv/bin/python loadtest/bench_model.py --customers 300  # quick run

1. simulator: time to simulate and write ~1M rows (``--sim-customers``, a year);
2. quality on a later unseen period: train on 2019 (``--customers`` holders), evaluate on
   Jan-Mar 2020 with the history warmed up from 2019; with and without history features;
   training time (wall and CPU) on the 2019 rows;
3. speed: features + prediction of 10,000 transactions through the Scorer (in-memory history
   store already holding 2019), pinned to one core, best of 3 distinct batches;
4. memory: RSS of a fresh process holding the model and scoring one transaction.

Wall times on a shared machine are noisy; CPU times are printed next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1200, help="holders for quality/training")
    parser.add_argument("--sim-customers", type=int, default=1200, help="holders for the simulator")
    parser.add_argument("--threads", type=int, default=2, help="training threads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        folder = Path(tmp)
        bench_simulator(args.sim_customers, folder)
        (model, metadata), train, test = bench_quality(args.customers, folder, args.threads)
        bench_memory(model, metadata, folder)
        bench_speed(model, metadata, train, test)
    return 0


if __name__ == "__main__":
    sys.exit(main())
