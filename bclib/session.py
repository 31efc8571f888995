"""A notebook's session: data found, scanned, packed and split once, and a run folder to write to.

Every notebook calls :func:`start` right after its ``parameters`` cell::

    session = start("02_baseline_cnn", dataset=dataset, data_dir=data_dir, run_id=run_id,
                    profile=profile, seed=seed)

and then asks the session for data (``session.dataset("train", image_size=50, batch_size=128)``)
and saves figures with ``session.save_fig``. The lesson's own knobs (epochs, learning rate...)
stay plain variables in the notebook.
"""
from __future__ import annotations

import logging
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from IPython.display import display

from bclib import __version__, paths, profiles
from bclib.display import SYNTHETIC_BANNER, in_notebook, show_banner
from bclib.data.datasets import DatasetError, DatasetIndex, scan

#: Set to "1" by ``bclib run`` for the kernels it starts, where widgets (progress bars) do not render.
BATCH_ENVIRONMENT = "BCLIB_BATCH"


def resolve_dataset_location(dataset: str, data_dir: str | os.PathLike | None,
                             prefer_synthetic: bool = False) -> tuple[Path, bool]:
    """The data of ``dataset`` and whether it is the synthetic demo: ``(path, synthetic)``.

    An explicit ``data_dir`` always wins and must exist (``FileNotFoundError``). Otherwise IDC is the
    synthetic demo (generated once) when ``prefer_synthetic`` or when no real copy is found; any other
    dataset is where :func:`bclib.data.datasets.locate` finds it.
    """
    from bclib.data.datasets import locate
    from bclib.data.synthetic import ensure_demo_dataset, is_synthetic_folder

    if dataset == "idc" and data_dir is None and (prefer_synthetic or paths.find_dataset_dir("idc") is None):
        return ensure_demo_dataset(), True
    location = locate(dataset, data_dir)
    return location, is_synthetic_folder(location, location.parent, location.parent.parent)


def subsample_patients(index: DatasetIndex, max_images: int | None, seed: int) -> DatasetIndex:
    """A seeded subset of about ``max_images`` images drawn from many patients.

    Patients are taken in a seeded random order, each contributing at most ``max_images // 40``
    (at least 4) of its images, so a small subset still has enough patients for a patient-level
    split with both classes in every part. Datasets with an official ``split`` column are
    subsampled within each split.
    """
    if not max_images or len(index) <= max_images:
        return index
    rng = np.random.default_rng(seed)
    frame = index.frame
    base_per_patient = max(4, int(max_images) // 40)
    groups = [frame] if "split" not in frame.columns else [g for _, g in frame.groupby("split", sort=True)]
    keep: list[int] = []
    for group in groups:
        budget = max(1, round(max_images * len(group) / len(frame)))
        rows_by_patient = group.groupby("patient_id", sort=True).indices
        patients = list(rows_by_patient)
        per_patient = max(base_per_patient, -(-budget // max(1, len(patients))))
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
    """Versions of Python and the libraries a model card and a run manifest record."""
    import importlib.metadata

    return {"bclib": __version__, "python": platform.python_version(),
            **{name: importlib.metadata.version(name)
               for name in ("tensorflow", "keras", "numpy", "pandas", "scikit-learn", "papermill")}}


@dataclass
class Session:
    """What a notebook needs: the packed data, the split and the run folder."""

    notebook: str
    settings: dict[str, Any]
    run_id: str
    run_dir: Path
    out_dir: Path
    data_path: Path
    synthetic: bool
    index: DatasetIndex
    cache: Any
    split: Any
    figures: list[str] = field(default_factory=list)

    # ----- data ---------------------------------------------------------------------------
    @property
    def seed(self) -> int:
        return int(self.settings["seed"])

    @property
    def class_names(self) -> list[str]:
        return list(self.cache.index.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def positive_label(self) -> int | None:
        """The label of the disease class (the dataset says which); None for more than two classes."""
        return self.cache.index.positive_label

    @property
    def positive_name(self) -> str | None:
        label = self.positive_label
        return None if label is None else self.class_names[label]

    @property
    def pack_size(self) -> int:
        """Pixel size of the packed patches (smaller ones padded, larger ones downscaled)."""
        return int(self.settings["pack_size"])

    @property
    def strategy(self):
        """The ``tf.distribute`` strategy to build and compile models in (all GPUs, or the default)."""
        from bclib import devices

        return devices.strategy()

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

    def dataset(self, split_name: str, image_size: int, batch_size: int = 128, training: bool | None = None,
                augmenter: Any = None, positions: np.ndarray | None = None):
        """A tf.data pipeline over one split: ``(images 0..255 float32, labels)`` batches.

        Shuffled and augmented only for ``train`` (or ``training=True``); otherwise in split
        order, so predictions line up with :meth:`labels`. ``batch_size`` is per GPU.
        """
        from bclib import devices
        from bclib.data.pipeline import make_dataset

        training = (split_name == "train") if training is None else training
        return make_dataset(
            self.cache.images,
            self.cache.labels,
            positions=self.positions(split_name) if positions is None else positions,
            batch_size=int(batch_size) * devices.replicas(),
            training=training,
            image_size=image_size,
            augmenter=augmenter if training else None,
            seed=self.seed,
            num_classes=self.num_classes,
        )

    # ----- outputs ------------------------------------------------------------------------
    def save_fig(self, fig: Any, name: str) -> None:
        """Save ``fig`` as ``<name>.png`` in this notebook's run folder (the run summary links it), then show it.

        The figure is shown here, not at the end of the cell, so a conclusion printed after it comes below it.
        """
        import matplotlib.pyplot as plt

        from bclib.run.reports import save_fig

        path = save_fig(fig, name, self.out_dir)
        if path.name not in self.figures:
            self.figures.append(path.name)
        if in_notebook():
            display(fig)
        plt.close(fig)

    def card_base(self, model_name: str) -> dict[str, Any]:
        """The model-card fields every trained model of this session shares, with the ``input`` it was trained
        on (patch size, magnification when known, stain), which the app and ``bclib predict`` read."""
        from dataclasses import asdict

        from bclib.app.predict import training_input

        card = {
            "model_name": model_name,
            "notebook": self.notebook,
            "run_id": self.run_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "class_names": self.class_names,
            "positive_label": self.positive_label,
            "pack_size": self.pack_size,
            "dataset": {
                "name": self.index.name,
                "root": str(self.data_path),
                "content_hash": self.index.content_hash(),
                "n_images": int(len(self.cache.index)),
                "synthetic": bool(self.synthetic),
                "options": self.settings.get("dataset_options") or {},
            },
            "split": {
                "method": self.settings["split"],
                "seed": self.seed,
                "patients_hash": self.split.patients_hash(),
                "patients": {name: int(len(self.split.patients(name))) for name in ("train", "val", "test")},
                "images": {name: int(len(self.positions(name))) for name in ("train", "val", "test")},
                "max_images": self.settings.get("max_images"),
                "missing_patients": len(self.split.missing_patients),
                "patient_ids": {name: self.split.patients(name) for name in ("train", "val", "test")},
            },
            "params": {"profile": self.settings["profile"]},
            "versions": library_versions(),
        }
        card["input"] = asdict(training_input(card))
        return card

    def show(self) -> None:
        """Print data, classes, split, cache, run folder and device, below the synthetic-data banner if any."""
        from bclib import devices

        counts = self.cache.index.counts()
        split_counts = ", ".join(
            f"{name} {len(self.positions(name)):,} images / {len(self.split.patients(name))} patients"
            for name in ("train", "val", "test")
        )
        lines = [
            f"dataset {self.index.name} at {self.data_path}" + ("  [SYNTHETIC DEMO DATA]" if self.synthetic else ""),
            f"{counts['images']:,} images from {counts['patients']:,} patients; per class "
            + ", ".join(f"{name} {count:,}" for name, count in counts["per_class"].items()),
            f"{self.settings['split']} split (seed {self.seed}): {split_counts}",
            *(note for note in self.split.warnings if note.startswith(("benchmark split:", "split by patient instead"))),
            f"packed at {self.pack_size}x{self.pack_size} px; outputs go to {self.out_dir}",
            devices.describe(),
        ]
        if self.cache.failed:
            lines.insert(2, f"{len(self.cache.failed)} unreadable file(s) skipped (see session.cache.failed)")
        if self.synthetic:
            show_banner(SYNTHETIC_BANNER, "warning")
        print("\n".join(lines))


def start(
    notebook: str,
    *,
    dataset: str = "idc",
    data_dir: str | os.PathLike | None = None,
    run_id: str | None = None,
    profile: str = "quick",
    seed: int = 0,
    split: str | None = None,
    max_images: int | None = None,
    dataset_options: dict | None = None,
    show: bool = True,
) -> Session:
    """Find, scan, pack and split the data for ``notebook`` and open its run folder.

    ``split=None`` takes the dataset's default (:func:`bclib.profiles.default_split`), falling back to
    a patient-level split (with a note) where the data cannot be split that way. ``max_images`` keeps a
    seeded subset drawn from many patients.
    Configures the devices (mixed precision on a GPU) and shows a summary.
    """
    import pandas as pd

    from bclib import devices
    from bclib.data.cache import pack
    from bclib.data.splits import SplitUnavailable, make_split
    from bclib.evaluation.modelcard import write_json

    chosen_split, split = split, split or profiles.default_split(dataset)
    settings = profiles.resolve(profile, dataset, {"seed": seed, "split": split, "max_images": max_images})
    settings["dataset_options"] = dict(dataset_options or {})
    device_info = devices.configure()
    settings["device"] = {"gpus": device_info.gpus, "policy": device_info.policy}
    pd.set_option("display.float_format", "{:.3f}".format)
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")  # tf.data shuffles by itself
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices: nothing a student can act on

    run_id = run_id or "interactive"
    run_dir = paths.reports_dir() / run_id
    out_dir = run_dir / notebook
    out_dir.mkdir(parents=True, exist_ok=True)

    data_path, synthetic = resolve_dataset_location(dataset, data_dir)
    settings["data_dir"] = str(data_path)
    index = scan(dataset, data_path, **settings["dataset_options"])
    synthetic = synthetic or bool(index.synthetic)
    index = subsample_patients(index, max_images, seed)
    if dataset == "folder" and len(index):
        settings["pack_size"] = int(min(settings["pack_size"], max(index.load_image(0).shape[:2])))
    cache = pack(index, settings["pack_size"], progress=os.environ.get(BATCH_ENVIRONMENT) != "1")
    try:
        made_split = make_split(cache.index, split, seed=seed)
    except DatasetError as error:
        if chosen_split is not None or split == "patient":
            raise
        made_split = make_split(cache.index, "patient", seed=seed)  # e.g. the synthetic demo: no benchmark patients
        reason = error.reason if isinstance(error, SplitUnavailable) else str(error)
        made_split.warnings.append(f"split by patient instead of the default {split!r} split: {reason}")
        settings["split"] = split = "patient"
    session = Session(
        notebook=notebook, settings=settings, run_id=run_id, run_dir=run_dir, out_dir=out_dir,
        data_path=data_path, synthetic=synthetic, index=index, cache=cache,
        split=made_split,
    )
    write_json(settings, out_dir / "settings.json")
    if show:
        session.show()
    return session
