"""``bclib sweep``: the notebook series over a grid of parameters, runs in parallel processes."""
from __future__ import annotations

import argparse

from bclib.run.commands.run import parse_parameter, parse_value
from bclib.run.sweep import SweepError, expand_grid, run_sweep


def parse_grid_entry(text: str) -> tuple[str, list]:
    """``"seed=0,1"`` -> ``("seed", [0, 1])``; each value parsed as ``bclib run -p`` parses one."""
    key, _ = parse_parameter(text)
    values = [parse_value(value.strip()) for value in text.partition("=")[2].split(",") if value.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected KEY=V1,V2 with at least one value, got {text!r}")
    return key, values


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="run the series for every combination of a parameter grid",
        description=(
            "Run the notebook series once per combination of --grid values (e.g. seeds x datasets), "
            "each into reports/<sweep_id>-<n>, at most --workers at a time, and write "
            "reports/<sweep_id>/sweep_summary.csv and .md (one row per run and model)."
        ),
    )
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", type=parse_grid_entry,
                        help="a parameter and its values; repeat for more keys (dataset and profile allowed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="fixed",
                        type=parse_parameter, help="a notebook parameter fixed for every run")
    parser.add_argument("--notebooks", default=None, help="comma-separated notebook numbers or names, e.g. 02,03")
    parser.add_argument("--workers", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument("--profile", default="smoke", help="smoke, quick or full (default smoke)")
    parser.add_argument("--dataset", default="idc", help="dataset when not in the grid (default idc)")
    parser.add_argument("--data", default=None,
                        help="dataset folder; a data root with one folder per dataset when the grid varies dataset")
    parser.add_argument("--sweep-id", default=None, help="name of the sweep (default sweep-<timestamp>)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if not args.grid:
        raise SweepError("give at least one --grid KEY=V1,V2 (e.g. --grid seed=0,1)")
    grid = dict(args.grid)
    if len(grid) < len(args.grid):
        raise SweepError("a grid key is given twice; list all its values once: --grid KEY=V1,V2")
    notebooks = [name.strip() for name in args.notebooks.split(",") if name.strip()] if args.notebooks else None
    print(f"sweep: {len(expand_grid(grid))} runs, {args.workers} at a time, profile {args.profile}", flush=True)
    result = run_sweep(grid, base=dict(args.fixed), max_workers=args.workers, profile=args.profile,
                       dataset=args.dataset, data=args.data, sweep_id=args.sweep_id, notebooks=notebooks)
    for run in result.runs:
        print(f"  {run.run_id}: {run.status} ({run.seconds:.0f} s) {run.varied}"
              + (f" - {run.error}" if run.error else ""))
    print(f"summary: {result.summary_md}\n         {result.summary_csv}")
    return 0 if result.ok else 1
