"""Retrain on a labelled window, after data-quality checks (``fraudstream retrain``).

    fraudstream retrain --data jan.csv feb.csv --since 2019-01-01 --until 2019-03-01 \\
        --eval-data mar.csv [--promote]

1. Load the training files (TETA or Kaggle CSV, as ``fraudstream train``) and keep the window
   ``[--since, --until)``; load the evaluation files (``--eval-data``, window
   ``[--eval-since, --eval-until)``).
2. Run :mod:`fraudstream.data_quality` on both and the no-overlap check; any failure refuses
   the run with a report of every check (exit code 3), nothing is trained.
3. Train (:func:`fraudstream.training.fit`, same options as ``fraudstream train``) and save the
   candidate to the BentoML store as a new ``fraud-model`` version. It is not the champion.
4. With ``--promote``: gate it against the champion on the evaluation window and promote it
   (:mod:`fraudstream.promotion`); a refusal exits 1.

Exit codes: 0 done (and promoted, with ``--promote``), 1 the gate refused, 2 bad arguments or
files, 3 a data-quality check failed.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from fraudstream import data_quality as dq
from fraudstream import training
from fraudstream.promotion import finite

log = logging.getLogger(__name__)
EXIT_REFUSED = 1
EXIT_DATA_QUALITY = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fraudstream.promotion import add_gate_arguments

    training.add_arguments(parser)
    data = next(a for a in parser._actions if a.dest == "data")
    data.nargs = "+"
    data.help = "labelled CSV file(s) to train on (TETA or Kaggle shape)"
    parser.add_argument("--since", help="training window start, ISO date/time (inclusive)")
    parser.add_argument("--until", help="training window end, ISO date/time (exclusive)")
    parser.add_argument(
        "--eval-data",
        nargs="+",
        required=True,
        help="labelled CSV file(s) of the evaluation window (later than the training window)",
    )
    parser.add_argument("--eval-since", help="evaluation window start (inclusive)")
    parser.add_argument("--eval-until", help="evaluation window end (exclusive)")
    bounds = dq.QualityBounds()
    parser.add_argument(
        "--max-bad-row-share",
        type=float,
        default=bounds.max_bad_row_share,
        help="most rows a file may lose to missing/invalid values (default %(default)s)",
    )
    parser.add_argument("--min-rows", type=int, default=bounds.min_rows,
                        help="fewest rows in a window (default %(default)s)")  # fmt: skip
    parser.add_argument("--min-frauds", type=int, default=bounds.min_frauds,
                        help="fewest frauds in a window (default %(default)s)")  # fmt: skip
    parser.add_argument(
        "--min-label-rate",
        type=float,
        default=bounds.min_label_rate,
        help="lowest fraud share accepted in a window (default %(default)s)",
    )
    parser.add_argument(
        "--max-label-rate",
        type=float,
        default=bounds.max_label_rate,
        help="highest fraud share accepted in a window (default %(default)s)",
    )
    parser.add_argument(
        "--promote",
        action="store_true",
        help="gate the candidate against the champion on the evaluation window and promote it",
    )
    add_gate_arguments(parser)


def check(args: argparse.Namespace) -> tuple[list[dq.Check], dq.LabelledData, dq.LabelledData]:
    """All data-quality checks of a retrain's two windows."""
    bounds = dq.QualityBounds(
        max_bad_row_share=args.max_bad_row_share,
        min_rows=args.min_rows,
        min_frauds=args.min_frauds,
        min_label_rate=args.min_label_rate,
        max_label_rate=args.max_label_rate,
    )
    train = dq.load_window("train", args.data, args.since, args.until, bounds)
    evaluation = dq.load_window("eval", args.eval_data, args.eval_since, args.eval_until, bounds)
    checks = train.checks + evaluation.checks
    if train.frame is not None and evaluation.frame is not None:
        checks.append(dq.overlap_check(train.frame, evaluation.frame))
    return checks, train, evaluation


def run(args: argparse.Namespace) -> int:
    checks, train, evaluation = check(args)
    out: dict[str, Any] = {"checks": dq.as_json(checks)}
    bad = dq.failed(checks)
    if not args.json:
        print("data quality:\n" + dq.report(checks))
    if bad:
        names = ", ".join(f"{c.subject} {c.name}" for c in bad)
        message = f"refused: data-quality check(s) failed: {names}"
        if args.json:
            print(json.dumps({**out, "error": message}))
        else:
            print(message)
        return EXIT_DATA_QUALITY
    assert train.frame is not None and evaluation.frame is not None
    try:
        model, metadata = training.fit(train.frame, training.config_from(args))
    except ValueError as err:
        print(f"error: {err}")
        return 2
    metadata["data_fingerprint"] = ",".join(training.data_fingerprint(p) for p in args.data)
    metadata["data_rows"] = len(train.frame)
    metadata["retrain"] = {
        "files": train.files,
        "window": [args.since or "", args.until or ""],
        "eval_files": evaluation.files,
        "eval_window": [args.eval_since or "", args.eval_until or ""],
    }
    tag = training.save(model, metadata)
    m = metadata["metrics"]
    out.update(candidate=tag, validation=finite(m))
    if not args.json:
        print(
            f"candidate {tag} saved ({metadata['train_rows']:,} train / "
            f"{metadata['valid_rows']:,} validation rows): validation recall {m['recall']:.4f} "
            f"FPR {m['fpr']:.4f} PR AUC {m['pr_auc']:.4f}; not promoted"
            + (": gating it" if args.promote else "")
        )
    if not args.promote:
        if args.json:
            print(json.dumps(out))
        return 0
    from fraudstream.promotion import promote

    gate_args = argparse.Namespace(
        candidate=tag,
        champion=None,
        data=args.eval_data,
        min_recall=args.min_recall,
        max_fpr_increase=args.max_fpr_increase,
        dry_run=False,
        force=False,
        json=args.json,
    )
    return promote(gate_args, evaluation.frame, train.frame)
