"""The pyramid family: units built from plenoptic's steerable pyramid and its fitted OnOff model."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from closedloop.errors import ClosedLoopError
from closedloop.sim import PopulationSpec, SimulatedV1, grating


def pyramid(fractions: dict[str, float], n_units: int = 8, seed: int = 4) -> SimulatedV1:
    spec = PopulationSpec(family="pyramid", n_units=n_units, calibration_images=32, fractions=fractions)
    return SimulatedV1(spec, seed=seed)


def phase_sweep(population: SimulatedV1, unit: int) -> np.ndarray:
    """The unit's rate above spontaneous over 8 phases of its best full-field grating."""
    ppd = population.pixels_per_degree

    def rates(orientation: float, sf: float) -> np.ndarray:
        images = np.stack(
            [grating(66, ppd, orientation, phase, sf, radius_px=200.0) for phase in np.arange(0, 360, 45.0)]
        )
        return population.drive(images)[:, unit] - population.spontaneous_hz[unit]

    candidates = [(o, sf) for o in np.arange(0, 180, 22.5) for sf in (1.65, 3.3)]
    return rates(*max(candidates, key=lambda c: rates(*c).mean()))


def test_simple_units_follow_the_gratings_phase_and_complex_units_do_not():
    population = pyramid({"simple": 0.5, "complex": 0.5})
    modulation = {"simple": [], "complex": []}
    for unit, kind in enumerate(population.unit_types):
        sweep = phase_sweep(population, unit)
        assert sweep.max() > 1.0  # every unit is driven by some grating
        modulation[kind].append((sweep.max() - sweep.min()) / sweep.mean())
    assert min(modulation["simple"]) > 1.5  # half-wave rectified: silent at the opposite phase
    assert max(modulation["complex"]) < 0.5  # energy: about the same at every phase


def test_on_units_rise_with_a_bright_spot_and_off_units_with_a_dark_one():
    population = pyramid({"centre_surround": 1.0}, n_units=6)
    p, ppd = population.parameters, population.pixels_per_degree
    rows, columns = np.mgrid[:66, :66]
    for unit in range(population.n_units):
        x, y = 33 + p["x_deg"][unit] * ppd, 33 - p["y_deg"][unit] * ppd
        spot = np.hypot(columns + 0.5 - x, rows + 0.5 - y) <= 4.0
        bright, dark = np.full((66, 66), 0.5), np.full((66, 66), 0.5)
        bright[spot], dark[spot] = 0.9, 0.1
        rise = population.drive(np.stack([bright, dark]))[:, unit] - population.spontaneous_hz[unit]
        preferred, other = (rise[0], rise[1]) if p["polarity"][unit] > 0 else (rise[1], rise[0])
        assert preferred > 1.0 and preferred > 3 * max(other, 0.0)


def test_the_family_is_seeded_and_its_grey_screen_gives_the_spontaneous_rate(natural):
    first = pyramid({"simple": 0.4, "complex": 0.4, "centre_surround": 0.2})
    again, other = SimulatedV1(first.spec, seed=4), SimulatedV1(first.spec, seed=5)
    rates = first.expected_rates(natural[:20])
    assert rates.shape == (20, 8) and np.all(np.isfinite(rates)) and np.all(rates >= 0)
    np.testing.assert_array_equal(rates, again.expected_rates(natural[:20]))
    assert not np.allclose(rates, other.expected_rates(natural[:20]))
    np.testing.assert_allclose(first.drive(np.full((66, 66), 0.5))[0], first.spontaneous_hz, atol=1e-9)
    assert np.all(first.drive(natural).max(axis=0) > first.spontaneous_hz + 1.0)


def test_without_plenoptic_the_family_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "plenoptic", None)  # import plenoptic now raises ImportError
    with pytest.raises(ClosedLoopError, match=r"closedloop\[pyramid\]"):
        pyramid({"simple": 1.0})
