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
from bclib.evaluation.modelcard import CARD_FILE, write_json

MANIFEST_FILE = "manifest.json"
SUMMARY_MARKDOWN = "summary.md"
SUMMARY_JSON = "summary.json"
FIGURES_FILE = "figures.json"
FIGURE_DPI = 120

#: Test metrics copied into the summary, in column order.
SUMMARY_METRICS = ("roc_auc", "pr_auc", "balanced_accuracy", "sensitivity", "specificity", "f1")
#: Columns every summary has, even an empty one.
SUMMARY_COLUMNS = (
    "notebook", "model", *SUMMARY_METRICS, "threshold", "weights_used", "train_seconds",
    "dataset", "synthetic", "evaluated_on",
)
#: ``weights.requested`` values that mean "no pretrained weights were wanted".
_NO_PRETRAINED = (None, "", "none", "random", "scratch")

_RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SYNTHETIC_BANNER = (
    "**SYNTHETIC DEMO DATA**: these results come from generated images, not from patients. "
    "They show that the pipeline runs; they say nothing about real performance."
)


class RunExistsError(ValueError):
    """A run folder with this id already exists (run folders are never overwritten)."""


# --------------------------------------------------------------------------- run folders

def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a safe folder name (letters, digits, ``.``, ``_``, ``-``)."""
    if not isinstance(run_id, str) or not _RUN_ID_PATTERN.match(run_id) or ".." in run_id:
        raise ValueError(
            f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' only "
            "(it names a folder under reports/)"
        )
    return run_id


def new_run_id(prefix: str = "run") -> str:
    """A fresh id such as ``run-20250101-120000-3fa2``: timestamp plus a random suffix.

    The suffix makes two ids made in the same second differ; an id whose folder already
    exists under ``reports/`` is never returned.
    """
    validate_run_id(prefix)
    while True:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_id = f"{prefix}-{stamp}-{secrets.token_hex(2)}"
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
        raise RunExistsError(
            f"run folder {str(directory)!r} already exists and is never overwritten: "
            f"choose another --run-id, or continue it with --resume {run_id}"
        ) from None
    return directory


def notebook_stem(notebook_name: str | Path) -> str:
    """``"02_baseline_cnn"`` from ``"02_baseline_cnn"``, ``"02_baseline_cnn.ipynb"`` or a path."""
    name = Path(str(notebook_name)).name
    if name.endswith(".ipynb"):
        name = name[: -len(".ipynb")]
    if not name or not _RUN_ID_PATTERN.match(name):
        raise ValueError(f"invalid notebook name {notebook_name!r}")
    return name


def notebook_dir(run_id: str, notebook_name: str | Path, create: bool = True) -> Path:
    """The folder of one notebook inside a run: ``reports/<run_id>/<NN_notebook>/``."""
    directory = run_dir(run_id) / notebook_stem(notebook_name)
    if create:
        directory.mkdir(parents=True, exist_ok=True)
    return directory


# --------------------------------------------------------------------------- figures

def sanitise_name(name: str) -> str:
    """A safe file stem: runs of characters other than letters, digits, ``.``, ``_``, ``-``
    become ``_``; a ``.png`` suffix is dropped."""
    text = str(name).strip()
    if text.lower().endswith(".png"):
        text = text[:-4]
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    if not text:
        raise ValueError(f"figure name {name!r} has no usable characters")
    return text


def save_fig(fig: Any, name: str, directory: str | Path, record: bool = True) -> Path:
    """Save a matplotlib figure as ``<directory>/<name>.png`` (dpi 120, tight bounding box).

    With ``record`` the file is also listed in ``<directory>/figures.json`` so the run
    summary links it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{sanitise_name(name)}.png"
    fig.savefig(path, dpi=FIGURE_DPI, bbox_inches="tight")
    if record:
        _record_figure(directory, path.name)
    return path


def _record_figure(directory: Path, file_name: str) -> None:
    listed = read_figures(directory)
    if file_name not in listed:
        write_json(listed + [file_name], directory / FIGURES_FILE)


def read_figures(directory: str | Path) -> list[str]:
    """File names listed in ``<directory>/figures.json`` (a list of names or of
    ``{"file": ...}`` objects); an absent or unreadable file gives ``[]``."""
    path = Path(directory) / FIGURES_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        warnings.warn(f"ignoring unreadable {path}: {error}", stacklevel=2)
        return []
    names = []
    for item in data if isinstance(data, list) else []:
        name = item.get("file") if isinstance(item, dict) else item
        if isinstance(name, str) and name:
            names.append(name)
    return names


# --------------------------------------------------------------------------- summary

def collect_model_cards(run_dir: str | Path) -> list[dict]:
    """Every ``model_card.json`` of a run (``*/model_card.json`` and one level deeper for
    notebooks that train several models), sorted by path.

    Each card gets ``_card_path`` (relative to the run folder) and, when it lacks one, the
    ``notebook`` of its folder. Unreadable cards are skipped with a warning.
    """
    run_dir = Path(run_dir)
    found = sorted(set(run_dir.glob(f"*/{CARD_FILE}")) | set(run_dir.glob(f"*/*/{CARD_FILE}")))
    cards = []
    for path in found:
        try:
            card = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            warnings.warn(f"skipping unreadable model card {path}: {error}", stacklevel=2)
            continue
        if not isinstance(card, dict):
            warnings.warn(f"skipping model card {path}: not a JSON object", stacklevel=2)
            continue
        relative = path.relative_to(run_dir)
        card["_card_path"] = relative.as_posix()
        card.setdefault("notebook", relative.parts[0])
        cards.append(card)
    return cards


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _card_row(card: dict) -> dict:
    metrics = card.get("metrics") or {}
    evaluated_on = next((name for name in ("test", "val") if isinstance(metrics.get(name), dict)), None)
    chosen = metrics.get(evaluated_on, {}) if evaluated_on else {}
    weights = card.get("weights") or {}
    dataset = card.get("dataset") or {}
    threshold = card.get("threshold")
    threshold_value = threshold.get("value") if isinstance(threshold, dict) else threshold
    if _number(threshold_value) is None:
        threshold_value = chosen.get("threshold")
    row: dict[str, Any] = {
        "notebook": card.get("notebook"),
        "model": card.get("model_name"),
        **{name: _number(chosen.get(name)) for name in SUMMARY_METRICS},
        "threshold": _number(threshold_value),
        "weights_used": weights.get("used") if isinstance(weights, dict) else weights,
        "train_seconds": _number(card.get("train_seconds")),
        "dataset": dataset.get("name") if isinstance(dataset, dict) else dataset,
        "synthetic": bool(dataset.get("synthetic", False)) if isinstance(dataset, dict) else False,
        "evaluated_on": evaluated_on,
    }
    intervals = chosen.get("ci") or {}
    for name in SUMMARY_METRICS:
        bounds = intervals.get(name) if isinstance(intervals, dict) else None
        if isinstance(bounds, (list, tuple)) and len(bounds) == 2:
            row[f"{name}_ci_low"] = _number(bounds[0])
            row[f"{name}_ci_high"] = _number(bounds[1])
    return row


def build_summary(run_dir: str | Path) -> pd.DataFrame:
    """One row per model card of the run: test metrics (validation when a card has no test
    metrics, see ``evaluated_on``), threshold, weights used, timing, data, and the bootstrap
    intervals (``<metric>_ci_low/high``) when the card has them."""
    rows = [_card_row(card) for card in collect_model_cards(run_dir)]
    frame = pd.DataFrame(rows)
    ci_columns = [
        f"{name}_ci_{side}" for name in SUMMARY_METRICS for side in ("low", "high")
        if f"{name}_ci_{side}" in frame.columns
    ]
    columns = list(SUMMARY_COLUMNS[:-3]) + ci_columns + list(SUMMARY_COLUMNS[-3:])
    return frame.reindex(columns=columns)


def random_weight_models(cards: list[dict]) -> list[str]:
    """Names (``notebook/model``) of models that wanted pretrained weights but used random ones."""
    found = []
    for card in cards:
        weights = card.get("weights") or {}
        if not isinstance(weights, dict):
            continue
        used = str(weights.get("used") or "").lower()
        requested = weights.get("requested")
        requested = requested.lower() if isinstance(requested, str) else requested
        if used.startswith("random") and requested not in _NO_PRETRAINED:
            found.append(f"{card.get('notebook')}/{card.get('model_name')}")
    return found


def _format_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of ``frame`` (floats with 3 decimals, NaN as ``–``)."""
    if frame.empty:
        return "_(no rows)_"
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = [
        "| " + " | ".join(_format_cell(v) for v in row) + " |"
        for row in frame.astype(object).itertuples(index=False)
    ]
    return "\n".join([header, rule, *body])


def display_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The summary with each metric and its interval merged into one text cell, for reading."""
    shown = frame.copy()
    for name in SUMMARY_METRICS:
        low, high = f"{name}_ci_low", f"{name}_ci_high"
        if low in shown.columns and high in shown.columns:
            shown[name] = [
                _format_cell(v) + (f" ({_format_cell(lo)}–{_format_cell(hi)})" if not pd.isna(lo) else "")
                for v, lo, hi in zip(shown[name], shown[low], shown[high])
            ]
            shown = shown.drop(columns=[low, high])
    if "train_seconds" in shown.columns:
        shown["train_seconds"] = [_seconds(v) for v in shown["train_seconds"]]
    return shown


def _seconds(value: Any) -> str:
    number = _number(value)
    return "–" if number is None or pd.isna(number) else f"{number:.1f}"


def _read_manifest(run_dir: Path) -> dict:
    path = run_dir / MANIFEST_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        warnings.warn(f"ignoring unreadable manifest {path}: {error}", stacklevel=2)
        return {}


def _notebook_names(run_dir: Path, manifest: dict) -> list[str]:
    names = list((manifest.get("notebooks") or {}).keys())
    for path in sorted(run_dir.glob("*.ipynb")):
        if path.stem not in names:
            names.append(path.stem)
    return names


def _summary_markdown(run_dir: Path, manifest: dict, frame: pd.DataFrame, cards: list[dict]) -> str:
    run_id = manifest.get("run_id", run_dir.name)
    synthetic = bool(manifest.get("synthetic")) or bool(frame["synthetic"].fillna(False).astype(bool).any())
    random_models = random_weight_models(cards)
    lines = [f"# Run `{run_id}`", "", f"> **{DISCLAIMER}**", ""]
    if synthetic:
        lines += [f"> ⚠️ {SYNTHETIC_BANNER}", ""]
    if random_models:
        lines += [
            "> ⚠️ **RANDOM WEIGHTS INSTEAD OF IMAGENET**: "
            + ", ".join(f"`{name}`" for name in random_models)
            + " could not load ImageNet weights and started from random weights; their "
            "transfer-learning results are not representative.",
            "",
        ]
    facts = [
        ("status", manifest.get("status")), ("profile", manifest.get("profile")),
        ("dataset", manifest.get("dataset")), ("data", manifest.get("data_dir")),
        ("started", manifest.get("started")), ("finished", manifest.get("finished")),
        ("git commit", (manifest.get("git") or {}).get("commit")),
    ]
    facts = [(key, value) for key, value in facts if value not in (None, "")]
    if facts:
        lines += [f"- **{key}**: {value}" for key, value in facts] + [""]

    lines += ["## Models", ""]
    if frame.empty:
        lines += ["No model cards were found in this run.", ""]
    else:
        if (frame["evaluated_on"] == "val").any():
            lines += ["Rows with `evaluated_on = val` had no test metrics: they are validation scores.", ""]
        lines += [markdown_table(display_summary(frame)), ""]

    notebook_info = manifest.get("notebooks") or {}
    names = _notebook_names(run_dir, manifest)
    if names:
        lines += ["## Notebooks", "", "| notebook | status | seconds | report |", "|---|---|---|---|"]
        for name in names:
            info = notebook_info.get(name) or {}
            html = run_dir / f"{name}.html"
            link = f"[{name}.html]({name}.html)" if html.is_file() else "–"
            lines.append(
                f"| {name} | {_format_cell(info.get('status'))} | {_seconds(info.get('seconds'))} | {link} |"
            )
        lines.append("")

    figure_lines = []
    for folder in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        figures = [name for name in read_figures(folder) if (folder / name).is_file()]
        if figures:
            figure_lines += [f"### {folder.name}", ""]
            figure_lines += [f"- [{Path(name).stem}]({folder.name}/{name})" for name in figures]
            figure_lines.append("")
    if figure_lines:
        lines += ["## Figures", "", *figure_lines]
    return "\n".join(lines).rstrip() + "\n"


def write_summary(run_dir: str | Path, manifest: dict | None = None) -> tuple[Path, Path]:
    """Write ``summary.md`` and ``summary.json`` into the run folder; return both paths.

    ``manifest`` defaults to the run's ``manifest.json`` (if any). The markdown carries the
    disclaimer, a banner for synthetic data and one for models that used random instead of
    ImageNet weights, the model table, links to each executed notebook's HTML and to the
    figures listed in each notebook folder's ``figures.json``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist")
    manifest = _read_manifest(run_dir) if manifest is None else manifest
    cards = collect_model_cards(run_dir)
    frame = build_summary(run_dir)
    markdown_path = run_dir / SUMMARY_MARKDOWN
    text = _summary_markdown(run_dir, manifest, frame, cards)
    tmp = markdown_path.with_name(markdown_path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(markdown_path)
    synthetic = bool(manifest.get("synthetic")) or bool(frame["synthetic"].fillna(False).astype(bool).any())
    payload = {
        "run_id": manifest.get("run_id", run_dir.name),
        "disclaimer": DISCLAIMER,
        "synthetic": synthetic,
        "random_weight_models": random_weight_models(cards),
        "columns": list(frame.columns),
        "rows": frame.astype(object).where(frame.notna(), None).to_dict(orient="records"),
        "manifest": manifest,
    }
    json_path = write_json(payload, run_dir / SUMMARY_JSON)
    return markdown_path, json_path


__all__ = [
    "RunExistsError", "new_run_id", "run_dir", "create_run_dir", "notebook_dir", "notebook_stem",
    "save_fig", "read_figures", "sanitise_name", "collect_model_cards", "build_summary",
    "random_weight_models", "markdown_table", "display_summary", "write_summary",
]
