"""Gate a candidate model against the champion and promote it (``fraudstream promote``).

Both models score the same labelled window (``--data``, history warmed up with ``--history``),
each at its own stored threshold. The candidate is promoted only if

* its recall is at least ``--min-recall`` (default 0.98, the business floor), and
* its false-positive rate is at most the champion's plus ``--max-fpr-increase`` (default 0.005),
* and the window starts after the candidate's training data ends (no judging on seen rows).

The champion is what the scorer serves: a BentoML store holds any number of ``fraud-model``
versions (every retrain adds one, and moves ``fraud-model:latest``); the champion of a store is
the tag written in ``champion.json`` next to it, in the BentoML home (``$BENTOML_HOME``, default
``~/bentoml``). Promotion rewrites that file atomically (with the previous champion and both
models' figures); the scorer reads it at start when ``CHAMPION_HOME`` points at that home
(see ``bentos/fraud_scorer``). Rollback: ``fraudstream promote PREVIOUS_TAG --force``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

CHAMPION_FILE = "champion.json"
DEFAULT_MIN_RECALL = 0.98
DEFAULT_MAX_FPR_INCREASE = 0.005
SHOWN = ("recall", "fpr", "precision", "pr_auc", "threshold")


def bentoml_home() -> Path:
    """The BentoML home the CLI saves models to (``$BENTOML_HOME``, default ``~/bentoml``)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.bentoml_home.get())


def champion_path(home: str | Path | None = None) -> Path:
    return Path(home or bentoml_home()) / CHAMPION_FILE


def read_champion(home: str | Path | None = None) -> dict[str, Any] | None:
    """The champion record of a BentoML home (``{"tag": ..., ...}``), None when there is none."""
    path = champion_path(home)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if isinstance(record, dict) and record.get("tag") else None


def write_champion(record: dict[str, Any], home: str | Path | None = None) -> Path:
    """Replace the champion record atomically (a reader sees the old or the new file)."""
    path = champion_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".champion-", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh, indent=2)
    os.replace(tmp, path)
    return path


def champion_model(home: str | Path) -> Any | None:
    """The champion of a BentoML home as a ``bentoml.Model`` from ``<home>/models`` (None when
    there is no champion.json); raises when the file names a model the store lacks."""
    record = read_champion(home)
    if record is None:
        return None
    from bentoml._internal.models import ModelStore

    return ModelStore(str(Path(home) / "models")).get(record["tag"])


@dataclass
class Decision:
    candidate: str
    champion: str | None
    promoted: bool
    reasons: list[str]  # why not (empty when promoted)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)  # tag -> metrics


def gate(
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    min_recall: float = DEFAULT_MIN_RECALL,
    max_fpr_increase: float = DEFAULT_MAX_FPR_INCREASE,
) -> list[str]:
    """Reasons to refuse a candidate given both models' metrics on the same window."""
    reasons = []
    recall = candidate["recall"]
    if not (recall >= min_recall):  # NaN (no frauds) refuses too
        reasons.append(f"candidate recall {recall:.4f} < {min_recall:.4f}")
    if champion is not None:
        limit = champion["fpr"] + max_fpr_increase
        if not (candidate["fpr"] <= limit):
            reasons.append(
                f"candidate FPR {candidate['fpr']:.4f} > champion FPR {champion['fpr']:.4f} "
                f"+ {max_fpr_increase:.4f}"
            )
    return reasons


def _training_end(metadata: dict[str, Any]) -> str | None:
    period = metadata.get("valid_period") or metadata.get("train_period")
    return str(period[1]) if period else None


def decide(
    candidate_tag: str,
    champion_tag: str | None,
    frame: pd.DataFrame,
    history: pd.DataFrame | None = None,
    min_recall: float = DEFAULT_MIN_RECALL,
    max_fpr_increase: float = DEFAULT_MAX_FPR_INCREASE,
) -> Decision:
    """Evaluate both models on ``frame`` and apply the gate (nothing is written)."""
    import pandas as pd

    from fraudstream.evaluation import evaluate, load_model

    model, metadata, candidate_tag = load_model(candidate_tag)
    candidate, _ = evaluate(model, metadata, frame, history)
    figures = {candidate_tag: candidate}
    champion = None
    if champion_tag:
        model, champion_meta, champion_tag = load_model(champion_tag)
        champion, _ = evaluate(model, champion_meta, frame, history)
        figures[champion_tag] = champion
    reasons = gate(candidate, champion, min_recall, max_fpr_increase)
    end = _training_end(metadata)
    start = frame["transaction_time"].min()
    if end and not start > pd.Timestamp(end):
        reasons.append(
            f"evaluation data starts {start}, before the candidate's training data ends {end}"
        )
    if champion_tag == candidate_tag:
        reasons.append(f"{candidate_tag} is already the champion")
    return Decision(candidate_tag, champion_tag, not reasons, reasons, figures)


def table(decision: Decision) -> str:
    rows = {
        f"{tag} ({'candidate' if tag == decision.candidate else 'champion'})": m
        for tag, m in decision.figures.items()
    }
    width = max(len(name) for name in rows) + 2
    lines = [f"{'model':<{width}}" + "".join(f"{name:>11}" for name in SHOWN)]
    for name, m in rows.items():
        lines.append(f"{name:<{width}}" + "".join(f"{m[k]:>11.4f}" for k in SHOWN))
    return "\n".join(lines)


def finite(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()
    }


def record(decision: Decision, data: list[str], previous: dict[str, Any] | None) -> dict:
    """The champion.json content after promoting ``decision.candidate``."""
    return {
        "tag": decision.candidate,
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "previous": previous.get("tag") if previous else None,
        "evaluation_data": data,
        "figures": {tag: finite(m) for tag, m in decision.figures.items()},
    }


def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--min-recall",
        type=float,
        default=DEFAULT_MIN_RECALL,
        help="recall the candidate must reach on the window (default %(default)s)",
    )
    parser.add_argument(
        "--max-fpr-increase",
        type=float,
        default=DEFAULT_MAX_FPR_INCREASE,
        help="most the candidate's FPR may exceed the champion's (default %(default)s)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("candidate", help="model tag to promote, e.g. fraud-model:abc123")
    parser.add_argument(
        "--champion",
        help="tag to compare with (default: the current champion in $BENTOML_HOME/"
        "champion.json; none yet = the recall floor only)",
    )
    parser.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="labelled CSV(s) of a recent window, later than the candidate's training data",
    )
    parser.add_argument("--history", help="CSV of earlier transactions to warm up the history")
    add_gate_arguments(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="evaluate and decide, but write nothing"
    )
    parser.add_argument(
        "--force", action="store_true", help="promote whatever the gate says (rollback)"
    )
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")


def load_frames(paths: list[str], history: str | None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    import pandas as pd

    from fraudstream.loader import load_csv

    frames = [load_csv(p, require_target=True).frame for p in paths]
    frame = pd.concat(frames, ignore_index=True).sort_values("transaction_time", kind="stable")
    return frame.reset_index(drop=True), load_csv(history).frame if history else None


def promote(args: argparse.Namespace, frame: pd.DataFrame, history: pd.DataFrame | None) -> int:
    """Decide, print, and write champion.json when the gate (or --force) lets it through."""
    previous = read_champion()
    champion_tag = args.champion or (previous or {}).get("tag")
    decision = decide(
        args.candidate, champion_tag, frame, history, args.min_recall, args.max_fpr_increase
    )
    promoted = decision.promoted or args.force
    written = None
    if promoted and not args.dry_run:
        written = write_champion(record(decision, list(args.data), previous))
    if args.json:
        out = {
            "candidate": decision.candidate,
            "champion": decision.champion,
            "promoted": promoted and not args.dry_run,
            "passed_gate": decision.promoted,
            "reasons": decision.reasons,
            "figures": {tag: finite(m) for tag, m in decision.figures.items()},
            "champion_file": str(written) if written else None,
        }
        print(json.dumps(out))
    else:
        print(table(decision))
        if decision.champion is None:
            print("no champion to compare with: the recall floor only")
        for reason in decision.reasons:
            print(f"refused: {reason}")
        if written:
            forced = " (forced)" if not decision.promoted else ""
            print(f"promoted {decision.candidate}{forced}: {written}")
        elif promoted:
            print(f"would promote {decision.candidate} (dry run)")
    return 0 if promoted else 1


def run(args: argparse.Namespace) -> int:
    from bentoml.exceptions import NotFound

    from fraudstream.loader import DataError

    try:
        frame, history = load_frames(args.data, args.history)
    except DataError as err:
        print(f"error: {err}")
        return 2
    try:
        return promote(args, frame, history)
    except NotFound as err:  # a tag not in the store
        print(f"error: {err}")
        return 2
