"""Where synthesized images start: the fitted image closest to the target by model and recording, or grey."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from closedloop.data.dataset import ResponseDataset
from closedloop.errors import ClosedLoopError
from closedloop.synth.canvas import Canvas, Projection
from closedloop.synth.optimise import SynthesisSettings, synthesize
from closedloop.synth.starts import BLANK, MIN_EDIT, StartImages, choose_starts
from closedloop.synth.targets import SynthesisJob, Target

from _synth_models import linear_filters

CANVAS = Canvas()
SCALE = np.array([30.0, 30.0])
CPU = torch.device("cpu")


def candidates() -> np.ndarray:
    """Five images: grey plus 0.5 … 2.5 × unit 0's filter, so unit 0's rate rises from one to the next."""
    gabor = linear_filters()[0] / np.abs(linear_filters()[0]).max()
    return np.stack([0.5 + 0.08 * k * gabor for k in (1, 2, 3, 4, 5)]).astype(np.float32)


def predicted(model, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(Projection(CANVAS, CPU)(torch.as_tensor(images))).numpy()


def rate_job(unit: int, hz: float, hold: tuple[int, ...] = (), hold_hz: tuple[float, ...] = ()) -> SynthesisJob:
    return SynthesisJob(unit, Target("rate", hz), hz, hold, hold_hz)


def starts_with(measured: np.ndarray) -> StartImages:
    return StartImages(candidates(), np.asarray(measured, dtype=np.float64), np.arange(100, 105))


def choose(model, jobs, starts):
    return choose_starts(model, jobs, starts, CANVAS, SCALE, CPU)


def expected_choice(rates, measured, target, unit=0) -> int:
    """The rule by hand: least |predicted − target| + |measured − target| among images far enough from the target."""
    score = np.abs(rates[:, unit] - target) + np.abs(measured[:, unit] - target)
    score[np.abs(rates[:, unit] - target) < MIN_EDIT * SCALE[unit]] = np.inf
    return 100 + int(np.argmin(score))


def test_the_image_both_model_and_recording_put_close_is_chosen(linear_model):
    rates = predicted(linear_model, candidates())  # unit 0: 16.9, 23.8, 30.7, 37.6, 44.6 Hz
    target = float(rates[2, 0]) + 2.0
    measured = rates.copy()
    measured[2, 0] = target + 6.0  # the model's closest, but the recording disagrees ...
    measured[3, 0] = target  # ... and here the recording matches but the model is further off
    images, ids = choose(linear_model, [rate_job(0, target)], starts_with(measured))
    assert ids.tolist() == [expected_choice(rates, measured, target)] == [103]
    np.testing.assert_allclose(images[0], Projection(CANVAS, CPU)(torch.as_tensor(candidates()))[3])


def test_an_image_already_at_the_target_is_not_re_shown(linear_model):
    rates = predicted(linear_model, candidates())
    target = float(rates[2, 0])  # image 2 meets it by model and recording alike
    _, ids = choose(linear_model, [rate_job(0, target)], starts_with(rates))
    assert ids[0] != 102 and ids[0] == expected_choice(rates, rates, target)


def test_max_and_targets_without_a_measured_candidate_start_from_grey(linear_model):
    rates = predicted(linear_model, candidates())
    jobs = [SynthesisJob(0, Target("max"), float("nan")), rate_job(0, float(rates[4, 0]) + 2.0)]
    images, ids = choose(linear_model, jobs, starts_with(rates))
    assert ids.tolist() == [BLANK, 104]
    np.testing.assert_array_equal(images[0], CANVAS.blank(1)[0])
    unmeasured = np.full_like(rates, np.nan)
    images, ids = choose(linear_model, jobs, starts_with(unmeasured))
    assert ids.tolist() == [BLANK, BLANK]
    np.testing.assert_array_equal(images, CANVAS.blank(2))


def test_held_units_count_and_unmeasured_images_are_never_chosen(linear_model):
    rates = predicted(linear_model, candidates())
    target = float(rates[2, 0]) + 2.0
    measured = rates.copy()
    measured[2, 1] = rates[2, 1] + 30.0  # image 2 is closest for unit 0 but misses the held unit's rate
    assert choose(linear_model, [rate_job(0, target)], starts_with(measured))[1][0] == 102
    hold_hz = float(rates[2, 1])
    job = rate_job(0, target, hold=(1,), hold_hz=(hold_hz,))
    _, ids = choose(linear_model, [job], starts_with(measured))
    held = (np.abs(rates[:, [0, 1]] - [target, hold_hz]) + np.abs(measured[:, [0, 1]] - [target, hold_hz])).sum(1)
    assert ids[0] == 100 + int(np.argmin(held)) == 103
    unmeasured = rates.copy()
    unmeasured[2, 0] = np.nan
    _, ids = choose(linear_model, [rate_job(0, target)], starts_with(unmeasured))
    assert ids[0] not in (102, BLANK)


def test_start_images_must_match_the_model_and_canvas(linear_model):
    three_units = StartImages(candidates(), np.zeros((5, 3)), np.arange(5))
    with pytest.raises(ClosedLoopError, match="3 units, the model has 2"):
        choose(linear_model, [rate_job(0, 5.0)], three_units)
    with pytest.raises(ClosedLoopError, match="do not match"):
        StartImages(candidates(), np.zeros((4, 2)), np.arange(5))
    small = StartImages(np.full((5, 20, 20), 0.5, np.float32), np.zeros((5, 2)), np.arange(5))
    with pytest.raises(ClosedLoopError, match="canvas 33 px"):
        choose(linear_model, [rate_job(0, 5.0)], small)


def test_synthesis_edits_the_chosen_image_and_records_where_it_started(linear_model):
    rates = predicted(linear_model, candidates())
    target = float(rates[3, 0]) + 2.0  # a little beyond image 3
    jobs = [rate_job(0, target), SynthesisJob(1, Target("max"), float("nan"))]
    settings = SynthesisSettings(steps=200)
    starts = starts_with(rates)
    natural = synthesize(linear_model, jobs, canvas=CANVAS, scale_hz=SCALE, settings=settings, starts=starts)
    blank = synthesize(linear_model, jobs, canvas=CANVAS, scale_hz=SCALE, settings=settings)
    assert natural.start_image_ids.tolist() == [103, BLANK] and blank.start_image_ids.tolist() == [BLANK, BLANK]
    assert natural.converged[0] and abs(natural.achieved_hz[0] - target) <= settings.tolerance_hz
    assert natural.steps[0] >= 1  # it was changed, not re-shown
    inside = CANVAS.aperture_mask()
    start = Projection(CANVAS, CPU)(torch.as_tensor(candidates()[3:4]))[0].numpy()
    assert np.corrcoef(natural.images[0][inside], start[inside])[0, 1] > 0.95
    np.testing.assert_allclose(natural.images[1], blank.images[1], atol=1e-5)  # "max" starts from grey either way


def test_start_images_from_a_dataset_average_the_repeats_each_image_has():
    trial_rates = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    trial_rates[1, 2, 0] = np.nan  # one repeat missing
    trial_rates[2, :, 1] = np.nan  # no response at all
    dataset = ResponseDataset(
        images=np.random.default_rng(0).random((4, 33, 33), dtype=np.float32),
        trial_rates=trial_rates,
        unit_ids=np.array([7, 9]),
        image_ids=np.array([40, 41, 42, 43]),
        source="toy",
    )
    starts = StartImages.from_dataset(dataset, np.array([1, 2]), np.array([9, 7]))
    np.testing.assert_array_equal(starts.image_ids, [41, 42])
    np.testing.assert_array_equal(starts.images, dataset.images[[1, 2]])
    np.testing.assert_allclose(starts.measured_hz[0], [np.mean(trial_rates[1, :, 1]), np.mean(trial_rates[1, :2, 0])])
    assert np.isnan(starts.measured_hz[1, 0]) and starts.measured_hz[1, 1] == pytest.approx(
        np.mean(trial_rates[2, :, 0])
    )
    with pytest.raises(ClosedLoopError, match="no unit \\[8\\]"):
        StartImages.from_dataset(dataset, np.array([0]), np.array([7, 8]))
