"""Predicted rates for images, from a fitted model or a loaded checkpoint."""

from __future__ import annotations

import numpy as np
import torch

from closedloop.errors import ClosedLoopError
from closedloop.model.checkpoint import Checkpoint
from closedloop.model.networks import Network


def predict(model_or_checkpoint: Network | Checkpoint, images: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """Predicted mean rate (Hz) of every model unit for every image.

    Parameters
    ----------
    model_or_checkpoint
        A fitted model (``FitResult.model``) or a `Checkpoint`; ensembles predict the
        mean of their members.
    images
        (n, side, side) preprocessed images in [0, 1], side = the model's input size.
    batch_size
        Images per forward pass.

    Returns
    -------
    numpy.ndarray
        (n, n_units) float32, in the model's unit order (``unit_ids``).

    Raises
    ------
    ClosedLoopError
        Images of the wrong shape or with non-finite pixels.
    """
    return _forward(model_or_checkpoint, images, batch_size, lambda model, batch: model(batch))


def predict_with_spread(
    model_or_checkpoint: Network | Checkpoint, images: np.ndarray, *, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """`predict`'s mean and the ensemble members' standard deviation (population, Hz) around it,
    from one pass of the members.

    Same arguments and errors as `predict`; a single network's spread is 0.
    """

    def moments(model, batch: torch.Tensor) -> torch.Tensor:  # (2, batch, units)
        members = model.forward_members(batch)
        return torch.stack([members.mean(dim=0), members.std(dim=0, unbiased=False)])

    both = _forward(model_or_checkpoint, images, batch_size, moments)
    if both.ndim == 2:  # no images
        return both, both.copy()
    return both[0], both[1]


def _forward(model_or_checkpoint, images: np.ndarray, batch_size: int, compute) -> np.ndarray:
    """``compute(model, batch)`` over checked images in batches, in eval mode, joined along the image
    axis (the second last): (…, n, n_units) float32."""
    model = model_or_checkpoint.model if isinstance(model_or_checkpoint, Checkpoint) else model_or_checkpoint
    images = np.asarray(images)
    side = model.build_spec["input_size"] if hasattr(model, "build_spec") else None
    if images.ndim != 3 or (side is not None and images.shape[1:] != (side, side)):
        expected = f"(n, {side}, {side})" if side is not None else "(n, side, side)"
        raise ClosedLoopError(f"images must be {expected}, got {images.shape}")
    if not np.all(np.isfinite(images)):
        raise ClosedLoopError("images contain NaN or infinite pixels")
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = torch.as_tensor(images[start : start + batch_size], dtype=torch.float32)
                outputs.append(compute(model, batch.to(parameter.device)).float().cpu().numpy())
    finally:
        model.train(was_training)
    if not outputs:
        return np.zeros((0, model.n_units), dtype=np.float32)
    return np.concatenate(outputs, axis=-2).astype(np.float32, copy=False)
