"""Simulator families (normalisation, deep, off-centre RFs) and stimulus sets (1/f, dead leaves)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from closedloop.errors import ConfigError
from closedloop.sim import PopulationSpec, SimulatedV1, grating, load_scenario
from closedloop.sim.archive import ArchiveSpec, make_archive, population_for, spec_from_archive
from closedloop.sim.stimuli import dead_leaves, pink_noise, stimulus_set

SCENARIOS = Path(__file__).resolve().parents[2] / "sim"
FAMILY_FILES = ("normalisation", "deep", "offset", "textures", "normalised_rim", "pyramid")


def small(family: str, **changes) -> SimulatedV1:
    return SimulatedV1(PopulationSpec(family=family, n_units=8, calibration_images=32, **changes), seed=4)


@pytest.mark.parametrize("name", FAMILY_FILES)
def test_shipped_family_scenarios_load(name):
    spec = load_scenario(SCENARIOS / f"{name}.yaml")
    assert spec.n_units == 40 and sum(spec.unit_counts().values()) == 40


@pytest.mark.parametrize("family", ["normalisation", "deep"])
def test_families_are_seeded_and_exact(family, natural):
    first, again, other = small(family), small(family), SimulatedV1(small(family).spec, seed=5)
    images = natural[:20]
    rates = first.expected_rates(images)
    assert rates.shape == (20, 8) and np.all(np.isfinite(rates)) and np.all(rates >= 0)
    np.testing.assert_array_equal(rates, again.expected_rates(images))
    assert not np.allclose(rates, other.expected_rates(images))
    assert set(first.unit_types) <= set(first.spec.unit_types)
    # every unit is driven by some natural images (no dead units)
    assert np.all(first.drive(natural).max(axis=0) > first.spontaneous_hz + 1.0)


def test_normalisation_saturates_with_contrast_and_is_suppressed_by_its_surround():
    population = small(
        "normalisation",
        fractions={"complex": 1.0},
        surround_suppression=(2.0, 2.0),
        semisaturation_contrast=(0.05, 0.05),
        rf_eccentricity_deg=(0.0, 0.0),
    )
    p, ppd = population.parameters, population.pixels_per_degree
    saturation, suppressed = [], []
    for u in range(population.n_units):
        kwargs = dict(
            size_px=66,
            pixels_per_degree=ppd,
            orientation_deg=p["orientation_deg"][u],
            phase_deg=0.0,
            sf_cpd=p["sf_cpd"][u],
        )
        centre_px = 1.5 * p["sigma_along_deg"][u] * ppd
        rate = {c: population.drive(grating(radius_px=centre_px, contrast=c, **kwargs))[0, u] for c in (0.25, 0.5, 1.0)}
        big = population.drive(grating(radius_px=200.0, contrast=1.0, **kwargs))[0, u]
        saturation.append((rate[1.0] - rate[0.5]) / (rate[0.5] - rate[0.25]))
        suppressed.append(big < rate[1.0])
    assert np.median(saturation) < 0.7  # doubling contrast adds less and less
    assert np.mean(suppressed) >= 0.75  # a grating that also fills the surround drives less


def test_deep_units_read_three_depths():
    population = SimulatedV1(PopulationSpec(family="deep", n_units=9, calibration_images=32), seed=1)
    assert sorted(set(population.unit_types)) == ["layer1", "layer2", "layer3"]
    assert not population.has_localised_rf.any() and not population.receptive_fields().any()


def test_deep_sessions_with_one_network_seed_read_one_network():
    def session(seed: int, network_seed: int | None) -> SimulatedV1:
        spec = PopulationSpec(family="deep", n_units=6, calibration_images=32, network_seed=network_seed)
        return SimulatedV1(spec, seed=seed)

    one, other = session(1, 5), session(2, 5)
    np.testing.assert_array_equal(one.stage.w2, other.stage.w2)
    np.testing.assert_array_equal(one.stage.w3, other.stage.w3)
    assert not np.array_equal(one.parameters["x_deg"], other.parameters["x_deg"])  # other units
    assert not np.array_equal(session(2, None).stage.w2, other.stage.w2)  # unset: the network follows seed
    np.testing.assert_array_equal(session(5, None).stage.w2, other.stage.w2)


def test_offset_receptive_fields_sit_where_asked(natural):
    population = SimulatedV1(PopulationSpec(n_units=10, calibration_images=32, rf_eccentricity_deg=(0.4, 0.6)), seed=2)
    eccentricity = np.hypot(population.parameters["x_deg"], population.parameters["y_deg"])
    assert np.all((eccentricity >= 0.4) & (eccentricity <= 0.6))
    assert np.all(np.isfinite(population.expected_rates(natural[:5])))


def test_pink_noise_has_a_one_over_f_spectrum_and_natural_contrast():
    images = pink_noise(40, size_px=64, aperture_diameter_px=64, seed=1).astype(np.float64) - 0.5
    power = (np.abs(np.fft.fft2(images)) ** 2).mean(axis=0)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64)))
    band = (f > 0.03) & (f < 0.3)
    slope = np.polyfit(np.log(f[band]), np.log(power[band]), 1)[0]
    assert -2.4 < slope < -1.6  # amplitude ~ 1/f, power ~ 1/f²
    assert 0.08 < np.median(images.std(axis=(1, 2))) < 0.25


def test_dead_leaves_are_flat_patches_with_sharp_edges():
    images = dead_leaves(5, seed=3)
    inside = images[:, 20:46, 20:46]
    # occluding flat discs: most neighbouring pixels are equal, and each image has many grey levels
    assert np.mean(np.diff(inside, axis=2) == 0) > 0.5
    assert all(len(np.unique(im)) > 5 for im in inside)


def test_stimulus_sets_are_seeded_and_mixed_interleaves():
    mixed = stimulus_set("mixed", 6, seed=2)
    np.testing.assert_array_equal(mixed, stimulus_set("mixed", 6, seed=2))
    np.testing.assert_array_equal(mixed[1::3], pink_noise(2, seed=3))
    with pytest.raises(ValueError, match="unknown image set"):
        stimulus_set("clouds", 2)


@pytest.mark.parametrize(
    "text, field",
    [
        ("population:\n  family: transformer\n", "population.family"),
        ("population:\n  images: 7\n", "population.images"),
        ("population:\n  family: deep\n  fractions: {simple: 1.0}\n", "population.fractions"),
        ("population:\n  rf_eccentricity_deg: [0.5, 2.0]\n", "population.rf_eccentricity_deg"),
        ("population:\n  semisaturation_contrast: [0, 0.1]\n", "population.semisaturation_contrast"),
        ("population:\n  network_seed: 3\n", "population.network_seed"),
        ("population:\n  family: deep\n  network_seed: -1\n", "population.network_seed"),
        ("population:\n  family: pyramid\n  size_px: 50\n  aperture_diameter_px: 40\n", "population.size_px"),
    ],
)
def test_bad_family_fields_name_the_field(tmp_path, text, field):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    assert caught.value.field == field


def test_a_family_archive_rebuilds_its_ground_truth(tmp_path):
    scenario = tmp_path / "norm.yaml"
    scenario.write_text(
        "population:\n  family: normalisation\n  n_units: 6\n  calibration_images: 32\n  images: dead_leaves\n"
    )
    spec = ArchiveSpec(layout="session", seed=3, n_images=6, n_repeats=2, scenario=scenario)
    summary = make_archive(tmp_path / "a.h5", spec)
    assert set(summary.unit_types) == {"simple", "complex"}
    rebuilt = population_for(spec_from_archive(tmp_path / "a.h5"))
    assert rebuilt.spec.family == "normalisation" and rebuilt.spec.images == "dead_leaves"
    probe = dead_leaves(3, seed=9)
    np.testing.assert_array_equal(rebuilt.expected_rates(probe), population_for(spec).expected_rates(probe))


def test_a_family_scenario_is_a_brain_for_the_simulated_array():
    from closedloop.acquisition.sim_array import BrainSpec

    source = BrainSpec(scenario=str(SCENARIOS / "normalisation.yaml"), n_units=5, seed=2).build()
    assert source.population.spec.family == "normalisation" and source.population.n_units == 5
