"""A notebook's session: parameters resolved, data found, scanned, packed and split, once.

Every notebook calls :func:`start` right after its ``parameters`` cell::

    session = bclib.session.start("02_baseline_cnn", dataset=dataset, data_dir=data_dir,
                                  run_id=run_id, profile=profile, seed=seed, epochs=epochs)

and then asks the session for data (``session.dataset("train", ...)``), saves figures with
``session.save_fig`` and writes its model with :mod:`bclib.evaluation.experiment`.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bclib import DISCLAIMER, __version__, paths, profiles
from bclib.data.datasets import DatasetIndex, scan

INTERACTIVE_RUN_ID = "interactive"
SYNTHETIC_BANNER = "SYNTHETIC DEMO DATA: generated patches, not patients. No metric here says anything about cancer."


def resolve_dataset_location(dataset: str, data_dir: str | os.PathLike | None, allow_synthetic: bool = True) -> tuple[Path, bool]:
    """Find the data of ``dataset``; for IDC with none anywhere, generate the synthetic demo.

    Returns ``(path, synthetic)``. An explicit ``data_dir`` that does not exist is an error,
    never silently replaced by synthetic data.
    """
    from bclib.data.synthetic import ensure_demo_dataset, is_synthetic_folder

    location = paths.find_dataset_dir(dataset, data_dir)
    if location is not None:
        return location, is_synthetic_folder(location, location.parent, location.parent.parent)
    if dataset != "idc" or not allow_synthetic:
        raise FileNotFoundError(
            f"no {dataset!r} data found (looked at BCLIB_DATA_{dataset.upper()}, BCLIB_DATA, data/); "
            f"pass data_dir / --data, or see data/README.md (`bclib data download {dataset}`)"
        )
    return ensure_demo_dataset(), True


def subsample_patients(index: DatasetIndex, max_images: int | None, seed: int, min_patients: int = 40) -> DatasetIndex:
    """A seeded subset of about ``max_images`` images drawn from many patients.

    Patients are taken in a seeded random order, each contributing at most
    ``max_images // min_patients`` (at least 4) of its images, so a small subset still has enough
    patients for a patient-level split with both classes in every part. Datasets with an official
    ``split`` column are subsampled within each split.
    """
    if not max_images or len(index) <= max_images:
        return index
    rng = np.random.default_rng(seed)
    frame = index.frame
    base_per_patient = max(4, int(max_images) // min_patients)
    groups = [frame] if "split" not in frame.columns else [g for _, g in frame.groupby("split", sort=True)]
    keep: list[int] = []
    for group in groups:
        budget = max(1, round(max_images * len(group) / len(frame)))
        per_patient = base_per_patient
        rows_by_patient = group.groupby("patient_id", sort=True).indices
        patients = list(rows_by_patient)
        per_patient = max(per_patient, -(-budget // max(1, len(patients))))
        chosen: list[int] = []
        for patient_position in rng.permutation(len(patients)):
            rows = group.index.to_numpy()[rows_by_patient[patients[patient_position]]]
            if len(rows) > per_patient:
                rows = rng.choice(rows, size=per_patient, replace=False)
            chosen.extend(int(row) for row in rows[: budget - len(chosen)])
            if len(chosen) >= budget:
                break
        keep.extend(chosen)
    return index.subset(np.sort(np.asarray(keep)))


def library_versions() -> dict[str, str]:
    """Versions that a model card and a run manifest record."""
    versions = {"bclib": __version__, "python": platform.python_version()}
    for module_name in ("tensorflow", "keras", "numpy", "pandas", "sklearn"):
        try:
            module = __import__(module_name)
            versions[module_name] = getattr(module, "__version__", "?")
        except ImportError:
            continue
    return versions


@dataclass
class Session:
    """What a notebook needs: resolved parameters, the packed data, the split and the run folder."""

    notebook: str
    params: dict[str, Any]
    run_id: str
    run_dir: Path
    out_dir: Path
    data_path: Path
    synthetic: bool
    index: DatasetIndex
    cache: Any
    split: Any
    started: float = field(default_factory=time.time)
    figures: list[str] = field(default_factory=list)

    # ----- data ---------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self.cache.index.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def positive_label(self) -> int | None:
        return self.cache.index.positive_label

    def positions(self, split_name: str) -> np.ndarray:
        return np.asarray(self.split.positions(split_name))

    def labels(self, split_name: str) -> np.ndarray:
        return np.asarray(self.cache.labels)[self.positions(split_name)]

    def patient_ids(self, split_name: str) -> np.ndarray:
        return self.cache.index.frame["patient_id"].to_numpy()[self.positions(split_name)]

    def images(self, split_name: str, limit: int | None = None) -> np.ndarray:
        """The split's packed images as an in-memory uint8 array (for figures and small splits)."""
        positions = self.positions(split_name)[:limit]
        return np.asarray(self.cache.images[positions])

    def dataset(self, split_name: str, image_size: int | None = None, batch_size: int | None = None,
                training: bool | None = None, augmenter: Any = None, positions: np.ndarray | None = None):
        """A tf.data pipeline over one split (shuffled and augmented only for ``train``)."""
        from bclib.data.pipeline import make_dataset

        training = (split_name == "train") if training is None else training
        return make_dataset(
            self.cache.images,
            self.cache.labels,
            positions=self.positions(split_name) if positions is None else positions,
            batch_size=batch_size or self.params["batch_size"],
            training=training,
            image_size=image_size or self.params["image_size"],
            augmenter=augmenter if training else None,
            seed=self.params["seed"],
            num_classes=self.num_classes,
        )

    # ----- outputs ------------------------------------------------------------------------
    def save_fig(self, fig: Any, name: str) -> Path:
        """Save ``fig`` as PNG into this notebook's run folder (listed in its figures.json)."""
        from bclib.run.reports import save_fig

        path = save_fig(fig, name, self.out_dir)
        if path.name not in self.figures:
            self.figures.append(path.name)
        return path

    def card_base(self, model_name: str) -> dict[str, Any]:
        """The model-card fields every trained model of this session shares."""
        split_dict = self.split.to_dict() if hasattr(self.split, "to_dict") else {}
        return {
            "model_name": model_name,
            "notebook": self.notebook,
            "run_id": self.run_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "class_names": self.class_names,
            "positive_label": self.positive_label,
            "pack_size": int(self.params["pack_size"]),
            "dataset": {
                "name": self.index.name,
                "root": str(self.data_path),
                "content_hash": self.index.content_hash(),
                "n_images": int(len(self.cache.index)),
                "synthetic": bool(self.synthetic),
                "options": self.params.get("dataset_options") or {},
            },
            "split": {
                "method": self.params["split"],
                "seed": int(self.params["seed"]),
                "patients_hash": self.split.patients_hash(),
                "patients": {name: int(len(self.split.patients(name))) for name in ("train", "val", "test")},
                "images": {name: int(len(self.positions(name))) for name in ("train", "val", "test")},
                "max_images": self.params.get("max_images"),
                "missing_patients": len(getattr(self.split, "missing_patients", []) or []),
                "patient_ids": split_dict.get("patient_ids", {}),
            },
            "params": {k: v for k, v in self.params.items() if _is_plain(v)},
            "versions": library_versions(),
        }

    def describe(self) -> str:
        """A short text for the notebook's setup output."""
        counts = self.cache.index.counts()
        lines = [
            f"bclib {__version__} | notebook {self.notebook} | run {self.run_id} | profile {self.params['profile']}",
            f"dataset {self.index.name} at {self.data_path}" + ("  [SYNTHETIC DEMO DATA]" if self.synthetic else ""),
            f"images {counts['images']:,} from {counts['patients']:,} patients; per class {counts['per_class']}",
            f"packed at {self.params['pack_size']} px in {self.cache.directory}",
            f"outputs -> {self.out_dir}",
            DISCLAIMER,
        ]
        if getattr(self.cache, "failed", None):
            lines.insert(3, f"{len(self.cache.failed)} unreadable file(s) skipped (see cache.failed)")
        return "\n".join(lines)

    def banners_html(self) -> str:
        """HTML banners (synthetic data, disclaimer) shown at the top of every notebook."""
        parts = []
        if self.synthetic:
            parts.append(_banner(SYNTHETIC_BANNER, "#b00020"))
        parts.append(_banner(DISCLAIMER, "#555555"))
        return "".join(parts)

    def show_banners(self) -> None:
        from IPython.display import HTML, display

        display(HTML(self.banners_html()))


def _banner(text: str, colour: str) -> str:
    return (
        f'<div style="border:3px solid {colour};color:{colour};padding:8px 12px;margin:6px 0;'
        f'font-weight:bold;font-size:1.1em">{text}</div>'
    )


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict, tuple))


def start(
    notebook: str,
    *,
    dataset: str = "idc",
    data_dir: str | os.PathLike | None = None,
    run_id: str | None = None,
    profile: str = "quick",
    seed: int = 0,
    split: str | None = None,
    dataset_options: dict | None = None,
    kind: str = "baseline",
    progress: bool = True,
    **params: Any,
) -> Session:
    """Resolve parameters, locate/scan/pack/split the data and open the notebook's run folder.

    ``kind="transfer"`` makes ``image_size`` default to the profile's transfer input size.
    """
    from bclib.data.cache import pack
    from bclib.data.splits import make_split

    split = split or profiles.default_split(dataset)
    if kind == "transfer" and params.get("image_size") is None:
        params["image_size"] = profiles.resolve(profile, dataset, {})["transfer_image_size"]
    resolved = profiles.resolve(profile, dataset, dict(params, seed=seed, split=split))
    resolved["kind"] = kind
    from bclib import devices

    device_info = devices.configure()  # GPU: mixed precision + XLA; CPU: float32, no XLA
    resolved["device"] = {"gpus": device_info.gpus, "policy": device_info.policy, "xla": device_info.xla}
    if devices.replicas() > 1:  # MirroredStrategy: the batch size parameter is per GPU
        resolved["batch_size"] = int(resolved["batch_size"]) * devices.replicas()
    resolved["dataset_options"] = dict(dataset_options or {})
    run_id = run_id or INTERACTIVE_RUN_ID
    run_dir = paths.reports_dir() / run_id
    out_dir = run_dir / notebook
    out_dir.mkdir(parents=True, exist_ok=True)

    data_path, synthetic = resolve_dataset_location(dataset, data_dir)
    resolved["data_dir"] = str(data_path)
    index = scan(dataset, data_path, **resolved["dataset_options"])
    synthetic = synthetic or bool(index.synthetic)
    index = subsample_patients(index, resolved.get("max_images"), seed)
    if dataset == "folder" and params.get("pack_size") is None and len(index):
        resolved["pack_size"] = int(min(resolved["pack_size"], max(index.load_image(0).shape[:2])))
    cache = pack(index, resolved["pack_size"], progress=progress)
    split_result = make_split(cache.index, split, seed=seed)
    session = Session(
        notebook=notebook,
        params=resolved,
        run_id=run_id,
        run_dir=run_dir,
        out_dir=out_dir,
        data_path=data_path,
        synthetic=synthetic,
        index=index,
        cache=cache,
        split=split_result,
    )
    (out_dir / "params.json").write_text(json.dumps({k: v for k, v in resolved.items() if _is_plain(v)}, indent=2) + "\n")
    return session
