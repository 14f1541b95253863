"""From spikes to responses: window counts, rates in Hz, grouping by stimulus (docs/architecture.md, Clocks).

A response is the number of spikes in a window ``[start, stop)`` after stimulus onset,
divided by the window's length.  Windows are half-open everywhere, so a spike exactly
at ``onset + stop`` belongs to the next window, never to two.
"""

from __future__ import annotations

import warnings

import numpy as np

_EDGE_TOLERANCE = 1e-6  # in bins: 0.05 / 0.001 is 50.000000000000004, still bin 50


def check_window(window_s: tuple[float, float]) -> tuple[float, float]:
    """Return ``window_s`` as two floats, or raise ValueError if it is not start < stop."""
    try:
        start, stop = (float(v) for v in window_s)
    except (TypeError, ValueError):
        raise ValueError(f"a response window is (start_s, stop_s), got {window_s!r}") from None
    if not (np.isfinite(start) and np.isfinite(stop) and start < stop):
        raise ValueError(f"response window must have finite start < stop, got {window_s!r}")
    return start, stop


def window_bins(window_s: tuple[float, float], bin_s: float, n_bins: int) -> slice:
    """The bins covering ``window_s`` when bin ``k`` spans ``[k*bin_s, (k+1)*bin_s)``.

    Raises
    ------
    ValueError
        If the window edges are not on bin edges or the window runs past ``n_bins``.
    """
    start, stop = check_window(window_s)
    first, last = start / bin_s, stop / bin_s
    if abs(first - round(first)) > _EDGE_TOLERANCE or abs(last - round(last)) > _EDGE_TOLERANCE:
        raise ValueError(f"window {window_s} s does not fall on {bin_s} s bin edges")
    first, last = int(round(first)), int(round(last))
    if first < 0 or last > n_bins:
        raise ValueError(
            f"window {window_s} s needs bins {first}..{last - 1}, but trains have {n_bins} bins ({n_bins * bin_s:g} s)"
        )
    return slice(first, last)


def window_counts_from_bins(
    binned: np.ndarray,
    window_s: tuple[float, float],
    bin_s: float = 0.001,
    stimulus_indices: np.ndarray | None = None,
    unit_indices: np.ndarray | None = None,
) -> np.ndarray:
    """Spike counts in a window from binned trains.

    Parameters
    ----------
    binned
        (n_units, n_stimuli, n_repeats, n_bins) integer spike counts per bin, bin 0
        starting at stimulus onset (the pvc-8 ``resp_train`` layout).
    window_s
        (start, stop) after onset, in seconds, on bin edges.
    bin_s
        Bin width in seconds.
    stimulus_indices, unit_indices
        Optional subsets (positions along axes 1 and 0); all when ``None``.

    Returns
    -------
    numpy.ndarray
        (n_stimuli, n_repeats, n_units) int64 counts.
    """
    if binned.ndim != 4:
        raise ValueError(f"binned trains must be (units, stimuli, repeats, bins), got {binned.shape}")
    bins = window_bins(window_s, bin_s, binned.shape[3])
    # Sum the window over a view of the trains with an integer accumulator (no float
    # copy of ~200 MB of trains), then pick the requested stimuli and units.
    counts = binned[..., bins].sum(axis=3, dtype=np.int64)
    if unit_indices is not None:
        counts = counts[np.asarray(unit_indices)]
    if stimulus_indices is not None:
        counts = counts[:, np.asarray(stimulus_indices)]
    return np.ascontiguousarray(counts.transpose(1, 2, 0))


def window_counts_from_spike_times(
    spike_unit_ids: np.ndarray,
    spike_times_s: np.ndarray,
    onsets_s: np.ndarray,
    window_s: tuple[float, float],
    unit_ids: np.ndarray,
) -> np.ndarray:
    """Spike counts in ``[onset + start, onset + stop)`` for every trial and unit.

    Parameters
    ----------
    spike_unit_ids, spike_times_s
        (n_spikes,) unit id and time of every spike, any order. Spikes of units not in
        ``unit_ids`` are ignored.
    onsets_s
        (n_trials,) stimulus onsets on the same clock as the spikes.
    window_s
        (start, stop) after onset, in seconds.
    unit_ids
        (n_units,) the units to count, in output order.

    Returns
    -------
    numpy.ndarray
        (n_trials, n_units) int64 counts.
    """
    start, stop = check_window(window_s)
    spike_unit_ids = np.asarray(spike_unit_ids, dtype=np.int64).ravel()
    spike_times_s = np.asarray(spike_times_s, dtype=np.float64).ravel()
    onsets_s = np.asarray(onsets_s, dtype=np.float64).ravel()
    unit_ids = np.asarray(unit_ids, dtype=np.int64).ravel()
    if spike_unit_ids.shape != spike_times_s.shape:
        raise ValueError(f"{spike_unit_ids.size} spike unit ids but {spike_times_s.size} spike times")
    counts = np.zeros((onsets_s.size, unit_ids.size), dtype=np.int64)
    if onsets_s.size == 0 or unit_ids.size == 0 or spike_times_s.size == 0:
        return counts
    # Sort spikes by (unit, time) once; each unit is then one contiguous, sorted run and
    # every trial's count is two binary searches in that run.
    order = np.lexsort((spike_times_s, spike_unit_ids))
    sorted_units, sorted_times = spike_unit_ids[order], spike_times_s[order]
    run_starts = np.searchsorted(sorted_units, unit_ids, side="left")
    run_stops = np.searchsorted(sorted_units, unit_ids, side="right")
    lo, hi = onsets_s + start, onsets_s + stop
    for column, (a, b) in enumerate(zip(run_starts, run_stops)):
        if a == b:
            continue
        times = sorted_times[a:b]
        counts[:, column] = np.searchsorted(times, hi, "left") - np.searchsorted(times, lo, "left")
    return counts


def counts_to_rates(counts: np.ndarray, window_s: tuple[float, float]) -> np.ndarray:
    """Spike counts divided by the window length: float32 rates in Hz."""
    start, stop = check_window(window_s)
    return (np.asarray(counts, dtype=np.float32) / np.float32(stop - start)).astype(np.float32)


def group_by_stimulus(stimulus_ids: np.ndarray, trial_rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group per-trial rates by stimulus.

    Parameters
    ----------
    stimulus_ids
        (n_trials,) the stimulus shown on each trial.
    trial_rates
        (n_trials, n_units) rate per trial.

    Returns
    -------
    image_ids
        (n_images,) int64 sorted unique stimulus ids.
    rates
        (n_images, max_repeats, n_units) float32; repeats in trial order, NaN where a
        stimulus was shown fewer than ``max_repeats`` times.
    """
    stimulus_ids = np.asarray(stimulus_ids, dtype=np.int64).ravel()
    trial_rates = np.asarray(trial_rates)
    if trial_rates.ndim != 2 or trial_rates.shape[0] != stimulus_ids.size:
        raise ValueError(f"trial_rates must be (n_trials={stimulus_ids.size}, n_units), got {trial_rates.shape}")
    image_ids, which, shown = np.unique(stimulus_ids, return_inverse=True, return_counts=True)
    order = np.argsort(which, kind="stable")
    first_trial_of_image = np.concatenate(([0], np.cumsum(shown)[:-1]))
    repeat = np.empty(stimulus_ids.size, dtype=np.int64)
    repeat[order] = np.arange(stimulus_ids.size) - np.repeat(first_trial_of_image, shown)
    max_repeats = int(shown.max()) if shown.size else 0
    rates = np.full((image_ids.size, max_repeats, trial_rates.shape[1]), np.nan, dtype=np.float32)
    rates[which, repeat] = trial_rates
    return image_ids.astype(np.int64), rates


def mean_over_repeats(trial_rates: np.ndarray) -> np.ndarray:
    """(n_images, n_repeats, n_units) → (n_images, n_units) mean, ignoring NaN repeats."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an image with no repeats → NaN
        return np.nanmean(trial_rates, axis=1)


def trial_variance(trial_rates: np.ndarray) -> np.ndarray:
    """(n_images, n_repeats, n_units) → (n_images, n_units) variance over repeats (ddof=1).

    NaN repeats are ignored; an image with fewer than two repeats gets NaN.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanvar(trial_rates, axis=1, ddof=1)
