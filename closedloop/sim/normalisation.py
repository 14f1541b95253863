"""Divisive normalisation with tuned surround suppression and contrast saturation.

The normalisation model of V1 (Heeger 1992; Carandini & Heeger 2012) with the
tuned, spatially extended surround of Cavanaugh, Bair & Movshon (2002).  Each unit
has a Gabor centre (rectified for simple cells, quadrature energy for complex
cells).  Its energy ``E`` is divided by the semi-saturation constant plus an
untuned local contrast-energy pool ``P`` and the same-orientation energy ``S`` of a
ring of eight copies of the centre filter around it::

    d = E / (c50² + P + w_s · S)

``E``, ``P`` and ``S`` are in units of squared grating amplitude: the unit's
optimal grating of amplitude ``A`` gives ``E ≈ A²`` and ``P ≈ A²``, so responses
saturate with contrast (``d → 1 / (1 + w_s · overlap)``) with semi-saturation near
``c50`` (RMS contrast, ``A = √2 · RMS``), and a grating that also fills the
surround is suppressed.
"""

from __future__ import annotations

import numpy as np

from closedloop.sim.aperture import GREY, centred_coordinates, fit_to_grid
from closedloop.sim.units import gabor

#: Copies of the centre filter on the surround ring, and the ring radius in envelope sigmas.
RING_POSITIONS = 8
RING_RADIUS_SIGMAS = 2.5
#: The untuned pool is a Gaussian this many times wider than the centre envelope.
POOL_WIDTH_RATIO = 1.5


def draw_normalisation_parameters(
    n: int, semisaturation: tuple[float, float], surround: tuple[float, float], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Per-unit semi-saturation RMS contrast and surround weight."""
    return {
        "semisaturation_contrast": rng.uniform(*semisaturation, n),
        "surround_suppression": rng.uniform(*surround, n),
    }


class NormalisationStage:
    """Drive stage of the normalisation family (see module notes).

    Parameters
    ----------
    types
        (n_units,) ``"simple"`` or ``"complex"``.
    params
        Gabor parameters (`closedloop.sim.units.draw_unit_parameters`) plus
        ``semisaturation_contrast`` and ``surround_suppression``.
    size_px, ppd
        The population's grid and pixel scale.
    """

    def __init__(self, types: np.ndarray, params: dict[str, np.ndarray], size_px: int, ppd: float):
        n = len(types)
        self.size_px = size_px
        self.simple = types == "simple"
        self.localised = np.ones(n, dtype=bool)
        self.c50_sq = 2.0 * params["semisaturation_contrast"] ** 2
        self.surround_weight = params["surround_suppression"]
        x, y = centred_coordinates(size_px)
        pixels = size_px * size_px
        self.centre = np.zeros((2 * n, pixels))  # even and odd of every unit
        self.ring = np.zeros((2 * RING_POSITIONS * n, pixels))
        self.pool = np.zeros((n, pixels))
        self.reference = np.zeros(n)
        for u in range(n):
            cx, cy = params["x_deg"][u] * ppd, params["y_deg"][u] * ppd
            args = (ppd, params["orientation_deg"][u], params["sf_cpd"][u])
            sigmas = (params["sigma_across_deg"][u], params["sigma_along_deg"][u])
            phase = params["phase_deg"][u] if self.simple[u] else 0.0
            even = gabor(x - cx, y - cy, *args, phase, *sigmas)
            odd = gabor(x - cx, y - cy, *args, phase + 90.0, *sigmas)
            self.centre[2 * u], self.centre[2 * u + 1] = even.ravel(), odd.ravel()
            self.reference[u] = _grating_energy(even, x, y, params["orientation_deg"][u], params["sf_cpd"][u], ppd)
            radius = RING_RADIUS_SIGMAS * max(sigmas) * ppd
            for k in range(RING_POSITIONS):
                angle = 2.0 * np.pi * k / RING_POSITIONS
                rx, ry = cx + radius * np.cos(angle), cy + radius * np.sin(angle)
                row = 2 * (u * RING_POSITIONS + k)
                # Not renormalised after the grid cuts it: a ring copy off the grid sees less.
                self.ring[row] = _gabor_raw(x - rx, y - ry, *args, phase, *sigmas).ravel()
                self.ring[row + 1] = _gabor_raw(x - rx, y - ry, *args, phase + 90.0, *sigmas).ravel()
            r2 = (x - cx) ** 2 + (y - cy) ** 2
            window = np.exp(-0.5 * r2 / (POOL_WIDTH_RATIO * max(sigmas) * ppd) ** 2)
            self.pool[u] = (window / window.sum()).ravel()

    def raw(self, images: np.ndarray) -> np.ndarray:
        """Non-negative normalised drive, (n, n_units)."""
        contrast = fit_to_grid(images, self.size_px).reshape(-1, self.size_px * self.size_px) - GREY
        centre = contrast @ self.centre.T
        even, odd = centre[:, 0::2], centre[:, 1::2]
        energy = np.where(self.simple, np.maximum(even, 0.0) ** 2, even**2 + odd**2) / self.reference
        ring = (contrast @ self.ring.T) ** 2
        n_units = len(self.reference)
        ring_energy = (ring[:, 0::2] + ring[:, 1::2]).reshape(len(contrast), n_units, RING_POSITIONS).mean(axis=2)
        surround = ring_energy / self.reference
        pool = 2.0 * (contrast**2) @ self.pool.T  # local contrast energy, in squared amplitude
        return energy / (self.c50_sq + pool + self.surround_weight * surround)

    def receptive_fields(self) -> np.ndarray:
        """Centre filters (the even one), (n_units, size_px²)."""
        return self.centre[0::2]


def _gabor_raw(
    x: np.ndarray,
    y: np.ndarray,
    ppd: float,
    orientation: float,
    sf: float,
    phase: float,
    sigma_across: float,
    sigma_along: float,
) -> np.ndarray:
    """The Gabor centred at (x, y) = 0, scaled by the fraction of its envelope the grid keeps."""
    moved = gabor(x, y, ppd, orientation, sf, phase, sigma_across, sigma_along)
    # gabor() renormalises what is left on the grid; a copy the grid cuts must see less.
    kept = np.sum(_envelope(x, y, ppd, orientation, sigma_across, sigma_along) ** 2)
    whole = np.pi * sigma_across * sigma_along * ppd**2  # the squared envelope's integral over the plane
    return moved * np.sqrt(kept / whole)


def _envelope(
    x: np.ndarray, y: np.ndarray, ppd: float, orientation: float, sigma_across: float, sigma_along: float
) -> np.ndarray:
    theta = np.deg2rad(orientation)
    across = -np.sin(theta) * x + np.cos(theta) * y
    along = np.cos(theta) * x + np.sin(theta) * y
    return np.exp(-0.5 * (across / (sigma_across * ppd)) ** 2 - 0.5 * (along / (sigma_along * ppd)) ** 2)


def _grating_energy(filt: np.ndarray, x: np.ndarray, y: np.ndarray, orientation: float, sf: float, ppd: float) -> float:
    """Energy of a filter's response to its own amplitude-1 grating, maximised over phase."""
    theta = np.deg2rad(orientation)
    across = -np.sin(theta) * x + np.cos(theta) * y
    phase = 2.0 * np.pi * sf * across / ppd
    return float(np.sum(filt * np.cos(phase)) ** 2 + np.sum(filt * np.sin(phase)) ** 2)
