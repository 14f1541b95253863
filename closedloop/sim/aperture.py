"""Grid geometry shared by images, gratings and the population.

All images are at one pixel scale.  An image larger than the population's grid
is centre-cropped, a smaller one is padded with mean grey, so a pvc-8 320 × 320
canvas with the picture in its centre evokes the same response as the 66 × 66
centre on its own.  The centre of an ``H × W`` image is at ``((H-1)/2, (W-1)/2)``;
when ``H - size`` is odd the crop drops the extra row at the bottom.
"""

from __future__ import annotations

import numpy as np

#: Mean grey, as a fraction of the display range.
GREY = 0.5
#: Width of the raised-cosine edge of apertures, in pixels.
DEFAULT_EDGE_PX = 2.0


def centred_coordinates(size_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(x, y)`` relative to the grid centre, y pointing up.

    Row 0 is the top of the image, so ``y = centre - row``.

    Returns
    -------
    x, y
        (size_px, size_px) float64 arrays.
    """
    centre = (size_px - 1) / 2.0
    rows, cols = np.mgrid[0:size_px, 0:size_px].astype(np.float64)
    return cols - centre, centre - rows


def soft_disc(radius_px: np.ndarray | float, distance_px: np.ndarray, edge_px: float = DEFAULT_EDGE_PX) -> np.ndarray:
    """1 inside ``radius_px``, 0 outside, with a raised-cosine edge ``edge_px`` wide."""
    if edge_px <= 0:
        return (distance_px <= radius_px).astype(np.float64)
    ramp = np.clip((distance_px - (radius_px - edge_px / 2.0)) / edge_px, 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * ramp))


def aperture_mask(size_px: int = 66, diameter_px: float = 60.0, edge_px: float = DEFAULT_EDGE_PX) -> np.ndarray:
    """The circular aperture stimuli are shown in.

    Parameters
    ----------
    size_px
        Side of the square grid.
    diameter_px
        Aperture diameter (the 50 % point of the soft edge).
    edge_px
        Width of the raised-cosine edge.

    Returns
    -------
    (size_px, size_px) float32 array in [0, 1]: 1 inside, 0 outside.
    """
    x, y = centred_coordinates(size_px)
    return soft_disc(diameter_px / 2.0, np.hypot(x, y), edge_px).astype(np.float32)


def as_image_batch(images: np.ndarray) -> np.ndarray:
    """Check the shape and dtype of an image or batch and return it as (n, H, W).

    The dtype is kept (no copy), so a large pvc-8 canvas batch is cropped before
    it is converted to float.

    Raises
    ------
    ValueError
        If the array is not 2-D or 3-D, is empty, or does not hold real numbers.
    """
    array = np.asarray(images)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError(f"images must be (H, W) or (n, H, W), got shape {np.shape(images)}")
    real = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    if array.dtype == np.bool_ or not real:
        raise ValueError(f"images must hold real numbers in [0, 1], got dtype {array.dtype}")
    return array


def fit_to_grid(images: np.ndarray, size_px: int) -> np.ndarray:
    """Centre-crop or grey-pad images to ``size_px × size_px`` at the same pixel scale.

    Parameters
    ----------
    images
        (H, W) or (n, H, W), values in [0, 1].
    size_px
        Side of the output grid.

    Returns
    -------
    (n, size_px, size_px) float64 array.

    Raises
    ------
    ValueError
        If the images have the wrong shape or dtype, or NaN/infinite pixels in the grid.
    """
    batch = as_image_batch(images)
    rows, cols = batch.shape[1:]
    top, left = max(rows - size_px, 0) // 2, max(cols - size_px, 0) // 2
    batch = batch[:, top : top + size_px, left : left + size_px].astype(np.float64)
    rows, cols = batch.shape[1:]
    if rows < size_px or cols < size_px:
        above, before = (size_px - rows) // 2, (size_px - cols) // 2
        batch = np.pad(
            batch, [(0, 0), (above, size_px - rows - above), (before, size_px - cols - before)], constant_values=GREY
        )
    if not np.all(np.isfinite(batch)):
        raise ValueError("images hold NaN or infinite values")
    return batch
