"""Stopping a run on a real rig that cannot work, with the cause and the rig keys to check.

Two signs that nothing usable is being recorded: the first presentation block's
photodiode edges never arrive (``acquisition.photodiode_timeout_s`` after its first
trial was reported), or every presentation block so far is flagged (at least
`FLAGGED_LIMIT`).  Either stops the run; the runner then exits non-zero with this line.
"""

from __future__ import annotations

import time

KEYS = "acquisition.photodiode_line (the GUI's numbering: 1 = first line), acquisition.clock_stream"
FLAGGED_LIMIT = 2


class Viability:
    """Watches presentation blocks for the two signs (see module notes).

    Parameters
    ----------
    photodiode_line
        The line the runner takes photodiode edges from.
    photodiode_timeout_s
        How long after the first trial report the first edge may take.
    """

    def __init__(self, photodiode_line: int, photodiode_timeout_s: float):
        self.photodiode_line = int(photodiode_line)
        self.photodiode_timeout_s = float(photodiode_timeout_s)
        self.seen_edge = False
        self.blocks = 0
        self.flagged = 0

    def waiting(self, first_report_at: float | None, pending_edges: int) -> str:
        """While a block waits: the reason to stop, or ``""``."""
        if pending_edges:
            self.seen_edge = True
        if self.seen_edge or first_report_at is None:
            return ""
        if time.monotonic() - first_report_at <= self.photodiode_timeout_s:
            return ""
        return (
            f"no photodiode edge on TTL line {self.photodiode_line} within {self.photodiode_timeout_s:g} s of "
            f"the first trial: check the photodiode and its wiring, and the rig's {KEYS}, "
            "acquisition.photodiode_timeout_s"
        )

    def block_done(self, flagged: bool, detail: str) -> str:
        """After a presentation block: the reason to stop, or ``""``."""
        self.blocks += 1
        self.flagged += bool(flagged)
        if self.blocks < FLAGGED_LIMIT or self.flagged < self.blocks:
            return ""
        return (
            f"all {self.blocks} presentation blocks so far were flagged (last: {detail[:160]}): nothing usable "
            f"is being recorded; check the rig's {KEYS}, display.refresh_hz"
        )
