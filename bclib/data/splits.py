"""Train / validation / test splits of a :class:`DatasetIndex`, deterministic for a seed.

Four methods:

* ``patient``: every patient's images go to one split (70/15/15 % of the patients),
  stratified by their majority class, and each split holds every class where the data allows;
* ``official``: the published split (IDC: Janowczyk & Madabhushi 2016 patient lists; other
  datasets: the index's ``split`` column);
* ``benchmark`` (IDC): test = the 2016 benchmark's held-out patients (its test list where the data
  holds it, else its validation list: the shared development subset holds the test patients out);
  every other patient, listed or not, is split by patient into train and val (70:15), so nothing
  is ever chosen on the test patients and the test numbers compare with the published ones;
* ``image``: images shuffled one by one. Images of one patient land in several splits, which
  inflates every metric; it exists only to show that leak once (a :class:`LeakageWarning`).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bclib.data.index import DatasetError, DatasetIndex
from bclib.data.official_splits import CITATION, IDC_OFFICIAL_SPLITS

#: What every "this split cannot be made here" error ends with.
USE_PATIENT_SPLIT = "Use the patient split instead (split='patient', `--split patient`)."


class SplitUnavailable(DatasetError):
    """A split method the data cannot support (e.g. no benchmark patients); ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(f"{reason} {USE_PATIENT_SPLIT}")
        self.reason = reason

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
METHODS: tuple[str, ...] = ("patient", "official", "benchmark", "image")
FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)


class LeakageWarning(UserWarning):
    """A split puts images of one patient into more than one split."""


def _sorted_patients(patients) -> list[str]:
    """Numeric ids in numeric order, then the others alphabetically."""
    return sorted(patients, key=lambda patient: (0, int(patient), "") if patient.isdigit() else (1, 0, patient))


@dataclass(eq=False)
class Split:
    """Row positions of each split (``train``, ``val``, ``test``) into ``index``."""

    index: DatasetIndex
    method: str
    seed: int
    assignment: dict[str, np.ndarray]
    missing_patients: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    benchmark_list: str | None = None   # benchmark split: the official list its test patients come from

    def __post_init__(self) -> None:
        ids = self.index.frame["patient_id"].to_numpy()
        self._patients = {name: _sorted_patients(pd.unique(ids[rows])) for name, rows in self.assignment.items()}

    def _checked(self, name: str) -> str:
        if name not in self.assignment:
            raise ValueError(f"unknown split {name!r}; choose one of {list(self.assignment)}")
        return name

    def positions(self, name: str) -> np.ndarray:
        """Sorted row positions of split ``name`` into the index."""
        return self.assignment[self._checked(name)].copy()

    def patients(self, name: str) -> list[str]:
        """The patient IDs of split ``name``, sorted (numerically where they are numbers)."""
        return list(self._patients[self._checked(name)])

    def overlapping_patients(self) -> list[str]:
        """Patients whose images are in more than one split (empty for patient-level splits)."""
        splits_per_patient = Counter(patient for patients in self._patients.values() for patient in patients)
        return _sorted_patients(patient for patient, count in splits_per_patient.items() if count > 1)

    def _positive_fraction(self, positions: np.ndarray) -> float | None:
        if self.index.positive_label is None or len(positions) == 0:
            return None
        return float(np.mean(self.index.labels[positions] == self.index.positive_label))

    def summary(self) -> pd.DataFrame:
        """One row per split: patients, images, positive fraction and images per class."""
        rows = []
        for name, positions in self.assignment.items():
            labels = self.index.labels[positions]
            per_class = {class_name: int(np.sum(labels == label)) for label, class_name in enumerate(self.index.class_names)}
            rows.append({"split": name, "patients": len(self._patients[name]), "images": len(positions),
                         "positive_fraction": self._positive_fraction(positions), **per_class})
        return pd.DataFrame(rows).set_index("split").astype({"positive_fraction": float})

    def patients_hash(self) -> str:
        """A short fingerprint of the patient lists (and, for image splits, the positions)."""
        content: dict = dict(self._patients)
        if self.method == "image":
            content["positions"] = {name: positions.tolist() for name, positions in self.assignment.items()}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        """JSON-ready description: method, seed, counts per split, patient ID lists, warnings."""
        return {
            "dataset": self.index.name,
            "method": self.method,
            "seed": int(self.seed),
            "fractions": list(FRACTIONS),
            "patients_hash": self.patients_hash(),
            "patients": {name: len(patients) for name, patients in self._patients.items()},
            "images": {name: len(positions) for name, positions in self.assignment.items()},
            "positive_fraction": {name: self._positive_fraction(p) for name, p in self.assignment.items()},
            "patient_ids": {name: list(patients) for name, patients in self._patients.items()},
            "missing_patients": list(self.missing_patients),
            "warnings": list(self.warnings),
        }


def _targets(total: int, fractions: tuple[float, ...] = FRACTIONS) -> np.ndarray:
    """Items per split in the proportions of ``fractions`` (largest remainder), at least one each."""
    raw = np.asarray(fractions) / sum(fractions) * total
    counts = np.floor(raw).astype(int)
    for position in np.argsort(-(raw - counts), kind="stable")[: total - counts.sum()]:
        counts[position] += 1
    for position in np.flatnonzero(counts == 0):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[position] += 1
    return counts


def _deal(count: int, targets: np.ndarray) -> np.ndarray:
    """Split number of each of ``count`` items in order, interleaving the splits in proportion
    to ``targets`` (so every run of consecutive items, e.g. one stratum, is split proportionally).

    Split ``s`` gets its ``k``-th item at the ideal time ``(k + 0.5) / share_s``; sorting those
    times gives the sequence (Sainte-Laguë style), with exactly ``targets[s]`` items each.
    """
    targets = np.asarray(targets, dtype=int)
    if int(targets.sum()) != count:
        raise ValueError(f"targets {targets.tolist()} do not add up to {count}")
    shares = targets / max(1, count)
    times = np.concatenate([(np.arange(t) + 0.5) / shares[s] for s, t in enumerate(targets) if t > 0] or [np.zeros(0)])
    owners = np.concatenate([np.full(t, s) for s, t in enumerate(targets) if t > 0] or [np.zeros(0, dtype=int)])
    return owners[np.argsort(times, kind="stable")].astype(int)


def _patient_table(index: DatasetIndex) -> pd.DataFrame:
    """Per patient: images per class and a stratum (majority class; ties go to the rarer class)."""
    codes, patients = pd.factorize(index.frame["patient_id"], sort=True)
    counts = np.zeros((len(patients), index.num_classes), dtype=np.int64)
    np.add.at(counts, (codes, index.labels), 1)
    table = pd.DataFrame(counts, index=pd.Index(patients, name="patient_id"), columns=range(index.num_classes))
    rarity = np.argsort(np.argsort(table.sum(axis=0).to_numpy(), kind="stable"), kind="stable")
    scores = table.to_numpy() * (index.num_classes + 1) + (index.num_classes - rarity)
    table["stratum"] = np.argmax(scores, axis=1)
    table["images"] = table[list(range(index.num_classes))].sum(axis=1)
    return table


def _repair_classes(has_class: np.ndarray, images: np.ndarray, owner: np.ndarray, n_splits: int) -> None:
    """Move patients (in place, ``owner[i]`` = split of patient i) so that every split holds every
    class where the data allows.

    A donor patient comes from the split with the most holders of the missing class and must
    leave its split with every class it had; the receiving split then gives back a patient it
    can spare, so split sizes stay as planned. Ties go to the earlier patient in dealing order.
    """

    def holders_per_split() -> np.ndarray:
        return np.stack([has_class[owner == split].sum(axis=0) for split in range(n_splits)])

    rarest_first = np.argsort(has_class.sum(axis=0), kind="stable")
    for _ in range(3):
        changed = False
        for split in range(n_splits):
            for label in rarest_first:
                holders = np.flatnonzero(has_class[:, label])
                if len(holders) == 0 or np.any(owner[holders] == split):
                    continue
                counts = holders_per_split()
                sizes = np.bincount(owner, minlength=n_splits)
                source_counts = counts[owner[holders]]
                can_leave = np.all(~has_class[holders] | (source_counts >= 2), axis=1) & (sizes[owner[holders]] > 1)
                donors = holders[can_leave]
                if len(donors) == 0:
                    continue
                order = np.lexsort((donors, images[donors], -counts[owner[donors], label]))
                moved = int(donors[order[0]])
                source = int(owner[moved])
                owner[moved] = split
                changed = True
                members = np.flatnonzero(owner == split)
                member_counts = has_class[members].sum(axis=0)
                spare = [
                    int(q) for q in members
                    if q != moved and not np.any(has_class[q] & (member_counts < 2))
                ]
                if spare:
                    back = min(spare, key=lambda q: (abs(int(images[q]) - int(images[moved])), q))
                    owner[back] = source
        if not changed:
            return


def _patient_split(index: DatasetIndex, seed: int, names: tuple[str, ...] = SPLIT_NAMES,
                   fractions: tuple[float, ...] = FRACTIONS,
                   patients: list[str] | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Row positions of ``names`` dealing ``patients`` (default: all) in ``fractions``, and notes."""
    table = _patient_table(index)
    if patients is not None:
        table = table.loc[patients]
    if len(table) < len(names):
        raise DatasetError(f"a patient-level split into {len(names)} parts needs at least "
                           f"{len(names)} patients; {index.name!r} holds {len(table)}")
    rng = np.random.default_rng(seed)
    order: list[str] = []
    for stratum in sorted(table["stratum"].unique()):
        members = table.index[table["stratum"] == stratum].to_numpy()
        order.extend(members[rng.permutation(len(members))].tolist())
    table = table.loc[order]
    class_columns = list(range(index.num_classes))
    has_class = table[class_columns].to_numpy() > 0
    owner = _deal(len(order), _targets(len(order), fractions))
    _repair_classes(has_class, table["images"].to_numpy(), owner, len(names))
    notes = [f"split {split_name!r} holds no {class_name!r} images: only {int(has_class[:, label].sum())} "
             "patient(s) have that class, too few to reach every split"
             for split, split_name in enumerate(names) for label, class_name in enumerate(index.class_names)
             if has_class[:, label].any() and not has_class[owner == split, label].any()]
    split_of_patient = dict(zip(order, owner.tolist()))
    split_of_row = index.frame["patient_id"].map(split_of_patient).to_numpy(dtype=float, na_value=-1)
    return {name: np.flatnonzero(split_of_row == i) for i, name in enumerate(names)}, notes


def _benchmark_split(index: DatasetIndex, seed: int) -> tuple[dict[str, np.ndarray], list[str], str]:
    """Test: the benchmark's held-out patients present; train/val: the others, by patient; and which
    official list the test patients come from."""
    if index.name != "idc":
        raise DatasetError(f"split 'benchmark' uses the IDC benchmark's patient lists; {index.name!r} has none: "
                           "use split='official' or split='patient'")
    present = set(index.frame["patient_id"])
    held_out = "test" if present.intersection(IDC_OFFICIAL_SPLITS["test"]) else "val"
    test_patients = [patient for patient in IDC_OFFICIAL_SPLITS[held_out] if patient in present]
    if not test_patients:
        hint = ("this is synthetic data, whose made-up patients are in no official list" if index.synthetic
                else "none of the benchmark's validation or test patients are in the data")
        raise SplitUnavailable(f"split 'benchmark' needs the 2016 benchmark's held-out patients: {hint}.")
    others = _sorted_patients(present.difference(test_patients))
    assignment, notes = _patient_split(index, seed, ("train", "val"), FRACTIONS[:2], others)
    assignment["test"] = np.flatnonzero(index.frame["patient_id"].isin(test_patients).to_numpy())
    notes.append(f"benchmark split: test = the {len(test_patients)} patients of the 2016 benchmark's official "
                 f"{held_out!r} list in the data" + ("; its 'test' list is not in the data" if held_out == "val" else "")
                 + f"; train and val: the other {len(others)} patients, by patient (Janowczyk & Madabhushi 2016)")
    return assignment, notes, held_out


def _image_split(index: DatasetIndex, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = index.labels
    order = np.concatenate([
        np.flatnonzero(labels == label)[rng.permutation(int(np.sum(labels == label)))]
        for label in np.unique(labels)
    ])
    dealt = _deal(len(order), _targets(len(order)))
    return {name: np.sort(order[dealt == i]) for i, name in enumerate(SPLIT_NAMES)}


def _official_split(index: DatasetIndex) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """Row positions of the published split, the listed patients absent from the data, and notes."""
    notes, missing = [], []
    if index.name == "idc":
        split_of_patient = {patient: name for name, patients in IDC_OFFICIAL_SPLITS.items() for patient in patients}
        official = index.frame["patient_id"].map(split_of_patient)
        present = set(index.frame["patient_id"])
        notes.append(f"official split: {CITATION}")
        for name, patients in IDC_OFFICIAL_SPLITS.items():
            absent = _sorted_patients(p for p in patients if p not in present)
            missing += absent
            if absent and len(absent) < len(patients):
                notes.append(f"{len(absent)} of the {len(patients)} official {name!r} patients are not in the data: "
                             f"{', '.join(absent[:10])}{' ...' if len(absent) > 10 else ''}")
        hint = (" This is synthetic data, whose made-up patients are in no official list." if index.synthetic
                else " The shared development subset holds the 49 benchmark test patients out on purpose.")
    elif "split" in index.frame.columns:
        official = index.frame["split"]
        unknown = sorted(set(official.dropna()) - set(SPLIT_NAMES))
        if unknown:
            raise DatasetError(f"the {index.name!r} index has unknown values in its 'split' column: {unknown}; "
                               "expected train/val/test")
        hint = ""
    else:
        raise SplitUnavailable(f"dataset {index.name!r} has no official split (no 'split' column in its index).")
    unlisted = index.frame.loc[official.isna(), "patient_id"]
    if len(unlisted):
        notes.append(f"{unlisted.nunique()} patient(s) ({len(unlisted)} images) of the data are in no official list "
                     "and are left out of every split")
    assignment = {name: np.flatnonzero((official == name).to_numpy(dtype=bool, na_value=False)) for name in SPLIT_NAMES}
    for name, positions in assignment.items():
        if len(positions) == 0:
            listed = f"its {len(IDC_OFFICIAL_SPLITS[name])} patients" if index.name == "idc" else "its images"
            raise SplitUnavailable(
                f"the official {name!r} split is empty: none of {listed} are in the {index.name!r} data at "
                f"{str(index.root)!r}.{hint}"
            )
    return assignment, _sorted_patients(missing), notes


def official_patients(index: DatasetIndex, name: str) -> list[str]:
    """The patients of the published split ``name`` (train, val or test) present in ``index``."""
    if name not in SPLIT_NAMES:
        raise ValueError(f"unknown split {name!r}; choose one of {list(SPLIT_NAMES)}")
    present = set(index.frame["patient_id"])
    if index.name == "idc":
        patients = [patient for patient in IDC_OFFICIAL_SPLITS[name] if patient in present]
    elif "split" in index.frame.columns:
        patients = list(pd.unique(index.frame.loc[index.frame["split"] == name, "patient_id"]))
    else:
        raise DatasetError(f"dataset {index.name!r} has no official split (no 'split' column in its index)")
    if not patients:
        raise DatasetError(f"none of the official {name!r} patients are in the {index.name!r} data at "
                           f"{str(index.root)!r}")
    return _sorted_patients(patients)


def make_split(index: DatasetIndex, method: str = "patient", seed: int = 0) -> Split:
    """Split ``index`` into train / val / test row positions (see the module docstring).

    ``seed`` applies to the ``patient``, ``benchmark`` (train/val) and ``image`` methods. Raises
    :class:`DatasetError` when the data cannot be split that way (too few patients, an empty official split, no official
    split for the dataset).
    """
    if method not in METHODS:
        raise ValueError(f"unknown split method {method!r}; choose one of {list(METHODS)}")
    if len(index) == 0:
        raise DatasetError(f"cannot split {index.name!r}: the index holds no images")
    seed = int(seed)
    missing: list[str] = []
    benchmark_list = None
    if method == "patient":
        assignment, notes = _patient_split(index, seed)
    elif method == "benchmark":
        assignment, notes, benchmark_list = _benchmark_split(index, seed)
    elif method == "image":
        assignment, notes = _image_split(index, seed), []
    else:
        assignment, missing, notes = _official_split(index)
    split = Split(index=index, method=method, seed=seed, assignment=assignment, missing_patients=missing,
                  warnings=notes, benchmark_list=benchmark_list if method == "benchmark" else None)
    if method == "image":
        message = (
            f"an image-level split leaks patients: {len(split.overlapping_patients())} of "
            f"{index.frame['patient_id'].nunique()} patients have images in more than one split, which inflates "
            "every metric. Use it only for the leakage lesson; report results of split='patient'."
        )
        split.warnings.append(message)
        warnings.warn(message, LeakageWarning, stacklevel=2)
    else:
        for note in notes:
            if not note.startswith(("official split:", "benchmark split:")):
                warnings.warn(note, UserWarning, stacklevel=2)
    return split
