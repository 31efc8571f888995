"""The ``bclib`` console command. Each sub-command lives in ``bclib.run.commands.<name>``.

A command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (a callable taking the parsed arguments and returning an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from bclib import DISCLAIMER, __version__, import_tensorflow_quietly

COMMAND_MODULES = ("data", "run", "evaluate", "predict", "app", "bench", "sweep")
#: Commands that load TensorFlow in this process: imported first with its C++ start-up messages hidden.
TENSORFLOW_COMMANDS = ("evaluate", "predict", "bench")


class CommandError(Exception):
    """A user-facing failure: printed as ``error: ...`` with exit code 2, no traceback."""


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dataset`` and ``--data``, the same for every command that reads a dataset."""
    parser.add_argument("--dataset", default="idc", help="dataset name (default: idc)")
    parser.add_argument("--data", default=None, metavar="PATH",
                        help="dataset folder (default: $BCLIB_DATA_<NAME>, $BCLIB_DATA, then data/)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bclib",
        description=f"Breast-cancer image classification notebook series. {DISCLAIMER}",
    )
    parser.add_argument("--version", action="version", version=f"bclib {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"bclib.run.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if args.command in TENSORFLOW_COMMANDS:
            import_tensorflow_quietly()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CommandError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
