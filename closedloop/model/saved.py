"""Saved model versions: their file names, and predicting display images with one.

The model server saves every version as ``model_vNNN.pt`` (`model_path`); the digital
twin, the monitor and the loop report load such a checkpoint and predict images as
they were shown.  `predict_pixels` is the one path from display pixels to predicted
rates: the checkpoint's own preprocessing (the one it was fitted with), then the
network.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from closedloop.data.dataset import Preprocessing
from closedloop.data.preprocess import preprocess

if TYPE_CHECKING:  # torch is heavy: loaded only when a model is
    from closedloop.model.checkpoint import Checkpoint


def model_file_name(version: int) -> str:
    """``model_vNNN.pt``: the file name of saved model ``version``."""
    return f"model_v{int(version):03d}.pt"


def model_path(folder: str | Path, version: int) -> Path:
    """Where model ``version`` is saved in ``folder`` (the model server's ``out_dir``)."""
    return Path(folder) / model_file_name(version)


def checkpoint_preprocessing(checkpoint: Checkpoint) -> Preprocessing:
    """The preprocessing a checkpoint was fitted with (defaults for keys an old file lacks)."""
    recorded = checkpoint.preprocessing
    default = Preprocessing()
    return Preprocessing(
        downsample=int(recorded.get("downsample", default.downsample)), crop=int(recorded.get("crop", default.crop))
    )


def predict_pixels(checkpoint: Checkpoint, pixels: np.ndarray) -> np.ndarray:
    """Predicted rates (Hz) of a checkpoint's units for display images.

    Parameters
    ----------
    checkpoint
        A loaded `closedloop.model.checkpoint.Checkpoint`.
    pixels
        (n, H, W) display images: ``uint8`` or float on the display's [0, 1] scale (a float
        rounding excursion outside it is clipped).

    Returns
    -------
    numpy.ndarray
        (n, n_units) float64 in ``checkpoint.unit_ids`` order.
    """
    from closedloop.model.predict import predict  # torch: heavy

    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        pixels = np.clip(pixels, 0, 1)
    images = preprocess(pixels, checkpoint_preprocessing(checkpoint))
    return predict(checkpoint, images).astype(np.float64)


def load_saved(folder: str | Path, version: int, device: str = "cpu") -> Checkpoint | None:
    """Saved model ``version`` from ``folder``; ``None`` when it was not saved.

    Raises
    ------
    DataFileError
        The file exists but is not a readable checkpoint.
    """
    path = model_path(folder, version)
    if not path.is_file():
        return None
    from closedloop.model.checkpoint import load_checkpoint  # torch: heavy

    return load_checkpoint(path, device=device)
