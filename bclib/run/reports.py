"""Run folders under ``reports/``, figure saving, and the run summary (``summary.md/json``).

A run folder ``reports/<run_id>/`` is created once and never overwritten. Each notebook
writes into ``reports/<run_id>/<NN_notebook>/`` (figures, ``model.keras``,
``model_card.json``); :func:`write_summary` compares every model card of a run.
"""
from __future__ import annotations

import json
import re
import secrets
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from bclib import DISCLAIMER, paths
from bclib.display import SYNTHETIC_BANNER
from bclib.evaluation import modelcard
from bclib.evaluation.modelcard import CARD_FILE, write_json

MANIFEST_FILE = "manifest.json"
SUMMARY_MARKDOWN = "summary.md"
SUMMARY_JSON = "summary.json"
FIGURE_DPI = 120

#: Test metrics copied into the summary, in column order.
SUMMARY_METRICS = ("roc_auc", "pr_auc", "balanced_accuracy", "sensitivity", "specificity", "f1")
#: Columns every summary has, even an empty one; the bootstrap intervals go before the last three.
SUMMARY_COLUMNS = ("notebook", "model", *SUMMARY_METRICS, "threshold", "weights", "notebook_seconds",
                   "dataset", "synthetic", "evaluated_on")

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RunExistsError(ValueError):
    """A run folder with this id already exists (run folders are never overwritten)."""


# --------------------------------------------------------------------------- run folders

def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a safe folder name (letters, digits, ``.``, ``_``, ``-``)."""
    if not isinstance(run_id, str) or not _SAFE_NAME.match(run_id) or ".." in run_id:
        raise ValueError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' only "
                         "(it names a folder under reports/)")
    return run_id


def new_run_id(prefix: str = "run") -> str:
    """A fresh id such as ``run-20250101-120000-3fa2b7c1`` whose folder does not exist yet."""
    while True:
        run_id = f"{prefix}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"
        if not run_dir(run_id).exists():
            return run_id


def run_dir(run_id: str) -> Path:
    """The folder of run ``run_id`` under :func:`bclib.paths.reports_dir` (not created)."""
    return paths.reports_dir() / validate_run_id(run_id)


def create_run_dir(run_id: str) -> Path:
    """Create the folder of a new run; raise :class:`RunExistsError` if it already exists."""
    directory = run_dir(run_id)
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir()
    except FileExistsError:
        raise RunExistsError(f"run folder {str(directory)!r} already exists and is never overwritten: "
                             f"choose another --run-id, or continue it with --resume {run_id}") from None
    return directory


def save_fig(fig: Any, name: str, directory: str | Path) -> Path:
    """Save a matplotlib figure as ``<directory>/<name>.png``; characters unsafe in a file name become ``_``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name).strip().removesuffix(".png")).strip("._-")
    if not stem:
        raise ValueError(f"figure name {name!r} has no usable characters")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}.png"
    fig.savefig(path, dpi=FIGURE_DPI, bbox_inches="tight")
    return path


# --------------------------------------------------------------------------- summary

def read_manifest(run_folder: str | Path) -> dict:
    """The run's ``manifest.json``, or ``{}`` when it is missing or unreadable (with a warning)."""
    path = Path(run_folder) / MANIFEST_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError) as error:
        warnings.warn(f"ignoring unreadable manifest {path}: {error}", stacklevel=2)
        return {}


def collect_model_cards(run_folder: str | Path) -> list[dict]:
    """Every ``model_card.json`` of a run, one or two folders deep, sorted by path.

    Each card gets ``_card_path`` (relative to the run folder) and, when it lacks one, the
    ``notebook`` of its folder. Unreadable cards are skipped with a warning.
    """
    run_folder = Path(run_folder)
    cards = []
    for path in sorted({*run_folder.glob(f"*/{CARD_FILE}"), *run_folder.glob(f"*/*/{CARD_FILE}")}):
        try:
            card = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            warnings.warn(f"skipping unreadable model card {path}: {error}", stacklevel=2)
            continue
        relative = path.relative_to(run_folder)
        card["_card_path"] = relative.as_posix()
        card.setdefault("notebook", relative.parent.as_posix())
        cards.append(card)
    return cards


def _card_row(card: dict, manifest: dict) -> dict:
    metrics = card.get("metrics") or {}
    evaluated_on = next((split for split in ("test", "val") if split in metrics), None)
    chosen = metrics.get(evaluated_on) or {}
    run_state = (manifest.get("notebooks") or {}).get(card["notebook"]) or {}
    row: dict[str, Any] = {
        "notebook": card["notebook"],
        "model": card.get("model_name"),
        **{name: chosen.get(name) for name in SUMMARY_METRICS},
        "threshold": (card.get("threshold") or {}).get("value"),
        "weights": modelcard.weights_description(card),
        "notebook_seconds": run_state.get("seconds"),
        "dataset": (card.get("dataset") or {}).get("name"),
        "synthetic": bool((card.get("dataset") or {}).get("synthetic", False)),
        "evaluated_on": evaluated_on,
    }
    for name, (low, high) in (chosen.get("ci") or {}).items():
        if name in SUMMARY_METRICS:
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = low, high
    return row


def build_summary(run_folder: str | Path, manifest: dict | None = None) -> pd.DataFrame:
    """One row per model card of the run: test metrics (validation when a card has no test
    metrics, see ``evaluated_on``) with their bootstrap intervals (``<metric>_ci_low/high``),
    threshold, weights, the run time of the model's notebook (from the manifest) and the data."""
    manifest = read_manifest(run_folder) if manifest is None else manifest
    frame = pd.DataFrame([_card_row(card, manifest) for card in collect_model_cards(run_folder)])
    intervals = [f"{name}_ci_{side}" for name in SUMMARY_METRICS for side in ("low", "high")
                 if f"{name}_ci_{side}" in frame.columns]
    return frame.reindex(columns=[*SUMMARY_COLUMNS[:-3], *intervals, *SUMMARY_COLUMNS[-3:]])


def _format_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _seconds(value: Any) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.1f}"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of ``frame`` (floats with 3 decimals, NaN as ``–``)."""
    if frame.empty:
        return "_(no rows)_"
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(_format_cell, row)) + " |" for row in frame.astype(object).itertuples(index=False)]
    return "\n".join(lines)


def display_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The summary with each metric and its interval merged into one text cell, for reading."""
    shown = frame.copy()
    for name in SUMMARY_METRICS:
        low, high = f"{name}_ci_low", f"{name}_ci_high"
        if low in shown.columns:
            shown[name] = [_format_cell(value) + ("" if pd.isna(lo) else f" ({_format_cell(lo)}–{_format_cell(hi)})")
                           for value, lo, hi in zip(shown[name], shown[low], shown[high])]
            shown = shown.drop(columns=[low, high])
    shown["notebook_seconds"] = shown["notebook_seconds"].map(_seconds)
    return shown


def _summary_markdown(run_folder: Path, manifest: dict, frame: pd.DataFrame, missing_imagenet: list[str],
                      synthetic: bool) -> str:
    lines = [f"# Run `{manifest.get('run_id', run_folder.name)}`", "", f"> **{DISCLAIMER}**", ""]
    if synthetic:
        lines += [f"> ⚠️ **{SYNTHETIC_BANNER}**", ""]
    if missing_imagenet:
        lines += ["> ⚠️ **RANDOM WEIGHTS INSTEAD OF IMAGENET**: " + ", ".join(f"`{name}`" for name in missing_imagenet)
                  + " could not load ImageNet weights (missing from the Keras cache, no download) and started from "
                  "random weights; their transfer-learning results are not representative.", ""]
    facts = {"status": manifest.get("status"), "profile": manifest.get("profile"),
             "dataset": manifest.get("dataset"), "data": manifest.get("data_dir"),
             "started": manifest.get("started"), "finished": manifest.get("finished"),
             "git commit": (manifest.get("git") or {}).get("commit")}
    lines += [f"- **{key}**: {value}" for key, value in facts.items() if value not in (None, "")] + ["", "## Models", ""]
    if frame.empty:
        lines += ["No model cards were found in this run.", ""]
    else:
        if (frame["evaluated_on"] == "val").any():
            lines += ["Rows with `evaluated_on = val` had no test metrics: they are validation scores.", ""]
        lines += ["`notebook_seconds` is the run time of the model's whole notebook, not of training alone.", "",
                  markdown_table(display_summary(frame)), ""]

    states = manifest.get("notebooks") or {}
    names = [*states, *(path.stem for path in sorted(run_folder.glob("*.ipynb")) if path.stem not in states)]
    if names:
        rows = [{"notebook": name, "status": (states.get(name) or {}).get("status"),
                 "seconds": _seconds((states.get(name) or {}).get("seconds")),
                 "report": f"[{name}.html]({name}.html)" if (run_folder / f"{name}.html").is_file() else None}
                for name in names]
        lines += ["## Notebooks", "", markdown_table(pd.DataFrame(rows)), ""]

    figures = [(folder.name, sorted(folder.glob("*.png"))) for folder in sorted(run_folder.iterdir()) if folder.is_dir()]
    if any(pngs for _, pngs in figures):
        lines += ["## Figures", ""]
        for folder, pngs in figures:
            if pngs:
                lines += [f"### {folder}", "", *(f"- [{png.stem}]({folder}/{png.name})" for png in pngs), ""]
    return "\n".join(lines).rstrip() + "\n"


def write_summary(run_folder: str | Path, manifest: dict | None = None) -> tuple[Path, Path]:
    """Write ``summary.md`` and ``summary.json`` into the run folder; return both paths.

    ``manifest`` defaults to the run's ``manifest.json`` (if any). The markdown carries the
    disclaimer, a banner for synthetic data and one naming the models that wanted ImageNet
    weights but started from random ones, the model table, links to each executed
    notebook's HTML and to the figures in each notebook folder.
    """
    run_folder = Path(run_folder)
    if not run_folder.is_dir():
        raise FileNotFoundError(f"run folder {str(run_folder)!r} does not exist")
    manifest = read_manifest(run_folder) if manifest is None else manifest
    frame = build_summary(run_folder, manifest)
    missing_imagenet = [f"{card.get('notebook')}/{card.get('model_name')}" for card in collect_model_cards(run_folder)
                        if modelcard.imagenet_missing(card)]
    synthetic = bool(manifest.get("synthetic")) or bool(frame["synthetic"].fillna(False).astype(bool).any())
    markdown_path = run_folder / SUMMARY_MARKDOWN
    markdown_path.write_text(_summary_markdown(run_folder, manifest, frame, missing_imagenet, synthetic),
                             encoding="utf-8")
    payload = {
        "run_id": manifest.get("run_id", run_folder.name), "disclaimer": DISCLAIMER, "synthetic": synthetic,
        "random_weight_models": missing_imagenet, "columns": list(frame.columns),
        "rows": frame.astype(object).where(frame.notna(), None).to_dict(orient="records"), "manifest": manifest,
    }
    return markdown_path, write_json(payload, run_folder / SUMMARY_JSON)
