from __future__ import annotations

import numpy as np
import pytest

from closedloop.data.responses import (
    counts_to_rates,
    group_by_stimulus,
    mean_over_repeats,
    trial_variance,
    window_bins,
    window_counts_from_bins,
    window_counts_from_spike_times,
)


def test_window_bins():
    assert window_bins((0.05, 0.10), 0.001, 106) == slice(50, 100)
    assert window_bins((0.0, 0.106), 0.001, 106) == slice(0, 106)
    with pytest.raises(ValueError, match="bin edges"):
        window_bins((0.0505, 0.10), 0.001, 106)
    with pytest.raises(ValueError, match="106 bins"):
        window_bins((0.05, 0.107), 0.001, 106)
    with pytest.raises(ValueError, match="start < stop"):
        window_bins((0.1, 0.05), 0.001, 106)


def test_window_counts_from_bins_edges_and_layout():
    binned = np.zeros((2, 3, 4, 106), dtype=np.uint8)  # units, stimuli, repeats, bins
    binned[0, 1, 2, 49] = 7  # just before the window
    binned[0, 1, 2, 50] = 1  # first bin inside
    binned[0, 1, 2, 99] = 2  # last bin inside
    binned[0, 1, 2, 100] = 9  # first bin after: [start, stop) is half-open
    binned[1, 2, 0, 75] = 255
    binned[1, 2, 0, 76] = 255  # uint8 bins must not overflow when summed
    counts = window_counts_from_bins(binned, (0.05, 0.10))
    assert counts.shape == (3, 4, 2) and counts.dtype == np.int64
    assert counts[1, 2, 0] == 3
    assert counts[2, 0, 1] == 510
    assert counts.sum() == 513
    subset = window_counts_from_bins(binned, (0.05, 0.10), stimulus_indices=[2, 1], unit_indices=[1])
    assert subset.shape == (2, 4, 1)
    assert subset[0, 0, 0] == 510 and subset[1].sum() == 0


def test_window_counts_from_spike_times_by_hand():
    onsets = np.array([0.0, 1.0])
    units = np.array([5, 5, 5, 5, 5, 7, 9, 7])
    times = np.array([0.0499, 0.05, 0.0999, 0.1, 1.07, 1.05, 0.06, 0.2])
    order = np.random.default_rng(0).permutation(units.size)  # any input order
    counts = window_counts_from_spike_times(units[order], times[order], onsets, (0.05, 0.10), [7, 5, 8])
    # unit 9 is not asked for, unit 8 never spiked; 0.05 is in, 0.1 is out
    np.testing.assert_array_equal(counts, [[0, 2, 0], [1, 1, 0]])


def test_window_counts_from_spike_times_matches_brute_force():
    rng = np.random.default_rng(3)
    unit_ids = np.array([2, 4, 6])
    spike_units = rng.choice([2, 4, 6, 99], 2000)
    spike_times = rng.uniform(0, 20, 2000)
    onsets = np.sort(rng.uniform(0, 19, 50))
    window = (0.03, 0.12)
    counts = window_counts_from_spike_times(spike_units, spike_times, onsets, window, unit_ids)
    expected = np.zeros_like(counts)
    for t, onset in enumerate(onsets):
        for u, unit in enumerate(unit_ids):
            inside = (spike_times >= onset + window[0]) & (spike_times < onset + window[1])
            expected[t, u] = np.sum(inside & (spike_units == unit))
    np.testing.assert_array_equal(counts, expected)


def test_empty_inputs_give_zeros():
    counts = window_counts_from_spike_times([], [], [0.0, 1.0], (0.05, 0.1), [1, 2])
    np.testing.assert_array_equal(counts, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="spike unit ids"):
        window_counts_from_spike_times([1, 2], [0.1], [0.0], (0.05, 0.1), [1])


def test_counts_to_rates():
    rates = counts_to_rates(np.array([[5, 0]]), (0.05, 0.10))
    assert rates.dtype == np.float32
    np.testing.assert_allclose(rates, [[100.0, 0.0]])


def test_group_by_stimulus_pads_with_nan():
    ids = np.array([3, 1, 3, 2, 3, 1])
    rates = np.arange(12, dtype=np.float32).reshape(6, 2)
    image_ids, grouped = group_by_stimulus(ids, rates)
    np.testing.assert_array_equal(image_ids, [1, 2, 3])
    assert grouped.shape == (3, 3, 2)
    np.testing.assert_array_equal(grouped[0, :2], [[2, 3], [10, 11]])
    assert np.all(np.isnan(grouped[0, 2]))
    np.testing.assert_array_equal(grouped[1, 0], [6, 7])
    assert np.all(np.isnan(grouped[1, 1:]))
    np.testing.assert_array_equal(grouped[2], [[0, 1], [4, 5], [8, 9]])


def test_mean_and_variance_ignore_missing_repeats():
    trial_rates = np.array([[[1.0], [3.0], [np.nan]], [[2.0], [4.0], [9.0]], [[5.0], [np.nan], [np.nan]]])
    np.testing.assert_allclose(mean_over_repeats(trial_rates), [[2.0], [5.0], [5.0]])
    variance = trial_variance(trial_rates)
    np.testing.assert_allclose(variance[:2], [[2.0], [13.0]])  # ddof = 1
    assert np.isnan(variance[2, 0])  # one repeat: no variance
