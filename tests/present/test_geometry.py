"""Degrees to pixels, resampling, the aperture, gamma and the expected screen."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import quadrant_image, write_rig

from closedloop.config import load_rig
from closedloop.present import geometry


def test_resampling_matrix_is_a_box_filter() -> None:
    shrink = geometry.resampling_matrix(3, 6)
    np.testing.assert_allclose(shrink, np.kron(np.eye(3), [[0.5, 0.5]]))
    grow = geometry.resampling_matrix(6, 2)
    np.testing.assert_allclose(grow, np.kron(np.eye(2), np.ones((3, 1))))
    odd = geometry.resampling_matrix(45, 66)
    np.testing.assert_allclose(odd.sum(axis=1), 1.0)
    assert np.all(odd >= 0)


def test_resample_keeps_the_mean_and_the_orientation() -> None:
    image = quadrant_image(20)
    big = geometry.resample(image, 60)
    np.testing.assert_allclose(big[:30, :30], 0.9)  # top-left stays top-left
    np.testing.assert_allclose(big[30:, 30:], 0.7)
    small = geometry.resample(np.random.default_rng(0).random((66, 66)), 45)
    assert small.shape == (45, 45)
    np.testing.assert_allclose(geometry.resample(np.full((66, 66), 0.25), 45), 0.25)


def test_aperture_lands_where_the_rig_says() -> None:
    rig = load_rig("rigs/sim.yaml")
    box = geometry.aperture_box(rig)
    column, row = rig.display.to_pixels(*rig.stimulus.centre_deg)
    assert abs(box.left + box.size / 2 - column) <= 0.5 and abs(box.top + box.size / 2 - row) <= 0.5
    # centre (-3°, -2°): left of and below the screen centre
    assert box.right < rig.display.width_px / 2 and box.top > rig.display.height_px / 2
    expected = rig.stimulus.aperture_diameter_deg * rig.pixels_per_degree
    assert abs(box.size - expected) <= 1.0
    assert box.size == geometry.aperture_diameter_px(rig) == 45


def test_psychopy_centre_puts_the_quad_on_pixel_edges(tmp_path) -> None:
    rig = write_rig(tmp_path)
    box = geometry.aperture_box(rig)
    x, y = box.psychopy_centre(rig.display.width_px, rig.display.height_px)
    assert x - box.size / 2 + rig.display.width_px / 2 == box.left
    assert rig.display.height_px / 2 - (y + box.size / 2) == box.top


def test_disc_is_the_inscribed_circle() -> None:
    disc = geometry.disc(10)
    assert disc[5, 5] and disc[0, 5] and disc[5, 9]
    assert not disc[0, 0] and not disc[9, 9] and not disc[0, 1]
    assert abs(disc.sum() - math.pi * 25) < 6


def test_gamma_encode_linearises() -> None:
    assert geometry.gamma_encode(0.25, None) == 0.25
    encoded = geometry.gamma_encode(np.array([0.0, 0.25, 1.0]), 2.2)
    np.testing.assert_allclose(encoded**2.2, [0.0, 0.25, 1.0])
    np.testing.assert_allclose(geometry.gamma_encode(np.array([-0.5, 1.5]), 2.0), [0.0, 1.0])


def test_texture_is_masked_at_mean_luminance_and_gamma_encoded(tmp_path) -> None:
    rig = write_rig(tmp_path, gamma=2.0, mean_luminance=0.36)
    texture = geometry.stimulus_texture(np.full((20, 20), 0.81), rig)
    size = geometry.aperture_diameter_px(rig)
    assert texture.shape == (size, size)
    assert texture[size // 2, size // 2] == pytest.approx(0.9)  # sqrt(0.81)
    assert texture[0, 0] == pytest.approx(0.6) == geometry.background_value(rig)  # sqrt(0.36), a corner


def test_to_psychopy_flips_rows_and_rescales() -> None:
    values = np.array([[1.0, 1.0], [0.0, 0.5]])  # top row white
    out = geometry.to_psychopy(values)
    np.testing.assert_allclose(out, [[-1.0, 0.0], [1.0, 1.0]])  # PsychoPy draws row 0 at the bottom
    assert out.dtype == np.float32


def test_expected_screen_places_everything(tmp_path) -> None:
    rig = write_rig(tmp_path)
    texture = geometry.stimulus_texture(quadrant_image(), rig)
    on = geometry.expected_screen(rig, texture, photodiode_on=True)
    off = geometry.expected_screen(rig, None, photodiode_on=False)
    assert on.shape == off.shape == (600, 800)
    box, patch = geometry.aperture_box(rig), geometry.photodiode_box(rig)
    assert (patch.left, patch.top, patch.size) == (0, 560, 40)
    assert np.all(on[560:, :40] == 1.0) and np.all(off[560:, :40] == 0.0)
    np.testing.assert_array_equal(on[box.top : box.bottom, box.left : box.right], texture)
    assert np.all(off[:500, 100:] == 0.5)
