"""The synthetic IDC generator: layout, determinism, visible class difference, edge patches."""
from __future__ import annotations

import re
import time

import numpy as np
import pytest

from bclib.data.datasets import idc, scan
from bclib.data.index import DatasetError
from bclib.data.synthetic import MARKER_FILE, make_synthetic_idc
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
    assert np.allclose(per_patient["mean"], 0.25)
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
    assert darkness[labels == 1].mean() > darkness[labels == 0].mean() + 20
    # H&E-like: red and blue above green on average (pink / purple, not grey)
    mean_colour = np.mean([index.load_image(i).reshape(-1, 3).mean(axis=0) for i in range(0, len(index), 7)], axis=0)
    assert mean_colour[0] > mean_colour[1] and mean_colour[2] > mean_colour[1]


def test_edge_patches_are_smaller(synthetic_idc):
    index = idc.scan(synthetic_idc)
    shapes = [index.load_image(i).shape for i in range(len(index))]
    small = [s for s in shapes if s[0] < 50 or s[1] < 50]
    assert 1 <= len(small) <= len(shapes) // 10
    assert all(s[0] == 50 for s in shapes)


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
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic_idc(tmp_path, **kwargs)
