"""Checks on what requests carry; a failed check becomes an `Error` reply, never a crash."""

from __future__ import annotations

import numpy as np

from closedloop.data.dataset import Preprocessing
from closedloop.data.preprocess import preprocess

# Display images are in [0, 1]; float rounding on the way may leave a hair outside.
_RANGE_TOLERANCE = 1e-4


class RequestError(Exception):
    """A request the server refuses: ``code`` for programs, ``message`` for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def listing(values, limit: int = 8) -> str:
    """A short comma-separated list of ids for messages."""
    values = [int(v) for v in values]
    return ", ".join(map(str, values[:limit])) + (f" … ({len(values)} in all)" if len(values) > limit else "")


def network_input(images: np.ndarray, size_px: int, preprocessing: Preprocessing, what: str) -> np.ndarray:
    """Display images (n, size_px, size_px) in [0, 1] (or uint8) → the network's input.

    Raises
    ------
    RequestError
        ``bad_image_size`` or ``bad_images`` (non-finite or outside [0, 1]).
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (size_px, size_px):
        raise RequestError(
            "bad_image_size",
            f"{what} must be (n, {size_px}, {size_px}) at the rig's stimulus size, got {tuple(images.shape)}",
        )
    if images.dtype != np.uint8 and images.size:
        if not np.all(np.isfinite(images)):
            raise RequestError("bad_images", f"{what} contain NaN or infinite pixels")
        low, high = float(images.min()), float(images.max())
        if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
            raise RequestError(
                "bad_images", f"{what} must be in the display's [0, 1] range, got [{low:.3g}, {high:.3g}]"
            )
    return preprocess(np.clip(images, 0, 1) if images.dtype != np.uint8 else images, preprocessing)


def unique_ids(ids: np.ndarray, what: str) -> np.ndarray:
    """``ids`` as int64, refusing repeats (``bad_request``)."""
    ids = np.asarray(ids, dtype=np.int64)
    values, counts = np.unique(ids, return_counts=True)
    if np.any(counts > 1):
        raise RequestError("bad_request", f"{what} repeat: {listing(values[counts > 1])}")
    return ids


def checked_rates(rates: np.ndarray) -> np.ndarray:
    """Trial rates must be finite and not negative (``bad_rates``)."""
    rates = np.asarray(rates, dtype=np.float64)
    if not np.all(np.isfinite(rates)):
        rows = np.unique(np.nonzero(~np.isfinite(rates))[0])
        raise RequestError("bad_rates", f"rates are NaN or infinite on {len(rows)} trial(s) (rows {listing(rows)})")
    if np.any(rates < 0):
        raise RequestError("bad_rates", f"rates must be >= 0 Hz, got {rates.min():g}")
    return rates
