"""``bclib bench``: speed and memory ratios measured side by side on the data given."""
from __future__ import annotations

import argparse
import json
import logging

from bclib.run.bench import SECTIONS, BenchSettings, parse_sections, run_bench
from bclib.run.bench_tools import environment_line, write_report
from bclib.run.cli import add_data_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure packing, input pipeline, frozen-backbone, inference, the app and memory as ratios",
        description=(
            "Measure, in one run on this machine, each speed as a ratio against its reference "
            "(cache vs PNG decode, tf.data vs in-RAM fit, cached features vs frozen backbone, "
            "bclib predict vs raw model.predict, latency vs target, the app's upload-to-result time vs "
            "bclib predict, memory vs packed size, large-image decoding vs its size). "
            "Prints a table and writes reports/bench/<timestamp>.json."
        ),
    )
    add_data_arguments(parser)
    parser.add_argument("--tiny", action="store_true",
                        help="every section on a small synthetic dataset (the CI run)")
    parser.add_argument("--only", default=None, metavar="SECTIONS",
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--max-images", type=int, default=None,
                        help="use at most this many images of the dataset (subsampled, seeded)")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    parse_sections(args.only)  # fail fast on a typo, before TensorFlow loads
    if args.tiny and (args.data or args.max_images):
        raise ValueError("--tiny uses generated data; drop --data and --max-images (or drop --tiny to bench your data)")
    settings = None if args.tiny else BenchSettings(max_images=args.max_images)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices: nothing a user can act on
    log = (lambda message: None) if args.json else (lambda message: print(message, flush=True))
    report = run_bench(data=args.data, dataset=args.dataset, tiny=args.tiny, only=args.only,
                       settings=settings, log=log)
    path = write_report(report)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(environment_line(report.environment))
        print(f"data: {report.data['images']} images ({report.data['dataset']}, {report.data['root']})"
              + ("  [synthetic]" if report.data["synthetic"] else ""))
        print()
        print(report.table())
        print(f"\n{report.seconds:.0f} s; report: {path}")
    return 0
