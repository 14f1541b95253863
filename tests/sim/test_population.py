"""SimulatedV1: construction, determinism, rates, layout and receptive fields."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.sim import UNIT_TYPES, PopulationSpec, SimulatedV1, channel_positions_um, natural_images
from closedloop.sim.brain import Brain
from closedloop.sim.utah import channel_grid_positions

GREY = np.full((1, 66, 66), 0.5)


def test_same_seed_same_population_and_rates(population, natural):
    again = SimulatedV1(seed=1)
    assert np.array_equal(again.unit_types, population.unit_types)
    assert np.array_equal(again.channels, population.channels)
    assert np.array_equal(again.expected_rates(natural[:20]), population.expected_rates(natural[:20]))
    other = SimulatedV1(seed=2)
    assert not np.allclose(other.expected_rates(natural[:20]), population.expected_rates(natural[:20]))


def test_a_missing_seed_is_drawn_and_recorded():
    first = SimulatedV1(PopulationSpec(n_units=5, calibration_images=16))
    assert isinstance(first.seed, int) and first.spec.seed == first.seed
    rebuilt = SimulatedV1(first.spec)
    assert np.array_equal(rebuilt.drive(GREY + 0.1), first.drive(GREY + 0.1))
    assert np.array_equal(rebuilt.latencies_s, first.latencies_s)


def test_public_attributes(population):
    n = population.n_units
    assert n == 40 and population.size_px == 66 and population.pixels_per_degree == 48.0
    assert population.unit_ids.dtype == np.int64 and np.array_equal(population.unit_ids, np.arange(1, n + 1))
    assert set(population.unit_types) == set(UNIT_TYPES)
    counts = population.spec.unit_counts()
    assert sum(counts.values()) == n
    assert all(np.sum(population.unit_types == t) == counts[t] for t in UNIT_TYPES)
    assert population.latencies_s.shape == (n,)
    assert np.all((population.latencies_s >= 0.04) & (population.latencies_s <= 0.06))
    assert isinstance(population, Brain)
    assert np.array_equal(population(GREY), population.expected_rates(GREY))


def test_unit_counts_round_to_the_total():
    spec = PopulationSpec(n_units=7, fractions={"simple": 0.5, "complex": 0.5})
    assert spec.unit_counts() == {"simple": 4, "complex": 3, "centre_surround": 0, "texture": 0, "weak": 0}


@pytest.mark.parametrize(
    "changes",
    [
        {"n_units": 0},
        {"fractions": {"simple": 0.5}},
        {"fractions": {"bogus": 1.0}},
        {"spontaneous_hz": (10.0, 1.0)},
        {"aperture_diameter_px": 80.0},
        {"seed": -1},
        {"n_units": True},
    ],
)
def test_bad_spec_values_raise(changes):
    with pytest.raises(ValueError, match="PopulationSpec"):
        PopulationSpec(**changes)


def test_spontaneous_and_driven_rates_are_in_v1_range(population, natural):
    spont = population.expected_rates(GREY)[0]
    assert np.allclose(spont, population.spontaneous_hz)
    assert np.all((spont >= 1.0) & (spont <= 10.0))
    assert 2.0 < spont.mean() < 8.0
    rates = population.expected_rates(natural)
    assert np.all(rates >= spont - 1e-9)
    top = np.quantile(rates, 0.98, axis=0)
    tuned = population.unit_types != "weak"
    assert np.all((top[tuned] > 15.0) & (top[tuned] < 160.0))
    weak = ~tuned
    assert np.all(top[weak] - spont[weak] < 10.0)
    assert 15.0 < np.median(top[tuned]) < 100.0


def test_units_spread_over_the_utah_array_without_corners(population):
    positions = channel_positions_um()
    assert positions.shape == (96, 2)
    corners = {(0, 0), (0, 9), (9, 0), (9, 9)}
    assert not corners & {tuple(cell) for cell in channel_grid_positions()}
    assert np.allclose(np.unique(positions[:, 0]), (np.arange(10) - 4.5) * 400.0)
    channels = population.channels
    assert channels.dtype.kind == "i" and channels.min() >= 0 and channels.max() <= 95
    assert len(np.unique(channels)) == population.n_units
    assert np.array_equal(population.channel_positions_um, positions[channels])
    crowded = SimulatedV1(PopulationSpec(n_units=120, calibration_images=16), seed=3)
    assert len(np.unique(crowded.channels)) == 96 and np.bincount(crowded.channels).max() == 2


def test_rf_centres_follow_a_retinotopic_gradient():
    spec = PopulationSpec(n_units=30, rf_scatter_deg=0.0, retinotopic_gradient_deg_per_mm=0.1, calibration_images=16)
    sim = SimulatedV1(spec, seed=4)
    centres = np.stack([sim.parameters["x_deg"], sim.parameters["y_deg"]], axis=1)
    mm = sim.channel_positions_um / 1000.0
    fit, *_ = np.linalg.lstsq(mm, centres, rcond=None)
    assert np.allclose(mm @ fit, centres, atol=1e-9)
    singular_values = np.linalg.svd(fit, compute_uv=False)
    assert np.allclose(singular_values, 0.1)  # a rotation scaled by the gradient


def test_receptive_fields_are_the_linear_filters(population):
    fields = population.receptive_fields()
    assert fields.shape == (40, 66, 66)
    localised = population.has_localised_rf
    assert np.array_equal(localised, np.isin(population.unit_types, ["simple", "complex", "centre_surround"]))
    assert np.allclose(np.linalg.norm(fields[localised].reshape(localised.sum(), -1), axis=1), 1.0)
    assert np.all(fields[~localised] == 0.0)
    # Showing a unit its own simple/centre-surround RF drives it; the negative does not.
    for unit in np.flatnonzero(np.isin(population.unit_types, ["simple", "centre_surround"])):
        pattern = 0.2 * fields[unit] / np.abs(fields[unit]).max()
        rates = population.drive(np.stack([0.5 + pattern, 0.5 - pattern]))[:, unit]
        assert rates[0] > 2 * population.spontaneous_hz[unit] and rates[1] == pytest.approx(
            population.spontaneous_hz[unit]
        )


def test_images_are_checked(population):
    with pytest.raises(ValueError):
        population.drive(np.zeros((2, 3, 66, 66)))
    with pytest.raises(ValueError):
        population.expected_rates(GREY, window_s=(0.1, 0.05))
    with pytest.raises(ValueError):
        population.expected_rates(GREY, duration_s=0.0)
    with pytest.raises(TypeError):
        SimulatedV1("default")


def test_larger_canvases_are_centre_cropped(population, natural):
    canvas = np.full((3, 320, 320), 0.5, dtype=np.float32)
    canvas[:, 127:193, 127:193] = natural[:3]
    assert np.array_equal(population.expected_rates(canvas), population.expected_rates(natural[:3]))
    small = natural_images(2, size_px=50, aperture_diameter_px=46, seed=3)
    padded = np.full((2, 66, 66), 0.5)
    padded[:, 8:58, 8:58] = small
    assert np.array_equal(population.drive(small), population.drive(padded))


def test_pvc8_canvas_gratings_evoke_the_same_rates_as_the_grid(population):
    from closedloop.sim import orientation_grating_set

    canvas, _ = orientation_grating_set(canvas_px=320)
    grid, _ = orientation_grating_set(canvas_px=66)
    assert np.array_equal(population.expected_rates(canvas), population.expected_rates(grid))
