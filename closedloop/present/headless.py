"""A presenter without a display: the same interface and records, exact frame times.

Simulation needs the presenter's reports, not its pixels: this presenter keeps a
virtual refresh grid at the rig's rate and reports every flip exactly on it (no
frame is ever dropped).  By default time is virtual and a block takes no wall time;
with ``realtime=True`` each flip waits for its slot on ``time.monotonic``, so a
simulated array driven by wall time sees stimuli when a real rig would show them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from closedloop.config.rig import Rig
from closedloop.present.base import Presenter, PresenterError, TrialTiming
from closedloop.present.pacing import FrameGrid


class HeadlessPresenter(Presenter):
    """Frame-exact presenter for simulation and tests (no PsychoPy, no window).

    Parameters
    ----------
    realtime
        Wait for each frame's time to come (``True``) or run as fast as possible.
    start_time
        Time of frame slot 0 on the presenter clock; default: ``time.monotonic()``
        when the presenter opens.
    """

    name = "headless presenter"

    def __init__(self, *, realtime: bool = False, start_time: float | None = None):
        super().__init__()
        self.realtime = realtime
        self.start_time = start_time
        self._grid: FrameGrid | None = None
        self._slot = -1  # the last frame slot flipped (virtual time)
        self._last_flip: float | None = None
        self.frames_flipped = 0

    def _open(self, rig: Rig) -> None:
        self._grid = FrameGrid(rig.display.refresh_hz, self.start_time)
        self._slot, self._last_flip, self.frames_flipped = -1, None, 0

    def _begin_block(self, images: Mapping[int, np.ndarray]) -> None:
        # A lead-in blank flip puts the block on the grid, as the PsychoPy presenter does.
        if self.realtime:
            self._slot = max(self._slot, self._open_grid().next_slot() - 1)
        self._flip()

    def _show_trial(self, stimulus_id: int, frames_on: int, frames_off: int) -> TrialTiming:
        previous = self._last_flip
        times = np.array([self._flip() for _ in range(frames_on + frames_off)])
        intervals = np.diff(np.concatenate([[previous], times]))
        return TrialTiming(float(times[0]), float(times[frames_on]), 0, intervals)

    def _close(self) -> None:
        self._grid = None

    def _open_grid(self) -> FrameGrid:
        if self._grid is None:
            raise PresenterError(f"{self.name}: not open")
        return self._grid

    def _flip(self) -> float:
        grid = self._open_grid()
        self._slot += 1
        flip_time = grid.slot_time(self._slot)
        if self.realtime:
            delay = flip_time - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self._last_flip = flip_time
        self.frames_flipped += 1
        return flip_time
