"""The one console entry point: ``fraudstream <command> ...``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Modules keep heavy imports (catboost, bentoml, pandas) inside ``run`` so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "version": ("fraudstream.doctor", "print the package version"),
    "doctor": ("fraudstream.doctor", "report what is installed and running"),
    "up": ("fraudstream.up", "run the whole pipeline locally on embedded defaults"),
    "generate": ("fraudstream.simulator", "simulate card transactions to a CSV"),
    "train": ("fraudstream.training", "train the CatBoost fraud model"),
    "evaluate": ("fraudstream.evaluation", "score a labelled CSV and report quality"),
    "migrate": ("fraudstream.migrations", "apply the PostgreSQL schema migrations"),
    "topics": ("fraudstream.topics", "create the Kafka topics"),
    "replay": ("fraudstream.replay", "produce a CSV's transactions to Kafka"),
    "bridge": ("fraudstream.bridge", "consume transactions, score them, publish scores"),
    "writer": ("fraudstream.writer", "consume scores and store them in PostgreSQL"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fraudstream", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        add = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
        add(cmd)
        cmd.set_defaults(_run=getattr(module, f"run_{name}", None) or module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
