"""Progress of a long command, told as stages with counts: a tqdm bar on a terminal,
periodic log lines otherwise (so a job's log shows the command is alive).  A stage that
reports nothing for a while (one long call, such as writing a big file) still gets a
"still ..." line, or a refreshed bar, every ``every_s`` seconds."""

from __future__ import annotations

import sys
import threading
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
        and its end, always get a line); a silent stage gets a "still" line this often.
    """

    def __init__(self, stream: TextIO | None = None, *, bars: bool | None = None, every_s: float = 5.0):
        self.stream = stream or sys.stderr
        self.bars = bool(getattr(self.stream, "isatty", lambda: False)()) if bars is None else bars
        self.every_s = every_s
        self.started = time.monotonic()
        self._stage: str | None = None
        self._stage_started = self.started
        self._bar = None
        self._last = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            if self._ticker is None:
                self._ticker = threading.Thread(target=self._tick, name="stage-progress", daemon=True)
                self._ticker.start()
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
        self._end_bar()
        self._stage, self._stage_started = stage, time.monotonic()
        if self.bars:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=stage, file=self.stream, leave=False)
        else:
            self._line(f"{stage} ...")
            self._last = time.monotonic()

    def _tick(self) -> None:
        while not self._stop.wait(self.every_s / 2):
            with self._lock:
                now = time.monotonic()
                if self._stage is None or now - self._last < self.every_s:
                    continue
                if self._bar is not None:
                    self._bar.refresh()  # the bar's clock moves on
                else:
                    self._line(f"{self._stage}: still working ({now - self._stage_started:.0f} s in this step)")
                    self._last = now

    def _line(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.0f} s] {text}", file=self.stream, flush=True)

    def _end_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        """End the current bar and stop the "still" lines."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=1.0)
        with self._lock:
            self._end_bar()
