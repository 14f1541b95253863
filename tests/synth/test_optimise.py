"""The optimiser on linear units, whose best image under the constraints is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.errors import ClosedLoopError
from closedloop.synth.canvas import Canvas
from closedloop.synth.optimise import SynthesisSettings, synthesize
from closedloop.synth.targets import SynthesisJob, Target, build_jobs, parse_targets

from _synth_models import linear_filters, lp_optimum

CANVAS = Canvas()
SCALE = np.array([30.0, 30.0])


def rate(image: np.ndarray, unit: int) -> float:
    return 10.0 + 2.0 * float((linear_filters()[unit] * image).sum())


def test_maximise_reaches_the_analytic_optimum(linear_model):
    jobs = [SynthesisJob(0, Target("max"), float("nan")), SynthesisJob(1, Target("max"), float("nan"))]
    # 500 steps, `closedloop synth`'s default: the 3 px starting blur leaves fewer steps at fine scale.
    result = synthesize(linear_model, jobs, canvas=CANVAS, scale_hz=SCALE, settings=SynthesisSettings(steps=500))
    for row, unit in enumerate((0, 1)):
        best, optimum_image = lp_optimum(2.0 * linear_filters()[unit], 10.0, CANVAS)
        baseline = rate(CANVAS.blank(1)[0], unit)
        # Within 2 % of the way from the blank screen to the optimum ...
        assert result.achieved_hz[row] >= baseline + 0.98 * (best - baseline)
        assert result.achieved_hz[row] <= best + 1e-3
        # ... and the image is the optimum's pattern: bright where the filter is largest.
        inside = CANVAS.aperture_mask()
        agreement = np.corrcoef(result.images[row][inside], optimum_image[inside])[0, 1]
        assert agreement > 0.9
        assert result.achieved_hz[row] == pytest.approx(rate(result.images[row], unit), abs=1e-3)
    assert not result.converged.any() and (result.steps == 500).all()


def test_rate_targets_are_reached_within_tolerance_and_constraints_hold(linear_model):
    percentiles = np.tile(np.linspace(4.0, 40.0, 101)[:, None], (1, 2))
    jobs = build_jobs(np.array([0, 1]), parse_targets("p20,p50,p80,25hz"), percentiles)
    settings = SynthesisSettings(steps=300, tolerance_hz=0.2)
    result = synthesize(linear_model, jobs, canvas=CANVAS, scale_hz=SCALE, settings=settings, seed=5)
    assert result.converged.all()
    np.testing.assert_array_less(np.abs(result.gap_hz), 0.2 + 1e-6)
    assert (result.steps < 300).all()  # each image stopped once it was there
    assert CANVAS.violations(result.images) == []
    for row, job in enumerate(jobs):  # the reported rate is the image's true (linear) rate
        assert result.achieved_hz[row] == pytest.approx(rate(result.images[row], job.unit), abs=1e-3)
    assert result.images.shape == (8, 33, 33) and len(set(result.seeds.tolist())) == 8


def test_unreachable_target_reports_the_gap_and_stops_at_the_cap(linear_model):
    best, _ = lp_optimum(2.0 * linear_filters()[1], 10.0, CANVAS)
    jobs = [SynthesisJob(1, Target("rate", 500.0), 500.0), SynthesisJob(0, Target("rate", 400.0), 400.0)]
    result = synthesize(linear_model, jobs, canvas=CANVAS, scale_hz=SCALE, settings=SynthesisSettings(steps=120))
    assert not result.converged.any()
    assert (result.steps == 120).all()
    assert result.gap_hz[0] < -100 and result.achieved_hz[0] <= best + 1e-3
    assert result.achieved_hz[0] > 0.9 * best  # it got as close as it could
    assert np.isfinite(result.gap_hz).all()


def test_population_pattern_holds_the_other_unit_at_baseline(linear_model):
    baseline = np.array([rate(CANVAS.blank(1)[0], 0), rate(CANVAS.blank(1)[0], 1)])
    jobs = build_jobs(
        np.array([0]), [Target("rate", baseline[0] + 8.0)], np.zeros((101, 2)), hold=[0, 1], baseline_hz=baseline
    )
    free = build_jobs(np.array([0]), [Target("rate", baseline[0] + 8.0)], np.zeros((101, 2)))
    settings = SynthesisSettings(steps=300, tolerance_hz=0.3)
    held = synthesize(linear_model, jobs, canvas=CANVAS, scale_hz=SCALE, settings=settings, seed=1)
    loose = synthesize(linear_model, free, canvas=CANVAS, scale_hz=SCALE, settings=settings, seed=1)
    assert held.converged[0]
    assert abs(held.predictions[0, 1] - baseline[1]) <= 0.3 + 1e-6
    assert abs(held.achieved_hz[0] - (baseline[0] + 8.0)) <= 0.3 + 1e-6
    assert abs(loose.predictions[0, 1] - baseline[1]) > abs(held.predictions[0, 1] - baseline[1])


def test_same_seed_same_images(linear_model):
    jobs = [SynthesisJob(0, Target("rate", 20.0), 20.0)]
    settings = SynthesisSettings(steps=50)
    a = synthesize(linear_model, jobs, canvas=CANVAS, scale_hz=SCALE, settings=settings, seed=9)
    b = synthesize(linear_model, jobs, canvas=CANVAS, scale_hz=SCALE, settings=settings, seed=9)
    c = synthesize(linear_model, jobs, canvas=CANVAS, scale_hz=SCALE, settings=settings, seed=10)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)


def test_contrast_cap_and_tv_are_respected(linear_model):
    canvas = Canvas(max_contrast=0.1)
    jobs = [SynthesisJob(0, Target("max"), float("nan"))]
    result = synthesize(
        linear_model, jobs, canvas=canvas, scale_hz=SCALE, settings=SynthesisSettings(steps=60, tv_weight=0.5)
    )
    assert canvas.violations(result.images) == []
    assert result.images[0][canvas.aperture_mask()].std() == pytest.approx(0.1, abs=1e-3)


def test_bad_jobs_and_settings_are_refused(linear_model):
    with pytest.raises(ClosedLoopError, match="nothing to synthesize"):
        synthesize(linear_model, [], canvas=CANVAS, scale_hz=SCALE)
    with pytest.raises(ClosedLoopError, match="outside the model"):
        synthesize(linear_model, [SynthesisJob(5, Target("max"), float("nan"))], canvas=CANVAS, scale_hz=SCALE)
    with pytest.raises(ClosedLoopError, match="finite"):
        synthesize(linear_model, [SynthesisJob(0, Target("rate", 1.0), float("nan"))], canvas=CANVAS, scale_hz=SCALE)
    with pytest.raises(ClosedLoopError, match="steps"):
        SynthesisSettings(steps=0)
    with pytest.raises(ClosedLoopError, match="tolerance"):
        SynthesisSettings(tolerance_hz=float("nan"))
