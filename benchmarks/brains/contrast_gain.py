"""A brain written apart from closedloop.sim, as a lab would plug in its own (``family: plugin``).

24 units with Gabor receptive fields at scattered places, orientations and three spatial
frequencies: even units are energy (complex-like) units, odd ones half-squared linear
(simple-like) units, and every unit's drive is divided by a constant plus the whole
image's contrast energy (contrast gain control), so rates saturate near 63 Hz.  It was
written for `benchmarks/generalise.py --scenario` and `benchmarks/loop.py --scenario`
and not tuned against closedloop's models::

    PYTHONPATH=benchmarks/brains python benchmarks/generalise.py --families classic \\
        --scenario contrast-gain=benchmarks/brains/contrast_gain.yaml
"""

from __future__ import annotations

import numpy as np

#: Rate for a grey screen, the most the gain-controlled drive adds, its semi-saturation
#: constant and the weight of the image's contrast energy in the divisor.
SPONTANEOUS_HZ, GAIN_HZ, SEMISATURATION, CONTRAST_WEIGHT = 3.0, 60.0, 40.0, 400.0


class Population:
    """(n, 66, 66) images in [0, 1] → (n, 24) expected rates in Hz."""

    def __init__(self, n_units: int = 24, size_px: int = 66, seed: int = 7):
        rng = np.random.default_rng(seed)
        half = size_px // 2
        y, x = np.mgrid[-half : size_px - half, -half : size_px - half] / 10.0  # 10 px per unit length
        even, odd = [], []
        for _ in range(n_units):
            angle, frequency = rng.uniform(0.0, np.pi), rng.choice([2.0, 3.0, 4.5])
            cx, cy, sigma = rng.normal(0.0, 0.6), rng.normal(0.0, 0.6), rng.uniform(0.6, 1.2)
            envelope = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2.0 * sigma**2))
            phase = frequency * ((x - cx) * np.cos(angle) + (y - cy) * np.sin(angle))
            even.append(envelope * np.cos(phase))
            odd.append(envelope * np.sin(phase))
        self.even, self.odd = np.stack(even), np.stack(odd)
        self.complex_like = np.arange(n_units) % 2 == 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float64) - 0.5
        even = np.einsum("nhw,uhw->nu", images, self.even)
        odd = np.einsum("nhw,uhw->nu", images, self.odd)
        drive = np.where(self.complex_like, even**2 + odd**2, np.maximum(even, 0.0) ** 2)
        contrast_energy = images.std(axis=(1, 2))[:, None] ** 2
        return SPONTANEOUS_HZ + GAIN_HZ * drive / (drive + SEMISATURATION + CONTRAST_WEIGHT * contrast_energy)
