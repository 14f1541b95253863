"""Scenario YAML files: the shipped ones load, bad ones fail with file, line and field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from closedloop.errors import ConfigError
from closedloop.sim import PopulationSpec, SimulatedV1, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "sim"


def test_shipped_scenarios_load():
    default = load_scenario(SCENARIOS / "default.yaml")
    assert default.n_units == 40 and default.seed == 1
    assert sum(default.unit_counts().values()) == 40 and default.unit_counts()["texture"] == 6
    assert default == PopulationSpec(seed=1)  # the file spells out the defaults
    simple = SimulatedV1.from_scenario(SCENARIOS / "simple_cells.yaml")
    assert set(simple.unit_types) == {"simple"} and simple.seed == 2


def test_a_scenario_rebuilds_the_same_population(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("population:\n  n_units: 6\n  seed: 9\n  calibration_images: 16\n  peak_hz: [30, 40]\n")
    first, second = SimulatedV1.from_scenario(path), SimulatedV1.from_scenario(path)
    assert first.spec.peak_hz == (30.0, 40.0)
    images = np.full((1, 66, 66), 0.6)
    assert np.array_equal(first.drive(images), second.drive(images))


BAD = {
    "unknown_top_key": ("population: {n_units: 4}\nextra: 1\n", 2, "extra"),
    "unknown_field": ("population:\n  n_units: 4\n  n_unit: 5\n", 3, "population.n_unit"),
    "wrong_type": ("population:\n  n_units: forty\n", 2, "population.n_units"),
    "bool_for_int": ("population:\n  size_px: true\n", 2, "population.size_px"),
    "float_for_int": ("population:\n  n_units: 4.5\n", 2, "population.n_units"),
    "bad_range_order": ("population:\n  n_units: 4\n  spontaneous_hz: [10, 1]\n", 3, "population.spontaneous_hz"),
    "range_not_pair": ("population:\n  latency_s: 0.05\n", 2, "population.latency_s"),
    "range_text": ("population:\n  sf_cpd: [1, high]\n", 2, "population.sf_cpd"),
    "fractions_sum": ("population:\n  fractions: {simple: 0.5, complex: 0.2}\n", 2, "population.fractions"),
    "fractions_type": ("population:\n  fractions:\n    simple: 1.0\n    grid: 0.0\n", 4, "population.fractions.grid"),
    "fractions_value": ("population:\n  fractions: {simple: lots}\n", 2, "population.fractions.simple"),
    "negative_seed": ("population:\n  seed: -3\n", 2, "population.seed"),
    "aperture_too_big": ("population:\n  size_px: 40\n", 1, "population.aperture_diameter_px"),
    "duplicate_key": ("population:\n  n_units: 4\n  n_units: 5\n", 3, "population.n_units"),
    "name_not_text": ("name: [a]\npopulation: {}\n", 1, "name"),
    "population_list": ("population:\n  - 1\n", 1, "population"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_scenarios_name_line_and_field(tmp_path, case):
    text, line, field = BAD[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    assert caught.value.path == str(path)
    assert caught.value.field == field
    assert caught.value.line == line
    assert caught.value.message


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("population: [1, 2\n", "not valid YAML"),
        ("- population\n", "mapping"),
        ("", "mapping"),
        ("name: x\n", "missing"),
    ],
)
def test_malformed_files(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_scenario(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        SimulatedV1.from_scenario(tmp_path / "nope.yaml")


def test_every_spec_field_can_be_written_and_read_back(tmp_path):
    import yaml

    spec = PopulationSpec(
        n_units=12,
        seed=4,
        peak_hz=(25.0, 60.0),
        fractions={"simple": 0.5, "texture": 0.5},
        shared_overdispersion=0.0,
        calibration_images=32,
    )
    path = tmp_path / "round_trip.yaml"
    path.write_text(yaml.safe_dump({"name": "round trip", "population": spec.to_dict()}))
    assert load_scenario(path) == spec
