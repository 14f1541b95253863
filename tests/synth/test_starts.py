"""Where synthesized images start: the fitted image closest to the target by model and recording, or grey."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from closedloop.data.dataset import ResponseDataset
from closedloop.errors import ClosedLoopError
from closedloop.synth.canvas import Canvas, Projection
from closedloop.synth.optimise import SynthesisSettings, synthesize
from closedloop.synth.starts import BLANK, StartImages, choose_starts
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


def test_the_image_both_model_and_recording_put_closest_is_chosen(linear_model):
    rates = predicted(linear_model, candidates())
    target = float(rates[2, 0])
    measured = rates.copy()
    measured[2, 0] = target + 6.0  # the model's exact match, but the recording disagrees ...
    measured[3, 0] = target  # ... and here the recording matches but the model is far off
    measured[1, 0] = target + 1.0  # close by both
    images, ids = choose_starts(linear_model, [rate_job(0, target)], starts_with(measured), CANVAS, CPU)
    scores = np.abs(rates[:, 0] - target) + np.abs(measured[:, 0] - target)
    assert ids.tolist() == [100 + int(np.argmin(scores))]
    np.testing.assert_allclose(images[0], Projection(CANVAS, CPU)(torch.as_tensor(candidates()))[np.argmin(scores)])


def test_max_jobs_and_targets_the_blank_screen_meets_start_from_grey(linear_model):
    rates = predicted(linear_model, candidates())
    blank_rate = float(predicted(linear_model, CANVAS.blank(1))[0, 0])
    jobs = [SynthesisJob(0, Target("max"), float("nan")), rate_job(0, blank_rate), rate_job(0, float(rates[4, 0]))]
    images, ids = choose_starts(linear_model, jobs, starts_with(rates), CANVAS, CPU)
    assert ids.tolist() == [BLANK, BLANK, 104]
    np.testing.assert_array_equal(images[:2], CANVAS.blank(2))


def test_held_units_count_and_unmeasured_images_are_never_chosen(linear_model):
    rates = predicted(linear_model, candidates())
    target = float(rates[2, 0])
    # Unit 1 held at its rate for image 4: image 2 meets unit 0 but not the held unit's rate as well.
    hold_hz = float(rates[4, 1]) + 40.0
    measured = rates.copy()
    measured[:, 1] = rates[:, 1]
    job = rate_job(0, target, hold=(1,), hold_hz=(hold_hz,))
    _, ids = choose_starts(linear_model, [job], starts_with(measured), CANVAS, CPU)
    scores = (np.abs(rates[:, [0, 1]] - [target, hold_hz]) + np.abs(measured[:, [0, 1]] - [target, hold_hz])).sum(1)
    assert ids[0] == 100 + int(np.argmin(scores))
    unmeasured = rates.copy()
    unmeasured[2, 0] = np.nan
    _, ids = choose_starts(linear_model, [rate_job(0, target)], starts_with(unmeasured), CANVAS, CPU)
    assert ids[0] not in (102, BLANK)


def test_start_images_must_match_the_model_and_canvas(linear_model):
    with pytest.raises(ClosedLoopError, match="3 units, the model has 2"):
        choose_starts(
            linear_model, [rate_job(0, 5.0)], StartImages(candidates(), np.zeros((5, 3)), np.arange(5)), CANVAS, CPU
        )
    with pytest.raises(ClosedLoopError, match="do not match"):
        StartImages(candidates(), np.zeros((4, 2)), np.arange(5))
    small = np.full((5, 20, 20), 0.5, np.float32)
    with pytest.raises(ClosedLoopError, match="canvas 33 px"):
        choose_starts(linear_model, [rate_job(0, 5.0)], StartImages(small, np.zeros((5, 2)), np.arange(5)), CANVAS, CPU)


def test_synthesis_nudges_the_chosen_image_and_records_where_it_started(linear_model):
    rates = predicted(linear_model, candidates())
    target = float(rates[3, 0]) + 1.0  # a little beyond image 3: it only needs a nudge
    jobs = [rate_job(0, target), SynthesisJob(1, Target("max"), float("nan"))]
    settings = SynthesisSettings(steps=200)
    natural = synthesize(
        linear_model, jobs, canvas=CANVAS, scale_hz=SCALE, settings=settings, starts=starts_with(rates)
    )
    blank = synthesize(linear_model, jobs, canvas=CANVAS, scale_hz=SCALE, settings=settings)
    assert natural.start_image_ids.tolist() == [103, BLANK] and blank.start_image_ids.tolist() == [BLANK, BLANK]
    assert natural.converged[0] and abs(natural.achieved_hz[0] - target) <= settings.tolerance_hz
    inside = CANVAS.aperture_mask()
    start = Projection(CANVAS, CPU)(torch.as_tensor(candidates()[3:4]))[0].numpy()
    assert np.corrcoef(natural.images[0][inside], start[inside])[0, 1] > 0.95
    assert natural.steps[0] < blank.steps[0]
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
