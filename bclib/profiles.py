"""Run profiles: the knobs that make the same notebooks a smoke test or a GPU run.

A notebook parameter left at ``None`` takes its profile's value; an explicit value wins.
"""
from __future__ import annotations

from typing import Any

#: Each knob in the three profiles: ``smoke`` checks on a CPU that the whole series runs (tiny data,
#: short epochs, small images); ``quick`` runs the real data at hand with CPU-sized epochs; ``full``
#: has paper-scale settings for a GPU and the complete dataset.
KNOBS: dict[str, tuple[Any, Any, Any]] = {
    #                           smoke   quick   full
    "max_images":              (480,    None,   None),
    "image_size":              (32,     50,     50),
    "transfer_image_size":     (32,     96,     96),
    "epochs":                  (2,      8,      40),
    "fine_tune_epochs":        (1,      2,      10),
    "batch_size":              (32,     128,    256),
    "learning_rate":           (1e-3,   1e-3,   1e-3),
    "fine_tune_learning_rate": (1e-4,   1e-4,   1e-5),
    "patience":                (1,      3,      6),
    "n_boot":                  (50,     500,    1000),
    "speedup_images":          (128,    512,    4096),
    "gradcam_examples":        (2,      4,      6),
    "fine_tune_layers":        (10,     20,     40),
    "fine_tune_blocks":        (1,      1,      3),  # notebook 06: ResNet50 residual blocks unfrozen
    "fine_tune_max_images":    (3000,   3000,   None),
    "leakage_epochs":          (1,      3,      10),  # notebook 07's exercise 2: the CNN version of the lesson
    "leakage_seeds":           (5,      5,      10),  # notebook 07: halves of the test patients drawn anew
    "leakage_neighbours":      (5,      5,      5),   # notebook 07: k of the memorising nearest-neighbour model
    "exercise_max_images":     (480,    3000,   None),
    "exercise_epochs":         (2,      4,      10),
    "exercise_more_epochs":    (3,      12,     40),  # notebook 04's solutions: the longer run of exercise 4
    "exercise_more_patience":  (1,      4,      10),
}
PROFILES: dict[str, dict[str, Any]] = {
    name: {knob: values[column] for knob, values in KNOBS.items()}
    for column, name in enumerate(("smoke", "quick", "full"))
}

#: Pixel size each dataset is packed at (patches smaller are padded, larger downscaled).
PACK_SIZES: dict[str, int] = {
    "idc": 50,
    "breastmnist": 28,
    "breakhis": 224,
    "mias": 224,
    "folder": 224,
    "pcam": 96,
}

#: Image sizes suited to each dataset when the profile's IDC-oriented sizes do not fit.
DATASET_IMAGE_SIZES: dict[str, dict[str, int]] = {
    "breastmnist": {"image_size": 28, "transfer_image_size": 64},
}

#: Training length for small datasets (a few hundred images): more, smaller steps per epoch.
SMALL_DATASET_TRAINING: dict[str, dict[str, dict[str, int]]] = {
    "breastmnist": {
        "quick": {"epochs": 40, "batch_size": 32, "patience": 8, "fine_tune_epochs": 6},
        "full": {"epochs": 100, "batch_size": 32, "patience": 15, "fine_tune_epochs": 20},
    },
}


#: The split used when a notebook's ``split`` parameter is None: IDC's benchmark split (test = the 2016
#: benchmark's held-out patients; falls back to ``patient`` on data without them), official where one is
#: published, else by patient.
DEFAULT_SPLITS: dict[str, str] = {"idc": "benchmark", "breastmnist": "official", "pcam": "official"}


def default_split(dataset: str) -> str:
    return DEFAULT_SPLITS.get(dataset, "patient")


#: Notebooks whose ``image_size`` parameter takes the profile's ``transfer_image_size``.
TRANSFER_NOTEBOOKS = ("05_mobilenetv2_transfer", "06_resnet50_transfer")


def resolve(profile: str, dataset: str, explicit: dict[str, Any]) -> dict[str, Any]:
    """Profile values, then dataset adjustments, then every explicit non-None parameter."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    values = dict(PROFILES[profile])
    if profile != "smoke":
        values.update(DATASET_IMAGE_SIZES.get(dataset, {}))
        values.update(SMALL_DATASET_TRAINING.get(dataset, {}).get(profile, {}))
    values["pack_size"] = PACK_SIZES.get(dataset, 224)
    for key, value in explicit.items():
        if value is not None:
            values[key] = value
    values["profile"] = profile
    values["dataset"] = dataset
    return values


def notebook_values(profile: str, dataset: str, notebook: str) -> dict[str, Any]:
    """The parameter values ``bclib run`` passes to ``notebook`` for this profile and dataset."""
    values = resolve(profile, dataset, {})
    if notebook.removesuffix("_solutions") in TRANSFER_NOTEBOOKS:  # their worked solutions too
        values["image_size"] = values["transfer_image_size"]
    return values
