"""The one console entry point: ``fraudstream <command> ...``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Modules keep heavy imports (catboost, bentoml, pandas) inside ``run`` so ``--help`` stays fast,
and so an install without a command's extra (``pip install 'fraudstream[stream]'`` has no CatBoost)
still runs the other commands; the missing one fails with a line naming the extra to install.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys

# command name -> (module, the package extra its dependencies come from, one-line help)
COMMANDS: dict[str, tuple[str, str | None, str]] = {
    "version": ("fraudstream.doctor", None, "print the package version"),
    "doctor": ("fraudstream.doctor", None, "report what is installed and running"),
    "up": ("fraudstream.up", "local", "run the whole pipeline locally on embedded defaults"),
    "generate": ("fraudstream.simulator", "stream", "simulate card transactions to a CSV"),
    "train": ("fraudstream.training", "train", "train the CatBoost fraud model"),
    "evaluate": ("fraudstream.evaluation", "train", "score a labelled CSV and report quality"),
    "retrain": (
        "fraudstream.retrain",
        "train",
        "check a labelled window's data quality, train a candidate (and --promote it)",
    ),
    "promote": (
        "fraudstream.promotion",
        "train",
        "gate a candidate model against the champion and make it the champion",
    ),
    "migrate": ("fraudstream.migrations", "stream", "apply the PostgreSQL schema migrations"),
    "topics": ("fraudstream.topics", "stream", "create the Kafka topics"),
    "replay": ("fraudstream.replay", "stream", "produce a CSV's transactions to Kafka"),
    "bridge": ("fraudstream.bridge", "stream", "consume transactions, score them, publish scores"),
    "writer": ("fraudstream.writer", "stream", "consume scores and store them in PostgreSQL"),
    "labels": (
        "fraudstream.labels",
        "stream",
        "load confirmed outcomes into the labels topic, or store them in PostgreSQL",
    ),
    "report": (
        "fraudstream.quality",
        "stream",
        "live quality per model version from scores and labels (recall, false positives, ...)",
    ),
    "dlq": ("fraudstream.dlq", "stream", "list or replay the dead-letter topic"),
    "history": (
        "fraudstream.retention",
        "stream",
        "prune the scorer's per-card history in PostgreSQL, or backfill it from CSV files",
    ),
    "scores": ("fraudstream.retention", "stream", "delete scores older than the retention"),
    "shadow": (
        "fraudstream.shadow",
        "stream",
        "compare the challenger's shadow scores with the champion's on labelled transactions",
    ),
}


def missing_extra(command: str, err: ModuleNotFoundError) -> str | None:
    """The one-line error for a third-party module the command's extra provides, else None."""
    extra = COMMANDS[command][1]
    top = (err.name or "").split(".")[0]
    if extra is None or not top or top == "fraudstream":
        return None
    return (
        f"fraudstream {command}: the Python package {top!r} is not installed; "
        f"install the {extra!r} extra: pip install 'fraudstream[{extra}]'"
    )


def _fail(message: str, _args: argparse.Namespace) -> int:
    print(message, file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fraudstream", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, extra, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            message = missing_extra(name, err)
            if message is None:
                raise
            # listed, but running it (any arguments, --help too) prints what to install
            cmd = sub.add_parser(name, help=f"{help_text} (needs fraudstream[{extra}])",
                                 add_help=False)  # fmt: skip
            cmd.set_defaults(_run=functools.partial(_fail, message), _unavailable=True)
            continue
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        add = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
        add(cmd)
        cmd.set_defaults(_run=getattr(module, f"run_{name}", None) or module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "_unavailable", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args._run(args) or 0)
    except ModuleNotFoundError as err:
        message = missing_extra(args.command, err)
        if message is None:
            raise
        return _fail(message, args)


if __name__ == "__main__":
    sys.exit(main())
