"""Small seeded synthetic recordings for the model tests (not a test module).

Images are smoothed noise in [0, 1]; units are rectified-linear ("simple") or
quadratic-energy ("complex") functions of random Gabor filters, with Poisson spike
counts in a 50 ms window turned into Hz.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from closedloop.data.dataset import ResponseDataset

WINDOW_S = 0.05


def natural_ish_images(n_images: int, size: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal((n_images, size, size))
    smooth = np.stack([gaussian_filter(image, sigma=1.5) for image in noise])
    smooth -= smooth.min(axis=(1, 2), keepdims=True)
    smooth /= smooth.max(axis=(1, 2), keepdims=True)
    return smooth.astype(np.float32)


def gabor(size: int, rng: np.random.Generator, phase: float) -> np.ndarray:
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    cx, cy = rng.uniform(-size / 6, size / 6, 2)
    theta = rng.uniform(0, np.pi)
    sigma, wavelength = rng.uniform(2.5, 4.0), rng.uniform(6.0, 10.0)
    xr = (x - cx) * np.cos(theta) + (y - cy) * np.sin(theta)
    envelope = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
    filt = envelope * np.cos(2 * np.pi * xr / wavelength + phase)
    return filt / np.linalg.norm(filt)


def expected_rates(images: np.ndarray, n_units: int, seed: int) -> np.ndarray:
    """(n_images, n_units) noise-free rates in Hz: half simple, half complex cells."""
    rng = np.random.default_rng(seed)
    size = images.shape[1]
    flat = images.reshape(len(images), -1) - 0.5
    rates = np.empty((len(images), n_units))
    for unit in range(n_units):
        state = rng.bit_generator.state
        even = gabor(size, rng, 0.0).ravel()
        rng.bit_generator.state = state  # same position and orientation, quadrature phase
        odd = gabor(size, rng, np.pi / 2).ravel()
        drive = flat @ even
        if unit % 2 == 0:
            response = np.maximum(drive, 0.0)
        else:
            response = drive**2 + (flat @ odd) ** 2
        response = response / (response.std() + 1e-12)
        rates[:, unit] = 5.0 + 20.0 * response * rng.uniform(0.5, 1.5)
    return rates


def make_dataset(
    n_images: int = 120, n_units: int = 6, n_repeats: int = 10, size: int = 33, seed: int = 0
) -> ResponseDataset:
    rng = np.random.default_rng(seed)
    images = natural_ish_images(n_images, size, rng)
    rates = expected_rates(images, n_units, seed + 1)
    counts = rng.poisson(rates[:, None, :] * WINDOW_S, size=(n_images, n_repeats, n_units))
    return ResponseDataset(
        images=images,
        trial_rates=(counts / WINDOW_S).astype(np.float32),
        unit_ids=np.arange(100, 100 + n_units, dtype=np.int64),
        image_ids=np.arange(n_images, dtype=np.int64),
        source=f"synthetic(seed={seed})",
    )
