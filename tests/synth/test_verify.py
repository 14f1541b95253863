"""The ground-truth report's slope of true rate on target and its spread honesty, against the simulator's own rates."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.synth.verify import slope


def test_slope_is_the_least_squares_gain_of_truth_on_target():
    target = np.array([10.0, 20.0, 30.0, 40.0])
    assert slope(target, 5.0 + 0.5 * target) == pytest.approx(0.5)
    assert slope(target, 2.0 * target) == pytest.approx(2.0)
    # NaN pairs are left out; fewer than 3 pairs or one repeated target have no slope
    assert slope(np.array([10.0, 20.0, np.nan, 40.0]), np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.1)
    assert np.isnan(slope(np.array([10.0, 20.0]), np.array([1.0, 2.0])))
    assert np.isnan(slope(np.full(4, 10.0), np.arange(4.0)))


def test_the_report_gives_the_median_unit_slope_of_the_simulators_true_rates(tiny_checkpoint):
    from closedloop.model.checkpoint import load_checkpoint
    from closedloop.sim.archive import population_for, spec_from_archive
    from closedloop.sim.archive_spec import RESPONSE_WINDOW_S
    from closedloop.synth.optimise import SynthesisSettings
    from closedloop.synth.plan import synthesize_from_checkpoint
    from closedloop.synth.verify import ground_truth_report

    model_path, archive = tiny_checkpoint
    checkpoint = load_checkpoint(model_path, "cpu")
    settings = SynthesisSettings(steps=20, heldout_members=0)
    graded = synthesize_from_checkpoint(checkpoint, "all", "p20,p50,p80", settings=settings, min_heldout_r=None)
    maxed = synthesize_from_checkpoint(checkpoint, "all", "max", settings=settings, min_heldout_r=None)
    report = ground_truth_report(archive, checkpoint, graded.result, maxed.result)

    # the same slope computed here, from the simulator's rates for the very images
    spec = spec_from_archive(archive)
    population = population_for(spec)
    result = graded.result
    true = population.expected_rates(result.canvas.to_display(result.images), RESPONSE_WINDOW_S, spec.durations_s[0])
    column = {int(u): i for i, u in enumerate(population.unit_ids)}
    units = np.array([job.unit for job in result.jobs])
    truth = true[np.arange(units.size), [column[int(checkpoint.unit_ids[u])] for u in units]]
    slopes = []
    for unit in np.unique(units):
        rows = units == unit
        design = np.stack([result.target_hz[rows], np.ones(rows.sum())], axis=1)
        slopes.append(np.linalg.lstsq(design, truth[rows], rcond=None)[0][0])
    assert report["units"]["all units"]["median_unit_slope"] == pytest.approx(np.median(slopes), rel=1e-6)
    # the spread's honesty, from the same rates
    promised, spread = result.achieved_hz, result.spread_hz
    expected = np.sqrt(np.mean((truth - promised) ** 2) / np.mean(spread**2))
    assert report["units"]["all units"]["percentile_error_over_spread"] == pytest.approx(expected, rel=1e-6)
    assert report["units"]["all units"]["max_error_over_spread"] > 0
    # "max" images: the prediction over the true rate, and the promise synth prints (times the top ratio)
    m = maxed.result
    m_units = np.array([job.unit for job in m.jobs])
    m_rates = population.expected_rates(m.canvas.to_display(m.images), RESPONSE_WINDOW_S, spec.durations_s[0])
    m_truth = m_rates[np.arange(m_units.size), [column[int(checkpoint.unit_ids[u])] for u in m_units]]
    every = report["units"]["all units"]
    assert every["max_predicted_over_true"] == pytest.approx(np.median(m.achieved_hz / m_truth), rel=1e-6)
    ratio = checkpoint.metrics["heldout_top_ratio"]
    assert every["max_promised_over_true"] == pytest.approx(np.median(ratio * m.achieved_hz / m_truth), rel=1e-6)


def test_shown_images_measure_the_simulators_rates_and_are_judged_against_the_fits_interval(tiny_checkpoint):
    from closedloop.model.checkpoint import load_checkpoint
    from closedloop.sim.archive import population_for, spec_from_archive
    from closedloop.sim.archive_spec import RESPONSE_WINDOW_S
    from closedloop.synth.optimise import SynthesisSettings
    from closedloop.synth.plan import synthesize_from_checkpoint
    from closedloop.synth.interval import planned_interval_hz
    from closedloop.synth.verify import _shown, ground_truth_report

    model_path, archive = tiny_checkpoint
    checkpoint = load_checkpoint(model_path, "cpu")
    spec = spec_from_archive(archive)
    population = population_for(spec)
    settings = SynthesisSettings(steps=20)
    graded = synthesize_from_checkpoint(checkpoint, "all", "p20,p50,p80", settings=settings, min_heldout_r=None)
    maxed = synthesize_from_checkpoint(checkpoint, "all", "max", settings=settings, min_heldout_r=None)
    images = graded.result.canvas.to_display(graded.result.images)
    true = population.expected_rates(images, RESPONSE_WINDOW_S, spec.durations_s[0])
    columns = np.arange(images.shape[0]) % true.shape[1]
    shown = _shown(population, images, columns, spec.durations_s[0], 400, np.random.default_rng(0))
    expected = true[np.arange(images.shape[0]), columns]
    window_s = RESPONSE_WINDOW_S[1] - RESPONSE_WINDOW_S[0]
    poisson_se = np.sqrt(np.maximum(expected, 1.0) / window_s / 400)  # a mean of 400 Poisson counts' rates
    assert np.all(np.abs(shown - expected) <= 6 * poisson_se)

    report = ground_truth_report(archive, checkpoint, graded.result, maxed.result, repeats=20, seed=3)
    keys = [f"{name}_{kind}_within_interval" for name in ("percentile", "max") for kind in ("measured", "true")]
    numbers = [report["units"]["all units"][key] for key in keys]
    assert all(0.0 <= value <= 1.0 for value in numbers)
    # judged against the interval synth prints for 20 presentations, with the same spikes
    g = graded.result
    units = np.asarray([job.unit for job in g.jobs])
    pop = {int(u): i for i, u in enumerate(population.unit_ids)}
    measured = _shown(
        population,
        g.canvas.to_display(g.images),
        np.asarray([pop[int(u)] for u in checkpoint.unit_ids[units]]),
        spec.durations_s[0],
        20,
        np.random.default_rng(3),
    )
    half = planned_interval_hz(checkpoint, checkpoint.unit_ids[units], g.achieved_hz, g.spread_hz, 20)
    assert np.all(np.isfinite(half)) and np.all(half > 0)
    inside = np.mean(np.abs(measured - g.achieved_hz) <= half)
    assert report["units"]["all units"]["percentile_measured_within_interval"] == pytest.approx(inside)
    above = np.mean(measured >= g.achieved_hz - half)  # the interval's lower end, what synth gives "max" images
    assert report["units"]["all units"]["percentile_measured_above_floor"] == pytest.approx(above) and above >= inside
    assert 0.0 <= report["units"]["all units"]["max_measured_above_floor"] <= 1.0
    again = ground_truth_report(archive, checkpoint, graded.result, maxed.result, repeats=20, seed=3)
    assert [again["units"]["all units"][key] for key in keys] == numbers  # the same spikes for the same seed
    assert (
        "percentile_true_within_interval"
        not in ground_truth_report(archive, checkpoint, graded.result, maxed.result)["units"]["all units"]
    )
