"""Stimulus sets with other statistics than photographs: 1/f noise and dead leaves.

Both are seeded, shown in the circular aperture at mean grey, and drawn with the
photographs' RMS-contrast distribution, so only their structure differs:

- ``pink_noise``: Gaussian noise with a 1/f amplitude spectrum (the photographs'
  average spectrum, but random phases: no edges, no objects).
- ``dead_leaves``: occluding discs of uniform random grey, radii drawn from a
  ``r⁻³`` law (Lee, Mumford & Huang 2001): sharp edges and flat regions,
  scale-invariant like natural images.
- ``mixed``: a third of each set (photographs, pink noise, dead leaves), interleaved.
"""

from __future__ import annotations

import numpy as np

from closedloop.sim.aperture import aperture_mask
from closedloop.sim.photographs import RMS_CONTRAST_LOG_SD, RMS_CONTRAST_MEDIAN, in_aperture, natural_images
from closedloop.sim.spec import IMAGE_SETS

#: Dead-leaves disc radii, as fractions of the image side.
LEAF_RADIUS_RANGE = (0.02, 0.5)
#: Discs painted per image (enough to cover the image many times over at the small radii).
LEAVES_PER_IMAGE = 600


def pink_noise(n: int, *, size_px: int = 66, aperture_diameter_px: float = 60.0, seed: int = 0) -> np.ndarray:
    """(n, size_px, size_px) float32 1/f noise images in the aperture (see module notes)."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(size_px)[:, None]
    fx = np.fft.rfftfreq(size_px)[None, :]
    radius = np.hypot(fx, fy)
    amplitude = np.where(radius > 0, 1.0 / np.maximum(radius, 1e-12), 0.0)
    mask = aperture_mask(size_px, aperture_diameter_px).astype(np.float64)
    weights = mask / mask.sum()
    out = np.empty((n, size_px, size_px), dtype=np.float32)
    for i in range(n):
        spectrum = amplitude * (rng.standard_normal(amplitude.shape) + 1j * rng.standard_normal(amplitude.shape))
        picture = np.fft.irfft2(spectrum, s=(size_px, size_px))
        out[i] = in_aperture(picture, mask, weights, _rms(rng))
    return out


def dead_leaves(n: int, *, size_px: int = 66, aperture_diameter_px: float = 60.0, seed: int = 0) -> np.ndarray:
    """(n, size_px, size_px) float32 dead-leaves images in the aperture (see module notes)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size_px, 0:size_px] + 0.5
    mask = aperture_mask(size_px, aperture_diameter_px).astype(np.float64)
    weights = mask / mask.sum()
    low, high = (r * size_px for r in LEAF_RADIUS_RANGE)
    out = np.empty((n, size_px, size_px), dtype=np.float32)
    for i in range(n):
        # Inverse-CDF draw from p(r) ∝ r^-3 on [low, high].
        u = rng.random(LEAVES_PER_IMAGE)
        radii = 1.0 / np.sqrt(low**-2 - u * (low**-2 - high**-2))
        centres = rng.uniform(-high, size_px + high, (LEAVES_PER_IMAGE, 2))
        greys = rng.random(LEAVES_PER_IMAGE)
        picture = np.full((size_px, size_px), rng.random())
        covered = np.zeros((size_px, size_px), dtype=bool)
        for radius, (cy, cx), grey in zip(radii, centres, greys):  # front to back: the first leaf is on top
            top, bottom = max(int(cy - radius), 0), min(int(cy + radius) + 1, size_px)
            left, right = max(int(cx - radius), 0), min(int(cx + radius) + 1, size_px)
            if top >= bottom or left >= right:
                continue
            box = (slice(top, bottom), slice(left, right))
            inside = ((rows[box] - cy) ** 2 + (cols[box] - cx) ** 2 <= radius**2) & ~covered[box]
            picture[box][inside] = grey
            covered[box] |= inside
        out[i] = in_aperture(picture, mask, weights, _rms(rng))
    return out


def stimulus_set(
    kind: str, n: int, *, size_px: int = 66, aperture_diameter_px: float = 60.0, seed: int = 0
) -> np.ndarray:
    """``n`` seeded images of one of `closedloop.sim.spec.IMAGE_SETS`, (n, size_px, size_px) float32."""
    if kind not in IMAGE_SETS:
        raise ValueError(f"unknown image set {kind!r}; allowed: {', '.join(IMAGE_SETS)}")
    makers = {"photographs": natural_images, "pink_noise": pink_noise, "dead_leaves": dead_leaves}
    if kind != "mixed":
        return makers[kind](n, size_px=size_px, aperture_diameter_px=aperture_diameter_px, seed=seed)
    out = np.empty((n, size_px, size_px), dtype=np.float32)
    for offset, name in enumerate(("photographs", "pink_noise", "dead_leaves")):
        count = len(range(offset, n, 3))
        out[offset::3] = makers[name](
            count, size_px=size_px, aperture_diameter_px=aperture_diameter_px, seed=seed + offset
        )
    return out


def _rms(rng: np.random.Generator) -> float:
    return float(RMS_CONTRAST_MEDIAN * np.exp(RMS_CONTRAST_LOG_SD * rng.standard_normal()))
