"""Linear units with known filters, their exact optimum under the canvas constraints, and a tiny CNN config."""

from __future__ import annotations

import numpy as np

from closedloop.synth.canvas import Canvas

#: A 2-member tiny CNN: fits a 40-image session in seconds (the fixtures' and the start tests' model).
TINY_CONFIG = dict(
    core_filters=[4], core_kernels=[5], dense_units=16, max_epochs=10, patience=5, stop_check_every=5, ensemble_size=2
)


def linear_filters(size: int = 33) -> np.ndarray:
    """(2, size, size): an odd Gabor-like filter and an ON centre with a strong surround."""
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2
    gabor = np.sin(2 * np.pi * x / 9) * np.exp(-(x**2 + y**2) / (2 * 5.0**2))
    dog = np.exp(-(x**2 + y**2) / (2 * 3.0**2)) - 0.15 * np.exp(-(x**2 + y**2) / (2 * 7.0**2))
    return np.stack([gabor, dog])


def lp_optimum(weights: np.ndarray, bias: float, canvas: Canvas) -> tuple[float, np.ndarray]:
    """Highest rate of a linear unit with pixels in [0, 1], grey outside the aperture and the
    aperture's mean at grey: the brightest pixels where the filter is largest (greedy LP)."""
    inside = canvas.aperture_mask()
    w = weights[inside]
    order = np.argsort(-w)
    budget = canvas.mean_luminance * w.size
    x = np.zeros(w.size)
    full = int(np.floor(budget))
    x[order[:full]] = 1.0
    if full < w.size:
        x[order[full]] = budget - full
    image = np.full(weights.shape, canvas.mean_luminance)
    image[inside] = x
    return float(bias + (weights * image).sum()), image
