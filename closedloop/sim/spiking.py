"""Spike sampling: doubly stochastic Poisson counts with gamma trial gains.

On each trial a unit's whole rate course is multiplied by a gain ``g = g_unit ·
g_shared``, both gamma-distributed with mean 1 (variances ``φ_unit`` and
``φ_shared``; a variance of 0 means a gain of exactly 1).  Given the gain, spikes
are Poisson.  A window count with mean ``μ`` then has

    Var = μ + μ² · ((1 + φ_unit)(1 + φ_shared) - 1),

so its Fano factor is above 1 and grows with the mean, as in V1.
"""

from __future__ import annotations

import numpy as np

from closedloop.sim.timecourse import STEP_S, TimeCourse

#: Sample the evoked course for this many off-time constants after offset; after
#: that the rate is spontaneous (the evoked remainder is below e^-12 of its size).
OFFSET_TAILS = 12.0


def gamma_gains(variance: np.ndarray | float, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Gamma gains with mean 1 and the given variance (broadcast over ``shape``)."""
    variance = np.broadcast_to(np.asarray(variance, dtype=np.float64), shape)
    gains = np.ones(shape)
    positive = variance > 0
    if np.any(positive):
        v = variance[positive]
        gains[positive] = rng.gamma(1.0 / v, v)
    return gains


def fano_factor(mean_count: np.ndarray, unit_variance: np.ndarray | float, shared_variance: float) -> np.ndarray:
    """Analytic Fano factor of a window count with the given mean."""
    extra = (1.0 + np.asarray(unit_variance)) * (1.0 + shared_variance) - 1.0
    return 1.0 + np.asarray(mean_count) * extra


def poisson_rows(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts for a (rows, bins) array of small expected counts.

    Draws each row's total, then spreads the spikes over the bins in proportion
    to their expected counts: exact, and several times faster than one draw per
    bin when most bins are empty.
    """
    rows, bins = expected.shape
    cumulative = np.cumsum(expected.ravel())
    row_end = cumulative[bins - 1 :: bins]
    row_start = np.concatenate([[0.0], row_end[:-1]])
    totals = np.maximum(row_end - row_start, 0.0)
    n_spikes = rng.poisson(totals)
    row = np.repeat(np.arange(rows), n_spikes)
    target = row_start[row] + rng.random(len(row)) * totals[row]
    flat = np.searchsorted(cumulative, target, side="right")
    flat = np.clip(flat, row * bins, row * bins + bins - 1)
    return np.bincount(flat, minlength=rows * bins).reshape(rows, bins)


def sample_binned_counts(
    spontaneous_hz: np.ndarray,
    drive_hz: np.ndarray,
    bin_course: np.ndarray,
    bin_s: float,
    n_repeats: int,
    unit_variance: np.ndarray,
    shared_variance: float,
    rng: np.random.Generator,
    max_elements: int = 2_000_000,
) -> np.ndarray:
    """Binned counts for every unit, image and repeat.

    Parameters
    ----------
    spontaneous_hz
        (n_units,) spontaneous rates.
    drive_hz
        (n_images, n_units) sustained rates the images evoke.
    bin_course
        (n_units, n_bins) mean time course ``k`` in each bin.
    bin_s, n_repeats
        Bin width and repeats per image.
    unit_variance, shared_variance
        Gain variances (see module notes).
    max_elements
        Images are processed in chunks of at most this many bins, which bounds memory.

    Returns
    -------
    (n_units, n_images, n_repeats, n_bins) uint8 (counts above 255 are clipped).
    """
    n_images, n_units = drive_hz.shape
    n_bins = bin_course.shape[1]
    out = np.empty((n_units, n_images, n_repeats, n_bins), dtype=np.uint8)
    per_image = max(n_units * n_repeats * n_bins, 1)
    chunk = max(1, max_elements // per_image)
    for start in range(0, n_images, chunk):
        drive = drive_hz[start : start + chunk]
        c = len(drive)
        rates = spontaneous_hz[None, :, None] + (drive - spontaneous_hz)[:, :, None] * bin_course[None]
        gains = gamma_gains(unit_variance[None, :, None], (c, n_units, n_repeats), rng)
        gains *= gamma_gains(shared_variance, (c, 1, n_repeats), rng)
        expected = (rates[:, :, None, :] * gains[..., None] * bin_s).reshape(-1, n_bins)
        counts = poisson_rows(expected, rng).reshape(c, n_units, n_repeats, n_bins)
        out[:, start : start + c] = np.minimum(counts, 255).transpose(1, 0, 2, 3)
    return out


def _uniform_spikes(
    rate_hz: np.ndarray, starts: np.ndarray, stops: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Homogeneous Poisson spikes: rate_hz, starts, stops are (n_units, n_segments)."""
    lengths = np.maximum(stops - starts, 0.0)
    counts = rng.poisson(rate_hz * lengths)
    unit = np.repeat(np.broadcast_to(np.arange(rate_hz.shape[0])[:, None], counts.shape).ravel(), counts.ravel())
    begin = np.repeat(np.broadcast_to(starts, counts.shape).ravel(), counts.ravel())
    span = np.repeat(np.broadcast_to(lengths, counts.shape).ravel(), counts.ravel())
    return unit, begin + rng.random(len(unit)) * span


def sample_spike_times(
    spontaneous_hz: np.ndarray,
    drive_hz: np.ndarray,
    onsets_s: np.ndarray,
    durations_s: np.ndarray,
    t_stop_s: float,
    course: TimeCourse,
    unit_variance: np.ndarray,
    shared_variance: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """A continuous recording of spikes in ``[0, t_stop_s)``, sorted by time.

    Spontaneous before the first onset; trial ``i`` runs from its onset to the next
    onset (or ``t_stop_s``), with the evoked course in 1 ms steps aligned to the
    onset, then spontaneous activity, all times the trial's gain.

    Returns
    -------
    unit_index
        (n_spikes,) int32 index into the population.
    times_s
        (n_spikes,) float64.
    """
    n_units = len(spontaneous_hz)
    ends = np.append(onsets_s[1:], t_stop_s)
    units, times = [], []
    first = onsets_s[0] if len(onsets_s) else t_stop_s
    u, t = _uniform_spikes(spontaneous_hz[:, None], np.zeros((n_units, 1)), np.full((n_units, 1), first), rng)
    units.append(u)
    times.append(t)
    gains = gamma_gains(unit_variance[:, None], (n_units, len(onsets_s)), rng)
    gains *= gamma_gains(shared_variance, (1, len(onsets_s)), rng)
    tail = course.latency_s.max() + OFFSET_TAILS * course.tau_off_s.max()
    for duration in np.unique(durations_s):
        trials = np.flatnonzero(durations_s == duration)
        n_steps = int(np.ceil((duration + tail) / STEP_S))
        shape_k = course.binned(float(duration), n_steps)
        step_start = np.arange(n_steps) * STEP_S
        for i in trials:
            length = ends[i] - onsets_s[i]
            width = np.clip(length - step_start, 0.0, STEP_S)
            rate = spontaneous_hz[:, None] + (drive_hz[i] - spontaneous_hz)[:, None] * shape_k
            counts = poisson_rows(rate * gains[:, i : i + 1] * width[None, :], rng)
            unit, step = np.nonzero(counts)
            repeat = counts[unit, step]
            unit, step = np.repeat(unit, repeat), np.repeat(step, repeat)
            units.append(unit)
            times.append(onsets_s[i] + step_start[step] + rng.random(len(step)) * width[step])
            rest_start = onsets_s[i] + n_steps * STEP_S
            if rest_start < ends[i]:
                u, t = _uniform_spikes(
                    (spontaneous_hz * gains[:, i])[:, None],
                    np.full((n_units, 1), rest_start),
                    np.full((n_units, 1), ends[i]),
                    rng,
                )
                units.append(u)
                times.append(t)
    unit_index = np.concatenate(units).astype(np.int32)
    times_s = np.concatenate(times)
    order = np.argsort(times_s, kind="stable")
    return unit_index[order], times_s[order]
