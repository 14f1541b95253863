"""Model families of simulated V1: which stimulus-to-drive stage the units have.

- ``classic``: LN and energy units (`closedloop.sim.units`).
- ``normalisation``: divisive normalisation with tuned surround suppression and
  contrast saturation (`closedloop.sim.normalisation`).
- ``deep``: a seeded random multi-layer CNN read out at several depths
  (`closedloop.sim.deepnet`).
- ``pyramid``: filters and a fitted front end from another lab's code, plenoptic
  (`closedloop.sim.pyramid`).

Each stage turns images into a non-negative raw drive per unit; the population's
calibrated output nonlinearity, time course and spiking are shared by all families.
A stage has ``raw(images)``, ``receptive_fields()`` and ``localised``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from closedloop.sim.deepnet import DeepStage, draw_deep_parameters
from closedloop.sim.plugin import PluginStage
from closedloop.sim.normalisation import NormalisationStage, draw_normalisation_parameters
from closedloop.sim.pyramid import PyramidStage, draw_pyramid_parameters
from closedloop.sim.spec import PopulationSpec
from closedloop.sim.units import ClassicStage, draw_unit_parameters


class DriveStage(Protocol):
    """Images to non-negative raw drive; see the module notes."""

    localised: np.ndarray

    def raw(self, images: np.ndarray) -> np.ndarray: ...

    def receptive_fields(self) -> np.ndarray: ...


def offset_centres(n: int, eccentricity_deg: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """(n, 2) RF centres at uniformly drawn distances from the centre, at random angles."""
    radius = rng.uniform(*eccentricity_deg, n)
    angle = rng.uniform(0.0, 2.0 * np.pi, n)
    return np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])


def build_stage(
    spec: PopulationSpec, types: np.ndarray, centres_deg: np.ndarray, seed: int, rng: np.random.Generator
) -> tuple[DriveStage, dict[str, np.ndarray]]:
    """Draw the family's unit parameters and build its drive stage.

    Returns
    -------
    The stage and the per-unit parameters (``x_deg``/``y_deg`` always; NaN where a
    parameter does not apply).
    """
    size, ppd = spec.size_px, float(spec.pixels_per_degree)
    if spec.family == "deep":
        params = {
            "x_deg": centres_deg[:, 0].copy(),
            "y_deg": centres_deg[:, 1].copy(),
            **draw_deep_parameters(types, rng),
        }
        network_seed = seed if spec.network_seed is None else spec.network_seed
        weights_rng = np.random.default_rng(np.random.SeedSequence([network_seed, 2]))
        return DeepStage(types, params, size, ppd, weights_rng), params
    if spec.family == "plugin":
        assert spec.brain is not None  # the spec's checks require it
        params = {"x_deg": np.full(len(types), np.nan), "y_deg": np.full(len(types), np.nan)}
        return PluginStage(spec.brain, len(types), size), params
    if spec.family == "pyramid":
        params = {
            "x_deg": centres_deg[:, 0].copy(),
            "y_deg": centres_deg[:, 1].copy(),
            **draw_pyramid_parameters(types, rng),
        }
        return PyramidStage(types, params, size, ppd), params
    params = draw_unit_parameters(types, centres_deg, spec.sf_cpd, rng)
    if spec.family == "normalisation":
        params.update(
            draw_normalisation_parameters(len(types), spec.semisaturation_contrast, spec.surround_suppression, rng)
        )
        return NormalisationStage(types, params, size, ppd), params
    return ClassicStage(types, params, size, ppd), params
