"""Reading a unit off a feature map: a small Gaussian window at its RF centre."""

from __future__ import annotations

import numpy as np


def gaussian_windows(
    x_deg: np.ndarray, y_deg: np.ndarray, side: int, size_px: int, ppd: float, sigma_px: float
) -> np.ndarray:
    """Gaussian readout windows on a ``side × side`` map of a ``size_px`` image, each summing to 1.

    Parameters
    ----------
    x_deg, y_deg
        (n_units,) RF centres, degrees from the image centre, y up.
    side
        The map's side, in its own pixels.
    size_px, ppd
        The image's side and pixel scale.
    sigma_px
        Window sigma, in pixels of the map.

    Returns
    -------
    (n_units, side²) float64.
    """
    scale = size_px / side  # image pixels per map pixel
    coords = (np.arange(side) + 0.5) * scale - size_px / 2.0
    gx, gy = np.meshgrid(coords, -coords)  # y up, as RF centres are
    cx = np.asarray(x_deg)[:, None, None] * ppd
    cy = np.asarray(y_deg)[:, None, None] * ppd
    window = np.exp(-0.5 * ((gx - cx) ** 2 + (gy - cy) ** 2) / (sigma_px * scale) ** 2)
    window = window.reshape(len(cx), -1)
    return window / window.sum(axis=1, keepdims=True)
