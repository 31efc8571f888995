"""``bclib run``: execute the notebook series with papermill into ``reports/<run_id>/``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bclib import DISCLAIMER
from bclib.display import SYNTHETIC_BANNER
from bclib.run import reports
from bclib.profiles import PROFILES
from bclib.run.cli import add_data_arguments
from bclib.run.runner import DEFAULT_PROFILE, RunFailed, run_series


def parse_value(text: str) -> Any:
    """A command-line value: a JSON literal when it parses (numbers, ``true``, ``null``, quoted
    strings, lists), Python's ``True``/``False``/``None``, else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"True": True, "False": False, "None": None}.get(text, text)


def parse_parameter(text: str) -> tuple[str, Any]:
    """``"epochs=3"`` -> ``("epochs", 3)``, the value read by :func:`parse_value`."""
    key, separator, raw = text.partition("=")
    key = key.strip()
    if not separator or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with a Python name as KEY, got {text!r}")
    return key, parse_value(raw)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the notebook series with papermill into reports/<run_id>/",
        description=(
            "Execute the numbered notebooks in order into a new run folder (never overwritten), "
            f"export each to HTML, and write manifest.json and summary.md/json. {DISCLAIMER}"
        ),
    )
    parser.add_argument("--profile", choices=tuple(PROFILES), default=DEFAULT_PROFILE,
                        help="smoke (tiny, synthetic data), quick, or full (default: %(default)s)")
    add_data_arguments(parser)
    parser.add_argument("--offline", action="store_true",
                        help="download nothing: with no IDC data found, run on the synthetic demo instead of "
                             "fetching BreastMNIST (also BCLIB_OFFLINE=1)")
    parser.add_argument("--run-id", metavar="ID", help="name of the run folder (default: run-<timestamp>)")
    parser.add_argument("--notebooks", metavar="02,05", help="only the notebooks with these prefixes")
    parser.add_argument("-p", "--parameter", dest="parameters", metavar="KEY=VALUE", action="append",
                        type=parse_parameter, default=[],
                        help="notebook parameter override (repeatable), e.g. -p epochs=2 -p augment=true")
    parser.add_argument("--resume", metavar="ID", help="continue run ID, skipping its completed notebooks")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: %(default)s)")
    parser.add_argument("--solutions", action=argparse.BooleanOptionalAction, default=None,
                        help="run the worked solutions (notebooks/solutions/) after the series "
                             "(default: for idc, the dataset the exercises are written for)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Run the series; print the run folder and the summary table. 1 when a notebook fails."""
    try:
        result = run_series(profile=args.profile, dataset=args.dataset, data=args.data, run_id=args.run_id,
                            notebooks=args.notebooks, parameters=dict(args.parameters), resume=args.resume,
                            solutions=args.solutions, kernel_name=args.kernel, progress=not args.no_progress,
                            offline=True if args.offline else None)
    except RunFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    frame = reports.build_summary(result.run_dir)
    print(f"\nrun folder: {result.run_dir}")
    if result.skipped:
        print(f"skipped (already completed): {', '.join(result.skipped)}")
    print(reports.markdown_table(reports.display_summary(frame)) if not frame.empty else "no model cards in this run")
    print(f"summary: {result.summary_markdown}")
    if result.manifest.get("data_choice"):
        print(f"data: {result.manifest['data_choice']}")
    if result.manifest.get("synthetic"):
        print(f"*** {SYNTHETIC_BANNER} ***")
    return 0
