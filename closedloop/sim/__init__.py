"""Simulated V1 populations with ground truth, natural images and gratings (docs/methods.md, Simulation)."""

from __future__ import annotations

from closedloop.sim.aperture import aperture_mask, fit_to_grid
from closedloop.sim.brain import Brain, check_brain, load_brain
from closedloop.sim.gratings import (
    GRATING_PARAMS_DTYPE,
    grating,
    orientation_grating_set,
    pvc8_grating_sets,
    sf_grating_set,
    size_grating_set,
)
from closedloop.sim.photographs import natural_images
from closedloop.sim.population import SimulatedV1
from closedloop.sim.scenario import load_scenario
from closedloop.sim.spec import UNIT_TYPES, PopulationSpec
from closedloop.sim.utah import channel_positions_um

__all__ = [
    "GRATING_PARAMS_DTYPE",
    "UNIT_TYPES",
    "Brain",
    "PopulationSpec",
    "SimulatedV1",
    "aperture_mask",
    "channel_positions_um",
    "check_brain",
    "fit_to_grid",
    "grating",
    "load_brain",
    "load_scenario",
    "natural_images",
    "orientation_grating_set",
    "pvc8_grating_sets",
    "sf_grating_set",
    "size_grating_set",
]
