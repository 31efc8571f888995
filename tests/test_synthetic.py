"""The synthetic IDC generator: layout, determinism, class balance, patient effects, tumour regions, edge patches."""
from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest

from bclib.data.datasets import idc, scan
from bclib.data.index import DatasetError
from bclib.data.synthetic import MARKER_FILE, NESTED_FOLDER, make_synthetic_idc
from bclib.data.imageio import read_image

NAME = re.compile(r"^(\d+)_idx5_x(\d+)_y(\d+)_class([01])\.png$")


def test_layout_counts_and_marker(tmp_path):
    started = time.perf_counter()
    folder = make_synthetic_idc(tmp_path, n_patients=5, patches_per_patient=20, positive_fraction=0.25, seed=1)
    assert time.perf_counter() - started < 20
    assert folder == tmp_path / "IDC_regular_ps50_idx5"
    assert (tmp_path / MARKER_FILE).is_file()
    files = sorted(folder.glob("*/*/*.png"))
    assert len(files) == 100
    for path in files:
        match = NAME.match(path.name)
        assert match, path.name
        patient, x, y, label = match.groups()
        assert path.parent.name == label and path.parent.parent.name == patient
        assert (int(x) - 1) % 50 == 0 and (int(y) - 1) % 50 == 0
    index = scan("idc", tmp_path)
    assert index.synthetic and len(index) == 100
    per_patient = index.frame.groupby("patient_id")["label"].agg(["min", "max", "count", "mean"])
    assert len(per_patient) == 5 and (per_patient["min"] == 0).all() and (per_patient["max"] == 1).all()
    assert all(p.isdigit() and len(p) == 5 for p in per_patient.index)
    assert not index.frame.duplicated(["patient_id", "x", "y"]).any(), "one patch per grid cell"
    assert idc.scan(folder).synthetic, "the dataset folder itself is marked too"


def test_deterministic_for_a_seed(tmp_path):
    first = make_synthetic_idc(tmp_path / "a", n_patients=2, patches_per_patient=6, seed=7)
    second = make_synthetic_idc(tmp_path / "b", n_patients=2, patches_per_patient=6, seed=7)
    third = make_synthetic_idc(tmp_path / "c", n_patients=2, patches_per_patient=6, seed=8)
    names = lambda folder: sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*/*.png"))  # noqa: E731
    assert names(first) == names(second) != names(third)
    for relative in names(first):
        np.testing.assert_array_equal(read_image(first / relative), read_image(second / relative))


def test_classes_differ_visibly(synthetic_idc):
    index = idc.scan(synthetic_idc)
    darkness = np.array([255 - index.load_image(i).mean() for i in range(len(index))])
    labels = index.labels
    assert darkness[labels == 1].mean() > darkness[labels == 0].mean() + 5
    # H&E-like: red and blue above green on average (pink / purple, not grey)
    mean_colour = np.mean([index.load_image(i).reshape(-1, 3).mean(axis=0) for i in range(0, len(index), 7)], axis=0)
    assert mean_colour[0] > mean_colour[1] and mean_colour[2] > mean_colour[1]


def _mean_colours(folder, **options) -> tuple[np.ndarray, object]:
    index = scan("idc", make_synthetic_idc(folder, image_size=12, **options))
    return np.array([index.load_image(i).reshape(-1, 3).mean(axis=0) for i in range(len(index))]), index.frame


def test_class_balance_like_idc_and_shares_that_vary_by_patient(tmp_path):
    folder = make_synthetic_idc(tmp_path, n_patients=200, patches_per_patient=10, image_size=8, seed=3)
    frame = scan("idc", folder).frame
    shares = frame.groupby("patient_id")["label"].mean()
    assert 0.24 < frame["label"].mean() < 0.33
    assert shares.std() > 0.1 and shares.min() < 0.15 and shares.max() > 0.45


def test_patients_differ_in_stain_unless_switched_off(tmp_path):
    """Healthy patches of one patient share a colour: the spread of patient means dwarfs the spread within."""

    def between_over_within(**options) -> float:
        colours, frame = _mean_colours(tmp_path / str(options), n_patients=12, patches_per_patient=12, seed=4,
                                       **options)
        healthy = (frame["label"] == 0).to_numpy()
        grouped = pd.DataFrame(colours[healthy]).groupby(frame["patient_id"].to_numpy()[healthy])
        return float(grouped.mean().var().sum() / grouped.var().mean().sum())

    assert between_over_within() > 1.0
    assert between_over_within(patient_effect=0.0) < 0.3


def test_tumour_patches_form_a_region(synthetic_idc):
    """Most tumour patches touch another one on the slide grid (a tumour region, not scattered patches)."""
    frame = scan("idc", synthetic_idc).frame
    touching = []
    for _, slide in frame[frame["label"] == 1].groupby("patient_id"):
        cells = {(x, y) for x, y in zip(slide["x"], slide["y"])}
        touching += [any((x + dx, y + dy) in cells for dx in (-50, 0, 50) for dy in (-50, 0, 50) if dx or dy)
                     for x, y in cells]
    assert np.mean(touching) > 0.8


def test_edge_patches_are_smaller(synthetic_idc):
    index = idc.scan(synthetic_idc)
    shapes = [index.load_image(i).shape for i in range(len(index))]
    small = [s for s in shapes if s[:2] != (50, 50)]
    assert 2 <= len(small) <= len(shapes) // 10
    assert any(s[0] == 50 > s[1] for s in small) and any(s[1] == 50 > s[0] for s in small), "narrower and shorter"


def test_refuses_a_folder_with_other_data_and_replaces_old_synthetic(tmp_path):
    folder = tmp_path / "IDC_regular_ps50_idx5"
    folder.mkdir()
    (folder / "something.txt").write_text("user file")
    with pytest.raises(DatasetError, match="not synthetic"):
        make_synthetic_idc(tmp_path, n_patients=2, patches_per_patient=4)
    assert (folder / "something.txt").read_text() == "user file"
    again = tmp_path / "again"
    make_synthetic_idc(again, n_patients=3, patches_per_patient=4, seed=0)
    make_synthetic_idc(again, n_patients=2, patches_per_patient=4, seed=1)
    assert idc.scan(again).frame["patient_id"].nunique() == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_patients": 0}, "n_patients"),
        ({"patches_per_patient": 1}, "patches_per_patient"),
        ({"positive_fraction": 1.0}, "positive_fraction"),
        ({"image_size": 4}, "image_size"),
        ({"class_signal": -1.0}, "class_signal"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic_idc(tmp_path, **kwargs)


def test_demo_is_generated_once_and_again_when_its_options_change(tmp_path, monkeypatch):
    from bclib.data import synthetic

    monkeypatch.setenv("BCLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(synthetic, "DEMO_OPTIONS", {"n_patients": 2, "patches_per_patient": 4, "seed": 0})
    root = synthetic.ensure_demo_dataset()
    first = (root / NESTED_FOLDER).stat().st_mtime_ns
    assert synthetic.ensure_demo_dataset() == root and (root / NESTED_FOLDER).stat().st_mtime_ns == first
    monkeypatch.setattr(synthetic, "DEMO_OPTIONS", {"n_patients": 3, "patches_per_patient": 4, "seed": 0})
    assert scan("idc", synthetic.ensure_demo_dataset()).frame["patient_id"].nunique() == 3
    (root / MARKER_FILE).unlink()
    (root / NESTED_FOLDER / MARKER_FILE).unlink()
    with pytest.raises(DatasetError, match="no complete synthetic dataset"):
        synthetic.ensure_demo_dataset()
