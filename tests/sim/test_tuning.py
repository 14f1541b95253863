"""Each unit type responds like its kind of V1 cell."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.sim import PopulationSpec, SimulatedV1, grating, natural_images
from closedloop.sim.aperture import centred_coordinates, soft_disc
from closedloop.sim.gratings import ORIENTATION_SET_DEG, PHASES_DEG


def orientation_tuning(sim: SimulatedV1, unit: int) -> np.ndarray:
    """Mean over pvc-8's 4 phases of the rate at 16 orientations, at the unit's SF."""
    sf = sim.parameters["sf_cpd"][unit]
    images = np.array([grating(66, 48, o, p, sf) for o in ORIENTATION_SET_DEG for p in PHASES_DEG])
    return sim.expected_rates(images)[:, unit].reshape(16, 4).mean(axis=1)


def test_simple_cells_are_orientation_tuned_at_their_gabor_orientation(simple_population):
    sim = simple_population
    theta = np.deg2rad(ORIENTATION_SET_DEG)
    variances, errors = [], []
    for unit in range(sim.n_units):
        tuning = orientation_tuning(sim, unit)
        vector = np.sum(tuning * np.exp(2j * theta))
        variances.append(1.0 - abs(vector) / tuning.sum())
        preferred = np.rad2deg(np.angle(vector)) / 2.0
        errors.append((preferred - sim.parameters["orientation_deg"][unit] + 90.0) % 180.0 - 90.0)
    variances, errors = np.array(variances), np.array(errors)
    assert np.mean(variances < 0.6) >= 0.8
    assert np.all(np.abs(errors) < 10.0)


def phase_modulation(sim: SimulatedV1, unit: int) -> float:
    """(max - min) / mean of the rate over 8 phases of the unit's best grating."""
    phases = np.arange(8) * 45.0
    images = np.array(
        [grating(66, 48, sim.parameters["orientation_deg"][unit], p, sim.parameters["sf_cpd"][unit]) for p in phases]
    )
    rates = sim.drive(images)[:, unit]
    return float(np.ptp(rates) / rates.mean())


def test_complex_cells_are_phase_invariant_and_simple_cells_are_not(population):
    complex_units = np.flatnonzero(population.unit_types == "complex")
    simple_units = np.flatnonzero(population.unit_types == "simple")
    assert len(complex_units) >= 5 and len(simple_units) >= 5
    assert all(phase_modulation(population, u) < 0.1 for u in complex_units)
    assert all(phase_modulation(population, u) > 1.0 for u in simple_units)


def patch_at(texture: np.ndarray, x_px: int, y_px: int) -> np.ndarray:
    """A grey 66 × 66 image with ``texture`` (a small square) centred at (x, y) pixels from the centre."""
    image = np.full((66, 66), 0.5)
    side = texture.shape[0]
    top, left = 33 - y_px - side // 2, 33 + x_px - side // 2
    image[top : top + side, left : left + side] = texture
    return image


def test_texture_units_respond_to_a_texture_anywhere_in_the_aperture(population):
    texture_units = np.flatnonzero(population.unit_types == "texture")
    simple_units = np.flatnonzero(population.unit_types == "simple")
    positions = [(0, 0), (-12, 0), (12, 0), (0, 12), (0, -12), (8, 8), (-8, -8)]
    textures = [natural_images(1, size_px=30, aperture_diameter_px=28, seed=seed)[0] for seed in range(3)]
    # A patch of each texture unit's own band: it must drive the unit, not just leave it unchanged.
    for unit in texture_units:
        orientation, sf = population.parameters["orientation_deg"][unit], population.parameters["sf_cpd"][unit]
        textures.append(grating(30, 48, orientation, 0.0, sf, aperture_diameter_px=28))
    for texture in textures:
        images = np.array([patch_at(texture, x, y) for x, y in positions])
        evoked = population.drive(images) - population.spontaneous_hz
        spread = np.ptp(evoked, axis=0) / np.maximum(evoked.mean(axis=0), 1e-9)
        assert np.all(spread[texture_units] < 0.02)
        assert np.median(spread[simple_units]) > 1.0
    own_band = np.array([patch_at(textures[3 + i], 12, 0) for i in range(len(texture_units))])
    evoked = population.drive(own_band)[np.arange(len(texture_units)), texture_units]
    assert np.all(evoked - population.spontaneous_hz[texture_units] > 10.0)


@pytest.fixture(scope="module")
def centre_surround_population() -> SimulatedV1:
    return SimulatedV1(PopulationSpec(n_units=8, fractions={"centre_surround": 1.0}, calibration_images=64), seed=5)


def test_centre_surround_units_prefer_a_spot_of_their_centre_size(centre_surround_population):
    sim = centre_surround_population
    x, y = centred_coordinates(66)
    radii = np.arange(1.0, 31.0, 0.5)
    assert {1.0, -1.0} <= set(sim.parameters["polarity"])
    for unit in range(sim.n_units):
        cx, cy = sim.parameters["x_deg"][unit] * 48, sim.parameters["y_deg"][unit] * 48
        distance = np.hypot(x - cx, y - cy)
        sign = sim.parameters["polarity"][unit]
        spots = np.array([0.5 + sign * 0.3 * soft_disc(r, distance, 1.0) for r in radii])
        evoked = sim.drive(spots)[:, unit] - sim.spontaneous_hz[unit]
        best = radii[np.argmax(evoked)]
        centre_px = sim.parameters["centre_sigma_deg"][unit] * 48
        assert 1.2 * centre_px <= best <= 3.5 * centre_px
        assert evoked[-1] < 0.6 * evoked.max()  # the surround suppresses large spots
        opposite = sim.drive(1.0 - spots[np.argmax(evoked)])[0, unit]
        assert opposite == pytest.approx(sim.spontaneous_hz[unit])  # the wrong contrast sign does nothing
