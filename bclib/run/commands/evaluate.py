"""``bclib evaluate --model PATH/model.keras --dataset idc --data PATH [--split ...]``: metrics with CIs."""
from __future__ import annotations

import argparse

from bclib import DISCLAIMER
from bclib.run.cli import add_data_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    from bclib.evaluation.evaluate import SPLIT_CHOICES

    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a saved model on a dataset: metrics at its threshold with patient bootstrap CIs",
        description=(
            "Load model.keras and its model_card.json, scan the data, select the patients of a split "
            "(re-made with the card's method and seed) or every image, and print each metric at the card's "
            f"validation-chosen threshold with a 95 percent patient-bootstrap interval. {DISCLAIMER}"
        ),
    )
    parser.add_argument("--model", required=True, help="path to model.keras (its model_card.json must sit beside it)")
    add_data_arguments(parser)
    parser.add_argument("--split", default="test", choices=SPLIT_CHOICES,
                        help="test/val of the card's split, the official test or validation patients, or all images (default: test)")
    parser.add_argument("--seed", type=int, default=None, help="split seed (default: the card's)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of patients (0: no intervals)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per model call")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--progress", action="store_true", help="show a progress bar while predicting")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print; errors (bad model path, no card, bad data) reach the CLI as ValueError."""
    from bclib.evaluation.evaluate import evaluate_model, format_table
    from bclib.evaluation.modelcard import json_text

    if args.n_boot < 0:
        raise ValueError(f"--n-boot must be >= 0, got {args.n_boot}")
    result = evaluate_model(args.model, dataset=args.dataset, data=args.data, split=args.split, seed=args.seed,
                            n_boot=args.n_boot, batch_size=args.batch_size, progress=args.progress)
    if args.json:
        print(json_text(result, indent=None))
    else:
        print(format_table(result))
    return 0
