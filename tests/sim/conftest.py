"""Shared, seeded populations for the simulated-V1 tests (built once per session)."""

from __future__ import annotations

import pytest

from closedloop.sim import PopulationSpec, SimulatedV1, natural_images


@pytest.fixture(scope="session")
def population() -> SimulatedV1:
    """The default 40-unit mixed population."""
    return SimulatedV1(seed=1)


@pytest.fixture(scope="session")
def simple_population() -> SimulatedV1:
    """Twenty simple cells."""
    return SimulatedV1(PopulationSpec(n_units=20, fractions={"simple": 1.0}), seed=2)


@pytest.fixture(scope="session")
def natural():
    """Natural images, not the calibration set."""
    return natural_images(200, seed=123)
