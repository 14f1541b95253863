"""A refresh grid kept in software, for displays that do not wait for vertical blanking.

Xvfb (and a GPU driver with vsync off) returns from a buffer swap at once, so frames
would follow each other as fast as they render.  `FrameGrid` stands in for the
monitor's vertical blank: frame slots every ``1 / refresh_hz`` seconds from a start
time, and a frame that misses its slot waits for the next one — like a real display,
where a late frame shows one refresh later (a dropped frame) instead of shifting the
grid.
"""

from __future__ import annotations

import math
import time

# Sleep until this close to a slot, then spin: time.sleep overshoots by ~0.1 ms on Linux.
_SPIN_S = 0.0005


class FrameGrid:
    """Frame slots ``start + k / refresh_hz`` on the ``time.monotonic`` clock.

    Parameters
    ----------
    refresh_hz
        The display's refresh rate.
    start
        Time of slot 0 (default: now).
    """

    def __init__(self, refresh_hz: float, start: float | None = None):
        if refresh_hz <= 0:
            raise ValueError(f"refresh_hz must be positive, got {refresh_hz}")
        self.period = 1.0 / refresh_hz
        self.start = time.monotonic() if start is None else start
        self.last_slot = -1

    def slot_time(self, slot: int) -> float:
        return self.start + slot * self.period

    def next_slot(self, now: float | None = None) -> int:
        """The first slot after the last one used that has not passed at ``now``."""
        now = time.monotonic() if now is None else now
        due = math.ceil((now - self.start) / self.period - 1e-9)
        return max(self.last_slot + 1, due)

    def wait_for_next(self) -> float:
        """Sleep until the next free slot, mark it used and return its time."""
        slot = self.next_slot()
        target = self.slot_time(slot)
        remaining = target - time.monotonic()
        if remaining > _SPIN_S:
            time.sleep(remaining - _SPIN_S)
        while time.monotonic() < target:
            pass
        self.last_slot = slot
        return target
