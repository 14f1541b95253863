"""The PsychoPy presenter under Xvfb: what reaches the back buffer, onset times, dropped frames.

Under Xvfb the front buffer reads back as zeros, so each frame is read from the back
buffer just before its flip (by wrapping ``win.flip``).  Read-back rows start at the
top of the window.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import quadrant_image, write_rig

from closedloop.config.protocol import FrameTiming
from closedloop.present import PresenterError, geometry
from closedloop.present.psychopy_presenter import PsychoPyPresenter

pytestmark = pytest.mark.usefixtures("xvfb_display")


class FrameGrabber:
    """Wraps ``win.flip``: reads the back buffer (grey level, row 0 at the top) before each flip."""

    def __init__(self, presenter: PsychoPyPresenter, delay_flips: dict[int, float] | None = None):
        self.win = presenter.window
        self.frames: list[np.ndarray] = []
        self.delay_flips = delay_flips or {}
        self.flips = 0
        self._flip = self.win.flip

    def __enter__(self) -> FrameGrabber:
        self.win.flip = self._grab_then_flip
        return self

    def __exit__(self, *exc: object) -> None:
        self.win.flip = self._flip

    def _grab_then_flip(self, *args, **kwargs):
        if self.delay_flips is not None:
            time.sleep(self.delay_flips.get(self.flips, 0.0))  # a long draw
        if self.frames is not None:
            rgb = np.asarray(self.win._getFrame(buffer="back"))
            assert np.array_equal(rgb[..., 0], rgb[..., 2])  # grey levels only
            self.frames.append(rgb[..., 0].astype(np.int16))
        self.flips += 1
        return self._flip(*args, **kwargs)


@pytest.fixture(scope="module")
def presenter(test_rig, timing):
    presenter = PsychoPyPresenter()
    presenter.open(test_rig, timing)
    yield presenter
    presenter.close()


def test_the_window_matches_the_rig(presenter) -> None:
    assert tuple(presenter.window.size) == (800, 600)
    assert presenter.pacing == "software"  # Xvfb does not wait for vertical blanking
    assert presenter.window.refreshThreshold == pytest.approx(1.5 / 60)


def test_onset_frame_shows_the_image_in_the_aperture(presenter, test_rig) -> None:
    image = quadrant_image()
    with FrameGrabber(presenter) as grabber:
        records = presenter.show_block({4: image}, [4])
    # lead-in blank, 3 image frames, 2 blank frames
    assert len(grabber.frames) == 1 + 3 + 2
    texture = geometry.stimulus_texture(image, test_rig)
    expected_on = np.round(255 * geometry.expected_screen(test_rig, texture, photodiode_on=True))
    expected_off = np.round(255 * geometry.expected_screen(test_rig, None, photodiode_on=False))
    for frame in grabber.frames[1:4]:
        assert np.abs(frame - expected_on).max() <= 1
    for frame in grabber.frames[4:] + grabber.frames[:1]:
        assert np.abs(frame - expected_off).max() <= 1
    # Independent of the geometry module: the aperture centre from the rig, the
    # quadrants the right way up, grey outside the circle, photodiode patch white.
    onset = grabber.frames[1]
    column, row = (int(round(v)) for v in test_rig.display.to_pixels(*test_rig.stimulus.centre_deg))
    radius = 1.5 * test_rig.pixels_per_degree
    inside = radius * 0.5
    assert onset[int(row - inside), int(column - inside)] == pytest.approx(0.9 * 255, abs=1)  # top-left
    assert onset[int(row - inside), int(column + inside)] == pytest.approx(0.1 * 255, abs=1)  # top-right
    assert onset[int(row + inside), int(column - inside)] == pytest.approx(0.3 * 255, abs=1)  # bottom-left
    assert onset[int(row + inside), int(column + inside)] == pytest.approx(0.7 * 255, abs=1)  # bottom-right
    for d_row, d_column in (
        (0, radius + 2),
        (0, -radius - 2),
        (radius + 2, 0),
        (-radius - 2, 0),
        (0.75 * radius, 0.75 * radius),
    ):  # just outside the disc, and its corner
        assert onset[int(row + d_row), int(column + d_column)] == pytest.approx(127.5, abs=1)
    assert np.all(onset[-40:, :40] == 255) and np.all(grabber.frames[4][-40:, :40] == 0)
    assert records[0].n_frames == 3 and len(records[0].frame_intervals) == 5


def test_gamma_and_mean_luminance_come_from_the_rig(rig_folder, timing) -> None:
    rig = write_rig(rig_folder, gamma=2.2, mean_luminance=0.3)
    with PsychoPyPresenter(pacing="software") as presenter:
        presenter.open(rig, timing)
        with FrameGrabber(presenter) as grabber:
            presenter.show_block({0: np.full((20, 20), 0.25)}, [0], frames_on=1, frames_off=1)
    onset = grabber.frames[1]
    column, row = (int(round(v)) for v in rig.display.to_pixels(*rig.stimulus.centre_deg))
    assert onset[row, column] == pytest.approx(255 * 0.25 ** (1 / 2.2), abs=1)  # 136, not 64
    assert onset[100, 700] == pytest.approx(255 * 0.3 ** (1 / 2.2), abs=1)  # background 148, not 77
    assert onset[-1, 0] == 255


@pytest.mark.realtime
def test_onset_times_step_by_the_trial_duration(presenter, test_rig, timing) -> None:
    images = {i: np.full((20, 20), i / 10) for i in range(10)}
    records = presenter.show_block(images, list(range(10)))
    period = 1 / test_rig.display.refresh_hz
    trial_s = (timing.stimulus_frames + timing.blank_frames) * period
    onsets = np.array([r.flip_time for r in records])
    assert np.all(np.diff(onsets) > 0)
    assert abs(time.monotonic() - onsets[-1]) < 1.0  # the presenter clock is time.monotonic
    for k in range(len(records) - 1):
        if records[k].dropped_frames == 0 and records[k + 1].dropped_frames == 0:
            # an extra or missing frame would be a whole period; flip latency jitters by less
            assert abs(onsets[k + 1] - onsets[k] - trial_s) < 0.75 * period
    for record in records:
        assert len(record.frame_intervals) == 5
        assert record.dropped_frames == int(np.sum(record.frame_intervals > 1.5 * period))
        if record.dropped_frames == 0:
            assert abs(record.on_duration_s - 3 * period) < 0.75 * period
    assert np.median(np.diff(onsets)) == pytest.approx(trial_s, abs=0.003)
    assert np.median(np.concatenate([r.frame_intervals for r in records])) == pytest.approx(period, abs=0.003)


def test_a_long_draw_counts_as_dropped_frames(presenter) -> None:
    images = {i: np.full((20, 20), 0.5) for i in range(3)}
    # flips: 0 lead-in, trial 0 = 1..5, trial 1 = 6..10; stall the third image frame of trial 1
    with FrameGrabber(presenter, delay_flips={8: 0.06}) as grabber:
        grabber.frames = None
        records = presenter.show_block(images, [0, 1, 2])
    slow = records[1]
    assert slow.dropped_frames >= 1
    assert slow.frame_intervals[2] > 0.06
    assert slow.on_duration_s > 0.06 + 2 / 60 - 0.005


def test_full_screen_at_the_wrong_resolution_is_refused(rig_folder, timing) -> None:
    rig = write_rig(rig_folder, fullscreen=True)  # 800 × 600 but the Xvfb screen is 1920 × 1080
    presenter = PsychoPyPresenter()
    with pytest.raises(PresenterError, match=r"window is 1920×1080 px but the rig says 800×600 px"):
        presenter.open(rig, timing)
    assert presenter.window is None and not presenter.is_open


def test_timing_must_match_the_refresh(test_rig) -> None:
    with pytest.raises(PresenterError, match="recompute it with protocol.frames"):
        PsychoPyPresenter().open(test_rig, FrameTiming(3, 3, 120.0))
