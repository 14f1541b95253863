"""The headless presenter's exact frame times, and the input checks every presenter shares."""

from __future__ import annotations

import time

import numpy as np
import pytest

from closedloop.config.protocol import FrameTiming
from closedloop.present import HeadlessPresenter, PresenterError, make_presenter


def _images(n: int, size: int = 20) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(1)
    return {i: rng.random((size, size)).astype(np.float32) for i in range(n)}


def test_frame_locked_times(test_rig, timing) -> None:
    with HeadlessPresenter(start_time=100.0) as presenter:
        presenter.open(test_rig, timing)
        records = presenter.show_block(_images(4), [3, 1, 2, 1])
        period, per_trial = 1 / 60, timing.stimulus_frames + timing.blank_frames
        assert [r.stimulus_id for r in records] == [3, 1, 2, 1]
        assert [r.trial for r in records] == [0, 1, 2, 3]
        for k, record in enumerate(records):
            # slot 0 is the block's lead-in blank, trial k starts at slot 1 + k·(on + off)
            assert record.flip_time == pytest.approx(100.0 + (1 + k * per_trial) * period, abs=1e-9)
            assert record.on_duration_s == pytest.approx(3 * period, abs=1e-9)
            assert record.n_frames == 3 and record.dropped_frames == 0
            np.testing.assert_allclose(record.frame_intervals, np.full(per_trial, period), atol=1e-9)
        second = presenter.show_block(_images(4), [0], frames_on=1, frames_off=1)
        # the next block continues on the same grid after its own lead-in flip
        assert second[0].flip_time == pytest.approx(100.0 + (1 + 4 * per_trial + 1) * period, abs=1e-9)
        assert second[0].on_duration_s == pytest.approx(period, abs=1e-9)


def test_realtime_takes_the_frames_time(test_rig) -> None:
    timing = FrameTiming(2, 2, 60.0)
    with make_presenter("headless", realtime=True) as presenter:
        presenter.open(test_rig, timing)
        started = time.monotonic()
        records = presenter.show_block(_images(3), [0, 1, 2])
        elapsed = time.monotonic() - started
    assert elapsed >= (1 + 3 * 4 - 1) / 60  # lead-in + 12 frames, the last flip ends the block
    assert records[0].flip_time >= started - 1 / 60
    assert np.all(np.diff([r.flip_time for r in records]) == pytest.approx(4 / 60))


def test_uint8_images_are_accepted(test_rig, timing) -> None:
    with HeadlessPresenter() as presenter:
        presenter.open(test_rig, timing)
        image = np.full((20, 20), 200, dtype=np.uint8)
        assert len(presenter.show_block({7: image}, [7])) == 1


@pytest.mark.parametrize(
    ("stimuli", "order", "message"),
    [
        ({}, [5], "stimulus 5 has no image; send its pixels"),
        ({1: np.zeros((19, 20))}, [1], "image is (19, 20) but the rig's stimulus.size_px is 20"),
        ({1: np.full((20, 20), 1.5)}, [1], "values span [1.5, 1.5] but must lie in [0, 1]"),
        ({1: np.full((20, 20), np.nan)}, [1], "NaN or infinite"),
        ({1: np.full((20, 20), "a")}, [1], "is not numeric"),
    ],
)
def test_bad_stimuli_are_refused_before_anything_is_shown(test_rig, timing, stimuli, order, message) -> None:
    with HeadlessPresenter() as presenter:
        presenter.open(test_rig, timing)
        with pytest.raises(PresenterError) as caught:
            presenter.iter_block(stimuli, order)
        assert message in str(caught.value)
        assert presenter.frames_flipped == 0


@pytest.mark.parametrize("frames_on", [0, 1.5, True])
def test_durations_must_be_whole_frames(test_rig, timing, frames_on) -> None:
    with HeadlessPresenter() as presenter:
        presenter.open(test_rig, timing)
        with pytest.raises(PresenterError, match="frames_on must be a whole number of frames"):
            presenter.show_block(_images(1), [0], frames_on=frames_on)


def test_timing_for_another_refresh_rate_is_refused(test_rig) -> None:
    with pytest.raises(PresenterError, match="computed for 120 Hz but the rig 'present-test' refreshes at 60 Hz"):
        HeadlessPresenter().open(test_rig, FrameTiming(3, 3, 120.0))


def test_show_before_open_and_open_twice(test_rig, timing) -> None:
    presenter = HeadlessPresenter()
    with pytest.raises(PresenterError, match="not open"):
        presenter.show_block(_images(1), [0])
    presenter.open(test_rig, timing)
    with pytest.raises(PresenterError, match="already open"):
        presenter.open(test_rig, timing)
    presenter.close()
    presenter.close()
    assert not presenter.is_open
