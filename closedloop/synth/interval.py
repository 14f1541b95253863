"""What a synthesized image is promised before it is shown: its rate and the 95 % interval for its mean."""

from __future__ import annotations

import numpy as np

from closedloop.model.metrics import interval_halfwidths, planned_standard_errors, promise_ratio


def planned_interval_hz(
    checkpoint, unit_ids: np.ndarray, promised: np.ndarray, spread: np.ndarray | None, presentations: int
) -> np.ndarray:
    """Each image's 95 % interval for its mean rate over ``presentations``: promise ± k·√(sd² + se²).

    k is the factor the model recorded on its held-out photographs (``heldout_interval_sds``), sd
    the ensemble's spread, se the standard error planned from the unit's trial noise at the promised
    rate (`closedloop.model.metrics.planned_standard_errors`).

    Parameters
    ----------
    checkpoint
        The model that made the images (`closedloop.model.checkpoint.Checkpoint`).
    unit_ids, promised, spread
        Per image: the unit it drives, the promised rate and the spread (Hz; ``None``: none sent).
    presentations
        How many times each image is to be shown.

    Returns
    -------
    numpy.ndarray
        The half-widths (Hz); NaN where unknown: no spread, or a model that records no factor or no noise.
    """
    k, noise = checkpoint.recorded("heldout_interval_sds"), checkpoint.rate_statistics.noise_per_hz
    if k is None or noise is None or spread is None:
        return np.full(len(promised), np.nan)
    column = {int(u): i for i, u in enumerate(checkpoint.unit_ids)}
    unit_noise = np.asarray([noise[column[int(u)]] for u in unit_ids], dtype=np.float64)
    se = planned_standard_errors(promised, unit_noise, presentations)
    return interval_halfwidths(k, spread, se)


def lower_end_hz(promised: np.ndarray, half_width: np.ndarray) -> np.ndarray:
    """The interval's lower end, promise − half-width, at least 0 Hz: all `closedloop synth` gives a
    "max" image, whose measured mean misses its promise by more than the photographs' do."""
    return np.maximum(np.asarray(promised, dtype=np.float64) - half_width, 0.0)


def top_ratio(checkpoint) -> float | None:
    """The model's recorded `closedloop.model.metrics.heldout_top_ratio` (``None``: a model fitted
    before it was recorded, or no finite value)."""
    return checkpoint.recorded("heldout_top_ratio")


def max_promise_hz(checkpoint, predicted: np.ndarray) -> np.ndarray:
    """The rates "max" images are promised: their predictions times the model's `top_ratio`.

    A "max" image is chosen for its high prediction, as a unit's top held-out photograph is ranked
    top by it; the measured rate there, over the prediction, says how far such a prediction holds
    (below 1: the model's errors at the top over-promise; above 1: its fit shrinks the extremes).
    Without a recorded positive ratio the promise is the prediction
    (`closedloop.model.metrics.promise_ratio`).
    """
    return np.asarray(predicted, dtype=np.float64) * promise_ratio(top_ratio(checkpoint))
