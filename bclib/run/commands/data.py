"""``bclib data info|split|pack|check|synth|cache|download``: look at, split, pack, check, clean up or fetch."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from bclib import paths
from bclib.data.index import DatasetIndex, one_line
from bclib.data.splits import METHODS
from bclib.evaluation.modelcard import json_text
from bclib.run.cli import CommandError, add_data_arguments


#: How the text output writes file names (the help of the commands that list files says it).
ESCAPED_NAMES = ("Text output lists one file per line, with a backslash, tab, newline or carriage return in a "
                 "name written as \\\\, \\t, \\n, \\r (other control characters as \\xNN); --json "
                 "writes names unchanged.")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="inspect, split, pack, check, generate or download a dataset",
                                   description="Dataset utilities. Nothing here modifies your data folder. "
                                               f"{ESCAPED_NAMES}")
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)

    info = commands.add_parser("info", help="images, patients, per-class counts and unreadable files",
                               description="Images, patients and per-class counts; every image is decoded to "
                                           f"count the unreadable ones (--quick: not). {ESCAPED_NAMES}")
    add_data_arguments(info)
    info.add_argument("--quick", action="store_true",
                      help="count files without decoding them (unreadable: not checked)")
    info.add_argument("--workers", type=int, default=2, help="decoding threads (default: 2)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=run_info)

    split = commands.add_parser("split", help="train/val/test patients, images and positive fraction")
    add_data_arguments(split)
    split.add_argument("--split", default="patient", choices=METHODS, help="split method (see bclib.data.splits)")
    split.add_argument("--seed", type=int, default=0, help="random seed (patient and image splits)")
    split.add_argument("--json", action="store_true", help="print JSON, with the patient ID lists")
    split.set_defaults(func=run_split)

    pack = commands.add_parser("pack", help="decode every image once into the memory-mapped cache",
                               description="Decode every image once into the memory-mapped cache (reused while "
                                           "no file changes size or modification time; `data check --deep` "
                                           f"finds a cache that is stale anyway). {ESCAPED_NAMES}")
    add_data_arguments(pack)
    pack.add_argument("--image-size", type=int, default=50, help="square size in pixels (default: 50)")
    pack.add_argument("--cache-dir", default=None, help="cache folder (default: $BCLIB_CACHE or data/cache)")
    pack.add_argument("--workers", type=int, default=2, help="decoding threads (default: 2)")
    pack.add_argument("--no-progress", action="store_true", help="no progress bar")
    pack.set_defaults(func=run_pack)

    check = commands.add_parser("check", help="decode every file and list corrupt ones (exit 1 when any)",
                                description="Decode every file and list the corrupt ones and the files the scan "
                                            f"skipped (exit 1 when any). {ESCAPED_NAMES}")
    add_data_arguments(check)
    check.add_argument("--deep", action="store_true",
                       help="also compare every image with the packed caches of this data (finds a cache that "
                            "serves old pixels after a file changed in place with size and modification time kept)")
    check.add_argument("--cache-dir", default=None,
                       help="with --deep: cache folder (default: $BCLIB_CACHE or data/cache)")
    check.add_argument("--workers", type=int, default=2, help="decoding threads (default: 2)")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(func=run_check)

    synth = commands.add_parser("synth", help="write a synthetic IDC-layout dataset (tests and demos)")
    synth.add_argument("path", help="folder to write into (IDC_regular_ps50_idx5/ is created inside)")
    synth.add_argument("--patients", type=int, default=12, help="number of patients (default: 12)")
    synth.add_argument("--patches", type=int, default=24, help="patches per patient (default: 24)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    synth.set_defaults(func=run_synth)

    cache = commands.add_parser("cache", help="list the packed caches and feature files; --clean removes old ones",
                                description="List the cache folder (largest first). --clean removes unfinished "
                                            "builds, caches whose data folder is gone, and with --unused-days or "
                                            "--all more; every cache is rebuilt on demand.")
    cache.add_argument("--cache-dir", default=None, help="cache folder (default: $BCLIB_CACHE or data/cache)")
    cache.add_argument("--clean", action="store_true", help="remove what is no longer needed")
    cache.add_argument("--unused-days", type=float, default=None, help="with --clean: also what was not used for N days")
    cache.add_argument("--all", action="store_true", help="with --clean: remove everything")
    cache.add_argument("--dry-run", action="store_true", help="with --clean: only say what would be removed")
    cache.add_argument("--json", action="store_true", help="print JSON")
    cache.set_defaults(func=run_cache)

    download = commands.add_parser("download", help="download a public dataset")
    download.add_argument("name", help="dataset name, e.g. idc")
    download.add_argument("--dest", default=None, help="destination folder (default: data/<name>)")
    download.add_argument("--url", default=None, help="download from this URL instead")
    download.add_argument("--force", action="store_true",
                          help="download again, replacing what is already in the destination")
    download.set_defaults(func=run_download)


def _scan(args: argparse.Namespace) -> DatasetIndex:
    from bclib.data.datasets import scan

    return scan(args.dataset, args.data)


def _print_json(data: dict) -> None:
    print(json_text(data, ensure_ascii=False))


def run_info(args: argparse.Namespace) -> int:
    from bclib.data.check import check_dataset

    index = _scan(args)
    counts = index.counts()
    problems = list(index.problems)
    if args.quick:
        counts["unreadable"] = None  # not checked
    else:
        report = check_dataset(index, workers=args.workers, progress=not args.json)
        counts["unreadable"] = report.checked - report.decoded
        problems = report.problems
    counts["problems"] = [problem.to_dict() for problem in problems]
    if args.json:
        _print_json(counts)
        return 0
    print(f"dataset:  {counts['dataset']}{'  (SYNTHETIC data, not real tissue)' if counts['synthetic'] else ''}")
    print(f"folder:   {one_line(counts['root'])}")
    print(f"images:   {counts['images']:,}")
    print(f"patients: {counts['patients']:,}")
    for label, (name, number) in enumerate(counts["per_class"].items()):
        share = number / counts["images"] if counts["images"] else 0.0
        print(f"class {label} ({name}): {number:,} ({share:.1%})")
    unreadable = counts["unreadable"]
    print("unreadable files: " + ("not checked (--quick; `bclib data check` decodes every image)"
                                  if unreadable is None else f"{unreadable:,}"))
    print(f"skipped by the scan: {counts['skipped']:,}")
    for problem in problems[:20]:
        print(f"  {problem.line()}")
    if len(problems) > 20:
        print(f"  ... and {len(problems) - 20:,} more (`bclib data check` lists them all)")
    print(f"ignored non-image files: {counts['ignored_files']}")
    return 0


def run_split(args: argparse.Namespace) -> int:
    from bclib.data.splits import make_split

    index = _scan(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = make_split(index, method=args.split, seed=args.seed)
    if args.json:
        _print_json(split.to_dict())
    else:
        summary = split.summary()
        print(f"{index.name} split={split.method} seed={split.seed} patients_hash={split.patients_hash()}")
        print(f"{'split':<6} {'patients':>9} {'images':>9} {'positive':>9}")
        for name, row in summary.iterrows():
            fraction = "-" if row["positive_fraction"] != row["positive_fraction"] else f"{row['positive_fraction']:.3f}"
            print(f"{name:<6} {int(row['patients']):>9,} {int(row['images']):>9,} {fraction:>9}")
    for note in split.warnings:
        print(f"warning: {note}", file=sys.stderr)
    return 0


def run_pack(args: argparse.Namespace) -> int:
    from bclib.data.cache import pack

    cache = pack(_scan(args), args.image_size, cache_root=args.cache_dir, progress=not args.no_progress,
                 workers=args.workers)
    state = "reused" if cache.reused else f"packed in {cache.seconds:.1f} s"
    print(f"{len(cache):,} images at {cache.image_size}x{cache.image_size} ({cache.nbytes / 2**20:.1f} MB) {state}")
    print(f"cache: {one_line(str(cache.directory))}")
    if cache.failed:
        print(f"{len(cache.failed)} file(s) could not be decoded and were skipped:", file=sys.stderr)
        for problem in cache.failed:
            print(f"  {problem.line()}", file=sys.stderr)
    return 0


def run_check(args: argparse.Namespace) -> int:
    from bclib.data.cache import packed_caches
    from bclib.data.check import check_dataset

    if args.cache_dir is not None and not args.deep:
        raise CommandError("--cache-dir goes with --deep")
    index = _scan(args)
    caches = packed_caches(index, args.cache_dir) if args.deep else []
    report = check_dataset(index, workers=args.workers, progress=not args.json, caches=caches)
    if args.json:
        _print_json(report.to_dict())
    else:
        print("\n".join(report.lines()))
        if args.deep and not caches:
            print(f"no packed cache of this data in {one_line(str(args.cache_dir or paths.cache_dir()))} "
                  "to compare with")
        elif args.deep:
            print(f"compared with {len(caches)} packed cache(s): "
                  + ", ".join(one_line(cache.directory.name) for cache in caches))
    return 0 if report.ok else 1


def run_synth(args: argparse.Namespace) -> int:
    from bclib.data.synthetic import make_synthetic_idc

    folder = make_synthetic_idc(args.path, n_patients=args.patients, patches_per_patient=args.patches, seed=args.seed)
    print(f"synthetic IDC data ({args.patients} patients x {args.patches} patches) written to {folder}")
    print(f"use it with: bclib data info --dataset idc --data {Path(args.path)}")
    return 0


def run_cache(args: argparse.Namespace) -> int:
    from bclib.data import cache_maintenance as maintenance

    if not args.clean and (args.all or args.unused_days is not None or args.dry_run):
        raise CommandError("--all, --unused-days and --dry-run go with --clean")
    root = Path(args.cache_dir) if args.cache_dir else paths.cache_dir()
    entries = maintenance.inventory(root)
    chosen = maintenance.select_for_removal(entries, everything=args.all, unused_days=args.unused_days) \
        if args.clean else []
    freed = maintenance.remove(chosen) if chosen and not args.dry_run else 0
    if args.json:
        _print_json({"cache_dir": str(root), "entries": [entry.as_dict() for entry in entries],
                     "removed": [str(entry.path) for entry in chosen] if not args.dry_run else [],
                     "would_remove": [str(entry.path) for entry in chosen] if args.dry_run else [],
                     "freed_bytes": freed})
        return 0
    total = maintenance.human_bytes(sum(entry.bytes for entry in entries))
    print(f"cache folder: {one_line(str(root))} ({len(entries)} item(s), {total})")
    removing = {entry.path for entry in chosen}
    for entry in entries:
        what = {"packed": f"{entry.dataset} {entry.image_size}px, {entry.images} images, from {one_line(entry.source)}"
                          + ("" if entry.source_exists else " (folder gone)"),
                "unfinished": "an interrupted pack", "features": "cached features"}[entry.kind]
        mark = ("would remove " if args.dry_run else "removed ") if entry.path in removing else ""
        print(f"  {mark}{entry.path.name}  {maintenance.human_bytes(entry.bytes)}, "
              f"used {entry.age_days():.1f} days ago: {what}")
    if args.clean:
        total = maintenance.human_bytes(sum(entry.bytes for entry in chosen))
        print(f"{len(chosen)} item(s), {total} " + ("would be freed (dry run)" if args.dry_run else "freed"))
    return 0


def run_download(args: argparse.Namespace) -> int:
    from bclib.data.download import DownloadError, download

    try:
        folder = download(args.name, destination=args.dest, url=args.url, progress=True, force=args.force)
    except (DownloadError, ValueError) as error:
        raise CommandError(str(error)) from None
    print(f"{args.name} is in {folder}")
    print(f"use it with: bclib data info --dataset {args.name} --data {folder}")
    return 0
