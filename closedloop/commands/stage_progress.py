"""Progress of a long command, told as stages with counts: a tqdm bar on a terminal,
periodic log lines otherwise (so a job's log shows the command is alive)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class StageProgress:
    """Call with ``(stage, done, total)`` as work advances; `close` when finished.

    Parameters
    ----------
    stream
        Where progress goes (default stderr, so stdout keeps only the results).
    bars
        tqdm bars (True), log lines (False) or bars only when ``stream`` is a terminal (None).
    every_s
        Without bars: at most one line per ``every_s`` within a stage (each new stage,
        and its end, always get a line).
    """

    def __init__(self, stream: TextIO | None = None, *, bars: bool | None = None, every_s: float = 5.0):
        self.stream = stream or sys.stderr
        self.bars = bool(getattr(self.stream, "isatty", lambda: False)()) if bars is None else bars
        self.every_s = every_s
        self.started = time.monotonic()
        self._stage: str | None = None
        self._bar = None
        self._last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self._begin(stage, total)
        if self._bar is not None:
            self._bar.n = done
            self._bar.refresh()
            return
        now = time.monotonic()
        if done >= total or now - self._last >= self.every_s:
            self._line(f"{stage}: {done}/{total}")
            self._last = now

    def _begin(self, stage: str, total: int) -> None:
        self.close()
        self._stage = stage
        if self.bars:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=stage, file=self.stream, leave=False)
        else:
            self._line(f"{stage} ...")
            self._last = time.monotonic()

    def _line(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.0f} s] {text}", file=self.stream, flush=True)

    def close(self) -> None:
        """End the current stage's bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
