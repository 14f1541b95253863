"""Canvas geometry and the projection onto range, aperture and mean luminance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from closedloop.data.dataset import Preprocessing
from closedloop.data.preprocess import preprocess
from closedloop.errors import ClosedLoopError
from closedloop.synth.canvas import Canvas, Projection


def test_aperture_is_a_30_px_disc_in_model_space():
    mask = Canvas().aperture_mask()
    assert mask.shape == (33, 33)
    assert mask[16, 16] and mask[16, 1] and not mask[16, 0] and not mask[0, 0] and not mask[2, 2]
    assert abs(mask.sum() - np.pi * 15**2) < 40


def test_display_version_preprocesses_back_to_the_model_image_exactly():
    canvas = Canvas()
    rng = np.random.default_rng(0)
    images = Projection(canvas, torch.device("cpu"))(
        torch.as_tensor(rng.random((4, 33, 33)), dtype=torch.float32)
    ).numpy()
    display = canvas.to_display(images)
    assert display.shape == (4, 66, 66)
    assert np.array_equal(preprocess(display, Preprocessing(2, 33)), images)
    assert np.all(display[:, :, :2] == 0.5) and np.all(display[:, :2, :] == 0.5)


def test_display_with_a_smaller_crop_is_centred_like_preprocess():
    canvas = Canvas(model_size=21, downsample=2, display_size=66, aperture_diameter_px=40)
    images = np.random.default_rng(1).random((2, 21, 21)).astype(np.float32)
    assert np.array_equal(preprocess(canvas.to_display(images), Preprocessing(2, 21)), images)


@pytest.mark.parametrize("mean, contrast", [(0.5, None), (0.3, None), (0.5, 0.1)])
def test_projection_enforces_every_constraint(mean, contrast):
    canvas = Canvas(mean_luminance=mean, max_contrast=contrast)
    rng = np.random.default_rng(2)
    raw = torch.as_tensor(rng.normal(0.6, 0.8, (16, 33, 33)), dtype=torch.float32)
    projected = Projection(canvas, torch.device("cpu"))(raw).numpy()
    assert canvas.violations(projected) == []
    # Projecting twice changes nothing (it is a projection).
    again = Projection(canvas, torch.device("cpu"))(torch.as_tensor(projected)).numpy()
    np.testing.assert_allclose(again, projected, atol=1e-5)


def test_projection_is_the_nearest_feasible_image():
    canvas = Canvas()
    project = Projection(canvas, torch.device("cpu"))
    rng = np.random.default_rng(3)
    raw = torch.as_tensor(rng.normal(0.5, 0.5, (1, 33, 33)), dtype=torch.float32)
    best = project(raw)
    inside = torch.as_tensor(canvas.aperture_mask())
    for _ in range(20):  # any other feasible image is farther away inside the aperture
        other = project(best + 0.05 * torch.randn(1, 33, 33))
        assert ((other - raw)[:, inside] ** 2).sum() >= ((best - raw)[:, inside] ** 2).sum() - 1e-4


def test_a_contrast_floor_raises_faint_images_and_leaves_the_rest():
    canvas = Canvas(max_contrast=0.2, min_contrast=0.08)
    inside = canvas.aperture_mask()
    rng = np.random.default_rng(4)
    faint = 0.5 + rng.normal(0, 0.01, (3, 33, 33))
    strong = 0.5 + rng.normal(0, 0.12, (3, 33, 33))
    raw = torch.as_tensor(np.concatenate([faint, strong]), dtype=torch.float32)
    projected = Projection(canvas, torch.device("cpu"))(raw).numpy()
    rms = projected[:, inside].std(axis=1)
    np.testing.assert_allclose(rms[:3], 0.08, rtol=1e-3)  # raised to the floor, the pattern kept
    assert all(np.corrcoef(projected[i, inside], faint[i, inside])[0, 1] > 0.999 for i in range(3))
    unfloored = Projection(Canvas(max_contrast=0.2), torch.device("cpu"))(raw).numpy()
    np.testing.assert_array_equal(projected[3:], unfloored[3:])  # above the floor: untouched
    assert canvas.violations(projected) == []
    only_strong = Projection(canvas, torch.device("cpu"))(raw, torch.tensor([False] * 3 + [True] * 3)).numpy()
    np.testing.assert_array_equal(only_strong[:3], unfloored[:3])  # rows left out keep their contrast
    blank = Projection(canvas, torch.device("cpu"))(torch.full((1, 33, 33), 0.5)).numpy()
    assert np.all(blank == 0.5)  # no pattern to scale up: the blank screen stays blank


def test_bad_canvases_are_refused():
    with pytest.raises(ClosedLoopError, match="display"):
        Canvas(model_size=40, downsample=2, display_size=66)
    with pytest.raises(ClosedLoopError, match="mean luminance"):
        Canvas(mean_luminance=1.5)
    with pytest.raises(ClosedLoopError, match="aperture"):
        Canvas(aperture_diameter_px=-1)
    with pytest.raises(ClosedLoopError, match="min_contrast"):
        Canvas(max_contrast=0.1, min_contrast=0.2)
    with pytest.raises(ClosedLoopError, match="min_contrast"):
        Canvas(min_contrast=0.0)
