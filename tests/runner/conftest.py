"""Fixtures of the runner tests: a tiny simulated rig, protocol and population."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from closedloop.acquisition import BrainSpec
from closedloop.config import load_rig

from .helpers import N_UNITS, RIG, SCENARIO, write_protocol


@pytest.fixture
def rig(tmp_path: Path):
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO.format(n_units=N_UNITS))
    path = tmp_path / "rig.yaml"
    path.write_text(RIG.format(scenario=scenario))
    return load_rig(path)


@pytest.fixture
def protocol(tmp_path: Path):
    return write_protocol(tmp_path)


@pytest.fixture(scope="session")
def brain_and_units(tmp_path_factory):
    """One brain spec and its units for the whole session (building a population takes a moment)."""
    folder = tmp_path_factory.mktemp("scenario")
    scenario = folder / "scenario.yaml"
    scenario.write_text(SCENARIO.format(n_units=N_UNITS))
    brain = BrainSpec(scenario=str(scenario), seed=1, size_px=66)
    source = brain.build()
    return brain, np.asarray(source.unit_ids, np.int64), np.asarray(source.channels, np.int64)
