"""bclib.evaluation.mosaic: patches at their slide coordinates, truth and probability maps."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bclib.evaluation import mosaic


def _synthetic_slide():
    """Five 50x50 patches with distinct colours on a 3x4 grid starting at (1001, 2001)."""
    cells = [(0, 0), (0, 3), (1, 1), (2, 0), (2, 3)]
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 200, 0), (0, 120, 120)]
    rows = [{"x": 1001 + 50 * column, "y": 2001 + 50 * row, "label": int(row % 2), "patient_id": "p1"}
            for row, column in cells]
    images = np.stack([np.full((50, 50, 3), colour, dtype=np.uint8) for colour in colours])
    return pd.DataFrame(rows), images, cells, colours


def test_patches_land_at_their_coordinates():
    frame, images, cells, colours = _synthetic_slide()
    canvas, extent = mosaic.build_mosaic(frame, images, patch_size=50)
    assert canvas.shape == (150, 200, 3) and canvas.dtype == np.uint8
    assert extent == (1001.0, 1201.0, 2151.0, 2001.0)
    for (row, column), colour in zip(cells, colours):
        block = canvas[row * 50:(row + 1) * 50, column * 50:(column + 1) * 50]
        assert (block == colour).all()
    assert (canvas[0:50, 50:100] == 255).all()  # no patch there: white background
    edge, _ = mosaic.build_mosaic(frame, [image[:30, :20] for image in images])  # smaller patches at slide edges
    assert (edge[:30, :20] == colours[0]).all() and (edge[30:50, :50] == 255).all()


def test_label_and_probability_maps_share_the_grid():
    frame, _, cells, _ = _synthetic_slide()
    probs = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    truth = mosaic.label_map(frame)
    predicted = mosaic.probability_map(frame, probs)
    assert truth.shape == predicted.shape == (3, 4)
    for (row, column), prob, label in zip(cells, probs, frame["label"]):
        assert predicted[row, column] == pytest.approx(prob)
        assert truth[row, column] == label
    assert np.isnan(predicted).sum() == 12 - 5 and np.isnan(truth).sum() == 12 - 5


def test_clear_errors():
    frame, images, _, _ = _synthetic_slide()
    with pytest.raises(ValueError, match="probabilities for"):
        mosaic.probability_map(frame, [0.5])
    two_patients = pd.concat([frame, frame.assign(patient_id="p2")])
    with pytest.raises(ValueError, match="2 patients"):
        mosaic.label_map(two_patients)
    with pytest.raises(ValueError, match="lacks"):
        mosaic.label_map(frame.drop(columns="x"))
    with pytest.raises(ValueError, match="4 images for 5 rows"):
        mosaic.build_mosaic(frame, images[:4])


@pytest.mark.realdata
def test_real_patient_10253(real_idc):
    from bclib.data.datasets import idc
    from bclib.data.imageio import read_image

    index = idc.scan(real_idc)
    patient = index.subset(np.flatnonzero(index.frame["patient_id"].to_numpy() == "10253"))
    assert len(patient) > 100
    frame = patient.frame
    canvas, extent = mosaic.build_mosaic(frame, [patient.load_image(position) for position in range(len(frame))])
    truth = mosaic.label_map(frame)
    rows, columns, shape, grid_extent = mosaic.grid_cells(frame)
    assert extent == grid_extent and canvas.shape[:2] == (shape[0] * 50, shape[1] * 50)
    assert np.isfinite(truth).sum() == len(patient)  # one cell per patch, none overwritten
    assert set(np.unique(truth[np.isfinite(truth)])) <= {0.0, 1.0}
    for position in (0, len(patient) // 2, len(patient) - 1):
        image = read_image(frame["path"].iloc[position])
        top, left = rows[position] * 50, columns[position] * 50
        assert np.array_equal(canvas[top:top + image.shape[0], left:left + image.shape[1]], image)


def test_slide_view_figure():
    import matplotlib.pyplot as plt

    from bclib.plots.evaluation import slide_view

    frame, images, _, _ = _synthetic_slide()
    canvas, extent = mosaic.build_mosaic(frame, images)
    fig = slide_view(canvas, extent, mosaic.label_map(frame), mosaic.probability_map(frame, np.full(5, 0.3)))
    assert len(fig.axes) == 4  # mosaic, truth, probability, colour bar
    assert fig.axes[0].get_images()[0].get_extent() == list(extent)
    plt.close("all")
