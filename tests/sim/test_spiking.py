"""Time course, binned counts, spike trains and trial-to-trial variability."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from closedloop.sim import PopulationSpec, SimulatedV1, natural_images

GREY = np.full((1, 66, 66), 0.5)


@pytest.fixture(scope="module")
def best_images(population, natural):
    """Each unit's most effective image among the natural set: (n_units, 66, 66)."""
    return natural[np.argmax(population.drive(natural), axis=0)]


def test_rate_course_has_latency_transient_and_offset(population, best_images):
    t = np.arange(0.0, 0.3, 0.001)
    course = population.rate_course(best_images, t, duration_s=0.1)
    assert course.shape == (40, 40, len(t))
    spont = population.spontaneous_hz
    drive = population.drive(best_images)
    for unit in range(population.n_units):
        trace = course[unit, unit]
        latency = population.latencies_s[unit]
        assert np.allclose(trace[t < latency - 0.001], spont[unit])
        evoked = drive[unit, unit] - spont[unit]
        half_rise = t[np.argmax(trace > spont[unit] + 0.5 * evoked)]
        assert latency <= half_rise <= latency + 0.01
        assert trace.max() > spont[unit] + 1.1 * evoked  # transient above the sustained level
        assert abs(trace[-1] - spont[unit]) < 0.02 * evoked  # back to spontaneous after offset
    # A long presentation settles at the sustained rate, which is what drive() returns.
    long_course = population.rate_course(best_images, np.array([0.4, 0.45]), duration_s=0.6)
    settled = long_course[np.arange(40), np.arange(40)]
    assert np.allclose(settled, np.diag(drive)[:, None], rtol=0.01)
    grey = population.rate_course(GREY, t, duration_s=0.1)[0]
    assert np.allclose(grey, spont[:, None])


def test_expected_rate_is_the_window_mean_of_the_course(population, natural):
    images = natural[:5]
    t = np.arange(0.05, 0.1, 0.001) + 0.0005
    course = population.rate_course(images, t, duration_s=0.1)
    assert np.allclose(population.expected_rates(images), course.mean(axis=2))
    late = population.expected_rates(images, window_s=(0.3, 0.35), duration_s=0.1)
    evoked = population.drive(images) - population.spontaneous_hz
    assert np.all(np.abs(late - population.spontaneous_hz) <= 0.005 * evoked + 1e-12)


def test_binned_counts_match_expected_rates_and_are_reproducible(population, natural):
    images = natural[:6]
    counts = population.sample_binned_counts(images, 200, duration_s=0.1, n_bins=106, rng=5)
    assert counts.shape == (40, 6, 200, 106) and counts.dtype == np.uint8
    assert np.array_equal(counts, population.sample_binned_counts(images, 200, duration_s=0.1, n_bins=106, rng=5))
    measured = counts[..., 50:100].sum(-1).mean(-1).T / 0.05
    expected = population.expected_rates(images)
    # Standard error of a mean of 200 over-dispersed counts; 5 SE leaves room for 240 comparisons.
    fano = population.window_fano(images)
    se = np.sqrt(fano * expected * 0.05 / 200) / 0.05
    assert np.all(np.abs(measured - expected) < 5 * se + 0.5)


def test_window_counts_are_overdispersed_as_predicted(population, best_images):
    images = best_images[population.unit_types != "weak"][:8]
    counts = population.sample_binned_counts(images, 1500, duration_s=0.1, n_bins=100, rng=11)
    window = counts[..., 50:100].sum(-1).astype(np.float64)
    fano = window.var(axis=-1, ddof=1) / window.mean(axis=-1)
    predicted = population.window_fano(images).T
    driven = population.expected_rates(images).T > 20.0
    assert driven.sum() >= 8
    assert np.all(fano[driven] > 1.1)
    ratio = fano[driven] / predicted[driven]
    assert abs(np.median(ratio) - 1.0) < 0.1
    assert np.all(np.abs(ratio - 1.0) < 0.35)


def test_psth_rises_after_the_latency(population, best_images):
    counts = population.sample_binned_counts(best_images, 300, duration_s=0.1, n_bins=120, rng=3)
    diagonal = counts[np.arange(40), np.arange(40)]  # each unit to its best image
    psth = diagonal.mean(axis=1).astype(np.float64) / 0.001
    tuned = np.flatnonzero(population.unit_types != "weak")
    errors = []
    for unit in tuned:
        smooth = np.convolve(psth[unit], np.ones(5) / 5, mode="same")
        base, peak = smooth[5:35].mean(), smooth.max()
        onset = np.argmax(smooth > base + 0.5 * (peak - base)) * 0.001
        errors.append(onset - population.latencies_s[unit])
    errors = np.array(errors)
    assert np.median(np.abs(errors)) < 0.006 and np.all(np.abs(errors) < 0.02)
    population_onset = np.median([population.latencies_s[u] + e for u, e in zip(tuned, errors)])
    assert 0.04 <= population_onset <= 0.065


def test_pvc8_sized_sampling_is_fast_and_small(population):
    images = np.repeat(natural_images(8, seed=2), 120, axis=0)[:956]
    tracemalloc.start()
    start = time.perf_counter()
    counts = population.sample_binned_counts(images, 20, duration_s=0.1, n_bins=106, rng=0)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert counts.shape == (40, 956, 20, 106)
    assert elapsed < 10.0
    assert peak < 400e6  # the output alone is 81 MB


def test_spike_times_form_a_continuous_recording(population, best_images):
    onsets = 0.5 + np.arange(40) * 0.4
    units, times = population.sample_spike_times(best_images, onsets, duration_s=0.1, t_stop_s=17.0, rng=9)
    assert units.dtype == np.int32 and times.dtype == np.float64
    assert np.all(np.diff(times) >= 0) and times.min() >= 0.0 and times.max() < 17.0
    assert units.min() >= 0 and units.max() < 40
    again = population.sample_spike_times(best_images, onsets, duration_s=0.1, t_stop_s=17.0, rng=9)
    assert np.array_equal(again[1], times)
    # Window counts after onsets follow the expected rates, summed over all trials.
    expected = population.expected_rates(best_images)
    relative = times[:, None] - onsets[None, :]
    in_window = (relative >= 0.05) & (relative < 0.1)
    counts = np.zeros((40, 40))
    trial, spike = np.nonzero(in_window.T)
    np.add.at(counts, (trial, units[spike]), 1)
    total_expected, total_measured = expected.sum(0) * 0.05, counts.sum(0)
    assert np.all(np.abs(total_measured - total_expected) < 5 * np.sqrt(3 * total_expected) + 2)
    # Before the first onset only spontaneous activity.
    early = np.bincount(units[times < 0.5], minlength=40)
    assert abs(early.sum() - population.spontaneous_hz.sum() * 0.5) < 5 * np.sqrt(population.spontaneous_hz.sum())


def test_spike_time_arguments_are_checked(population):
    images = np.full((2, 66, 66), 0.5)
    with pytest.raises(ValueError):
        population.sample_spike_times(images, [0.5, 0.2], duration_s=0.1, t_stop_s=1.0)
    with pytest.raises(ValueError):
        population.sample_spike_times(images, [0.5, 2.0], duration_s=0.1, t_stop_s=1.0)
    with pytest.raises(ValueError):
        population.sample_spike_times(images[:1], [0.1, 0.5], duration_s=0.1, t_stop_s=1.0)
    units, times = population.sample_spike_times(images[:0], [], duration_s=0.1, t_stop_s=2.0, rng=1)
    assert len(units) == len(times) and abs(len(times) - 2.0 * population.spontaneous_hz.sum()) < 60


def test_overdispersion_can_be_turned_off():
    spec = PopulationSpec(n_units=4, overdispersion=(0.0, 0.0), shared_overdispersion=0.0, calibration_images=32)
    sim = SimulatedV1(spec, seed=6)
    images = natural_images(1, seed=1)
    counts = sim.sample_binned_counts(images, 4000, duration_s=0.1, n_bins=100, rng=2)[..., 50:100].sum(-1)
    fano = counts.var(axis=-1, ddof=1) / counts.mean(axis=-1)
    assert np.allclose(sim.window_fano(images), 1.0)
    assert np.all(np.abs(fano - 1.0) < 0.12)
