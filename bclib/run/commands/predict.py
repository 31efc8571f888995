"""``bclib predict --model PATH/model.keras IMAGE_OR_FOLDER...``: one line (or JSON object) per image."""
from __future__ import annotations

import argparse
import sys

from bclib import DISCLAIMER
from bclib.app.predict import DEFAULT_BATCH_SIZE, Predictor, check_threshold, collect_image_paths
from bclib.data.index import one_line
from bclib.evaluation.modelcard import json_text, weights_description


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict image files or folders with a saved model and its card",
        description=(
            "Print, for every image, the probability of each class (named from the model card) and the "
            "decision at the card's threshold. Folders are walked. An image far from what the model was trained "
            "on (over 4x its training patch, or not coloured like H&E where it was trained on H&E) gets a "
            "'caution:' line on stderr (in --json, a 'cautions' list). Tabs, newlines and backslashes in file "
            f"names are written as \\t, \\n and \\\\ in the text output. {DISCLAIMER}"
        ),
    )
    parser.add_argument("--model", required=True, help="path to model.keras (its model_card.json must sit beside it)")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of tab-separated text")
    parser.add_argument("--threshold", type=float, default=None, help="decision threshold (default: the card's)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="images per model call")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Predict every input; exit 0 when all were predicted, 1 when some file failed (each one says why)."""
    threshold = check_threshold(args.threshold)
    predictor = Predictor.load(args.model)
    paths, problems = collect_image_paths(args.inputs)
    failures = 0
    print(f"# {DISCLAIMER} model: {predictor.model_name}, {weights_description(predictor.card)}", file=sys.stderr)

    def emit(prediction) -> None:
        nonlocal failures
        if prediction.error is not None:
            failures += 1
            print(f"error: {one_line(prediction.source)}: {one_line(prediction.error)}", file=sys.stderr)
            if not args.json:
                return
        for caution in prediction.cautions:
            print(f"caution: {one_line(prediction.source)}: {caution}", file=sys.stderr)
        print(json_text(prediction.to_dict(), indent=None, ensure_ascii=False) if args.json else prediction.to_line(),
              flush=False)

    for problem in problems:
        emit(problem)
    for prediction in predictor.predict_sources(paths, batch_size=args.batch_size, threshold=threshold):
        emit(prediction)
    sys.stdout.flush()
    if failures:
        total = len(paths) + len(problems)
        print(f"{failures} of {total} input(s) could not be predicted (see the messages above)", file=sys.stderr)
        return 1
    return 0
