"""The presenter interface: open on a rig, show blocks of stimuli frame by frame, close.

A presenter shows each trial as ``frames_on`` frames of the image (photodiode patch
white) followed by ``frames_off`` frames of mean-luminance grey (patch black), and
reports per trial when the image first appeared (the onset flip), how many frames it
was drawn for, the interval before every flip of the trial and how many of those
intervals were late enough to count as dropped frames.

Subclasses implement `Presenter._open`, `Presenter._begin_block`,
`Presenter._show_trial` and `Presenter._close`; this base class checks the input and
keeps the bookkeeping, so every presenter rejects the same bad input the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from closedloop.config.protocol import FrameTiming
from closedloop.config.rig import Rig
from closedloop.errors import ClosedLoopError


class PresenterError(ClosedLoopError):
    """The presenter cannot show what it was asked to, or cannot open its display."""


@dataclass(frozen=True, eq=False)
class TrialRecord:
    """What the presenter did on one trial.

    Attributes
    ----------
    stimulus_id
        The stimulus shown.
    trial
        Index of the trial within its block (0, 1, …).
    flip_time
        Seconds on the presenter's clock (``time.monotonic``) when the flip that put
        the image on screen returned (PsychoPy's ``callOnFlip``).  The photodiode
        edge seen by acquisition is the true onset; this is the check.
    offset_time
        Same clock, when the first blank frame's flip returned.
    n_frames
        Frames the image was drawn for (the protocol's stimulus duration).
    dropped_frames
        Intervals in this trial longer than the presenter's refresh threshold.
    frame_intervals
        (frames_on + frames_off,) float64 seconds before each flip of the trial; the
        first is measured from the previous trial's last flip (or the block's lead-in).
    """

    stimulus_id: int
    trial: int
    flip_time: float
    offset_time: float
    n_frames: int
    dropped_frames: int
    frame_intervals: np.ndarray

    @property
    def on_duration_s(self) -> float:
        """How long the image was on screen, from its flip to the first blank flip."""
        return self.offset_time - self.flip_time


@dataclass(frozen=True)
class TrialTiming:
    """What a subclass measures while showing one trial (see `Presenter._show_trial`)."""

    flip_time: float
    offset_time: float
    dropped_frames: int
    frame_intervals: np.ndarray


class Presenter(ABC):
    """Base class of presenters; use as a context manager or call `close`.

    Subclasses set ``name`` and implement the four underscored methods.
    """

    name = "presenter"

    def __init__(self) -> None:
        self.rig: Rig | None = None
        self.timing: FrameTiming | None = None

    # --- public API -----------------------------------------------------------------

    def open(self, rig: Rig, timing: FrameTiming) -> None:
        """Open the display for ``rig`` with the protocol's frame ``timing``.

        Raises
        ------
        PresenterError
            If ``timing`` was computed for another refresh rate, or the display
            cannot be opened (the message says why and how to fix it).
        """
        if self.rig is not None:
            raise PresenterError(f"{self.name}: already open; close it first")
        if abs(timing.refresh_hz - rig.display.refresh_hz) > 1e-9:
            raise PresenterError(
                f"{self.name}: frame timing was computed for {timing.refresh_hz:g} Hz but the rig "
                f"{rig.name!r} refreshes at {rig.display.refresh_hz:g} Hz; recompute it with protocol.frames(rig)"
            )
        self._open(rig)
        self.rig, self.timing = rig, timing

    def show_block(
        self,
        stimuli: Mapping[int, np.ndarray],
        order: Sequence[int],
        *,
        frames_on: int | None = None,
        frames_off: int | None = None,
    ) -> list[TrialRecord]:
        """Show ``order`` (stimulus ids) one trial each; return a record per trial.

        Parameters
        ----------
        stimuli
            Image by stimulus id: (size_px, size_px) luminance in [0, 1] (floats,
            or uint8 0–255), row 0 at the top, ``size_px`` from the rig.
        order
            Stimulus ids in presentation order (repeats allowed).
        frames_on, frames_off
            Image and blank durations in frames; default: the timing given to `open`.

        Raises
        ------
        PresenterError
            If an id has no image, an image has the wrong shape or values, a
            duration is not a positive whole number of frames, or the presenter is
            not open.
        """
        return list(self.iter_block(stimuli, order, frames_on=frames_on, frames_off=frames_off))

    def iter_block(
        self,
        stimuli: Mapping[int, np.ndarray],
        order: Sequence[int],
        *,
        frames_on: int | None = None,
        frames_off: int | None = None,
    ) -> Iterator[TrialRecord]:
        """Like `show_block`, one trial per iteration (everything is checked before the first)."""
        rig, timing = self._require_open()
        on = _frames("frames_on", timing.stimulus_frames if frames_on is None else frames_on)
        off = _frames("frames_off", timing.blank_frames if frames_off is None else frames_off)
        ids = [int(i) for i in order]
        images = {i: check_image(i, stimuli.get(i), rig.stimulus.size_px) for i in dict.fromkeys(ids)}
        return self._trials(ids, images, on, off)

    def close(self) -> None:
        """Close the display; safe to call twice."""
        if self.rig is not None:
            self.rig = self.timing = None
            self._close()

    @property
    def is_open(self) -> bool:
        return self.rig is not None

    def __enter__(self) -> Presenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- for subclasses ----------------------------------------------------------------

    @abstractmethod
    def _open(self, rig: Rig) -> None:
        """Open the display (raise `PresenterError` with a fix when impossible)."""

    @abstractmethod
    def _begin_block(self, images: Mapping[int, np.ndarray]) -> None:
        """Prepare the block's checked images and get in step with the display's frames."""

    @abstractmethod
    def _show_trial(self, stimulus_id: int, frames_on: int, frames_off: int) -> TrialTiming:
        """Show one trial; return its timing."""

    @abstractmethod
    def _close(self) -> None:
        """Release the display."""

    # --- internals -------------------------------------------------------------------------

    def _require_open(self) -> tuple[Rig, FrameTiming]:
        if self.rig is None or self.timing is None:
            raise PresenterError(f"{self.name}: not open; call open(rig, timing) first")
        return self.rig, self.timing

    def _trials(self, ids: list[int], images: dict[int, np.ndarray], on: int, off: int) -> Iterator[TrialRecord]:
        self._begin_block(images)
        for trial, stimulus_id in enumerate(ids):
            timing = self._show_trial(stimulus_id, on, off)
            yield TrialRecord(
                stimulus_id,
                trial,
                timing.flip_time,
                timing.offset_time,
                on,
                timing.dropped_frames,
                timing.frame_intervals,
            )


def _frames(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise PresenterError(f"{name} must be a whole number of frames >= 1, got {value!r}")
    return int(value)


def check_image(stimulus_id: int, image: object, size_px: int) -> np.ndarray:
    """An image as float64 luminance in [0, 1], or a `PresenterError` saying what is wrong."""
    if image is None:
        raise PresenterError(f"stimulus {stimulus_id} has no image; send its pixels with the block")
    array = np.asarray(image)
    if array.shape != (size_px, size_px):
        raise PresenterError(
            f"stimulus {stimulus_id}: image is {array.shape} but the rig's stimulus.size_px is {size_px} "
            f"(expected ({size_px}, {size_px}))"
        )
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    if array.dtype.kind not in "fiu":
        raise PresenterError(f"stimulus {stimulus_id}: image dtype {array.dtype} is not numeric")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise PresenterError(f"stimulus {stimulus_id}: image has NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise PresenterError(
            f"stimulus {stimulus_id}: values span [{low:.3g}, {high:.3g}] but must lie in [0, 1] "
            "(fractions of the display's range)"
        )
    return array
