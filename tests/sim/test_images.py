"""Natural images, apertures, gratings and the pvc-8 grating sets."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.sim import (
    aperture_mask,
    fit_to_grid,
    grating,
    natural_images,
    orientation_grating_set,
    pvc8_grating_sets,
    sf_grating_set,
    size_grating_set,
)


def test_natural_images_are_reproducible_distinct_and_in_range():
    images = natural_images(24, seed=7)
    assert images.shape == (24, 66, 66) and images.dtype == np.float32
    assert np.array_equal(images, natural_images(24, seed=7))
    assert not np.array_equal(images, natural_images(24, seed=8))
    assert images.min() >= 0.0 and images.max() <= 1.0
    flat = images.reshape(24, -1)
    distances = np.abs(flat[:, None] - flat[None]).mean(-1)
    assert np.all(distances[~np.eye(24, dtype=bool)] > 0.01)


def test_natural_images_are_grey_outside_the_aperture_with_mean_grey_inside():
    images = natural_images(30, size_px=66, aperture_diameter_px=60, seed=1)
    mask = aperture_mask(66, 60)
    assert np.all(images[:, mask == 0] == 0.5)
    inside = mask > 0.99
    means = images[:, inside].mean(axis=1)
    assert np.all(np.abs(means - 0.5) < 0.01)
    rms = images[:, inside].std(axis=1)
    assert 0.07 < np.median(rms) < 0.25
    assert rms.std() > 0.01  # a natural spread of contrasts, not one fixed value


def test_natural_images_follow_size_and_aperture_arguments():
    images = natural_images(3, size_px=40, aperture_diameter_px=30, seed=0)
    assert images.shape == (3, 40, 40)
    assert np.all(images[:, aperture_mask(40, 30) == 0] == 0.5)
    assert natural_images(0).shape == (0, 66, 66)
    with pytest.raises(ValueError):
        natural_images(-1)


def test_aperture_mask_is_a_soft_disc_of_the_right_size():
    mask = aperture_mask(66, 60, edge_px=2)
    assert mask[32, 32] == 1.0 and mask[0, 0] == 0.0 and mask[32, 0] == 0.0
    assert np.any((mask > 0.05) & (mask < 0.95))
    assert abs(mask.sum() - np.pi * 30**2) / (np.pi * 30**2) < 0.02
    assert np.array_equal(mask, mask[::-1]) and np.array_equal(mask, mask.T)


def test_grating_orientation_phase_and_frequency_conventions():
    vertical = grating(66, 48, orientation_deg=90, phase_deg=0, sf_cpd=2)
    inside = aperture_mask(66, 60) == 1
    # 90 deg: vertical bars, so every column is constant inside the aperture.
    columns = [vertical[inside[:, c], c] for c in range(66) if inside[:, c].any()]
    assert max(np.ptp(column) for column in columns) < 1e-6
    horizontal = grating(66, 48, orientation_deg=0, phase_deg=0, sf_cpd=2)
    rows = [horizontal[r, inside[r]] for r in range(66) if inside[r].any()]
    assert max(np.ptp(row) for row in rows) < 1e-6
    # Phase 0 puts the bright peak through the centre (between pixels 32 and 33).
    profile = grating(66, 48, 90, 0, 2, contrast=1.0)[32]
    assert profile[32] > 0.99 and profile[33] > 0.99
    flipped = grating(66, 48, 90, 180, 2)
    assert np.allclose(flipped - 0.5, -(vertical - 0.5), atol=1e-6)
    # 2 c/deg at 48 px/deg: a 24-pixel period.
    assert abs(profile[32 + 12] - profile[32]) > 0.9 and abs(profile[32 + 24] - profile[32]) < 0.02
    assert np.allclose(grating(66, 48, 90, 0, 2, contrast=0.5) - 0.5, 0.5 * (vertical - 0.5), atol=1e-6)


def test_grating_disc_and_annulus_are_complementary():
    disc = grating(66, 48, 45, 0, 2, radius_px=16)
    annulus = grating(66, 48, 45, 0, 2, radius_px=16, annulus=True)
    full = grating(66, 48, 45, 0, 2, radius_px=1000)
    assert np.allclose((disc - 0.5) + (annulus - 0.5), full - 0.5, atol=1e-6)
    assert disc[0, 0] == 0.5 and annulus[32, 32] == 0.5


def test_pvc8_set_sizes_and_order():
    images, params = pvc8_grating_sets(canvas_px=66)
    assert images.shape == (416, 66, 66)
    assert [np.sum(params["set"] == s) for s in ("sf", "orientation", "size")] == [128, 64, 224]
    assert list(params["set"][[0, 127, 128, 191, 192, 415]]) == [
        "sf",
        "sf",
        "orientation",
        "orientation",
        "size",
        "size",
    ]
    sf, sf_params = sf_grating_set(canvas_px=66)
    assert np.allclose(sf_params["phase_deg"][:4], [0, 90, 180, 270])  # phase fastest
    assert np.allclose(np.unique(sf_params["sf_cpd"]), 2.0 ** np.array([-2, -1.3, -0.6, 0.1, 0.8, 1.5, 2.2, 2.9]))
    assert np.allclose(sf_params["sf_cpd"][::16], np.sort(np.unique(sf_params["sf_cpd"])))
    assert np.allclose(sf_params["orientation_deg"][:16:4], [90, 45, 0, -45])
    _, ori = orientation_grating_set(canvas_px=66)
    assert np.allclose(ori["orientation_deg"][::4], 90 - 11.25 * np.arange(16))
    assert ori["orientation_deg"][-1] == -78.75 and np.all(ori["sf_cpd"] == 2.0)
    _, size = size_grating_set(canvas_px=66)
    assert np.array_equal(size["annulus"][:8], [False] * 4 + [True] * 4)
    assert np.allclose(size["radius_px"][:56:8], [16, 26, 43, 70, 113, 184, 299])
    assert np.allclose(size["orientation_deg"][::56], [90, 45, 0, -45])
    assert np.array_equal(images[:128], sf)


def test_canvas_centre_crop_equals_the_small_grid():
    big, _ = orientation_grating_set(canvas_px=320)
    small, _ = orientation_grating_set(canvas_px=66)
    assert np.array_equal(fit_to_grid(big, 66).astype(np.float32), small)
    padded = fit_to_grid(np.ones((1, 10, 10)), 66)
    assert padded.shape == (1, 66, 66) and padded[0, 28:38, 28:38].min() == 1.0 and padded[0, 0, 0] == 0.5
    with pytest.raises(ValueError):
        fit_to_grid(np.full((66, 66), np.nan), 66)
    with pytest.raises(ValueError):
        fit_to_grid(np.zeros((2, 2, 66, 66)), 66)
