"""Components for the supervisor tests (importable by spawned processes)."""

from __future__ import annotations

import time
from pathlib import Path

from closedloop.runtime import Component


class Recorder(Component):
    """Steps every ``period_s``; appends "setup NAME" / "teardown NAME" lines to ``log_path``.

    ``fail_after`` steps: raise in step; ``done_after`` steps: return False;
    ``teardown_s``: how long teardown takes before it logs.
    """

    def __init__(
        self,
        name: str,
        log_path: str,
        *,
        period_s: float = 0.01,
        fail_after: int | None = None,
        done_after: int | None = None,
        fail_in: str = "step",
        heartbeat_interval_s: float = 0.05,
        teardown_s: float = 0.0,
    ):
        super().__init__(name, heartbeat_interval_s=heartbeat_interval_s)
        self.log_path = log_path
        self.period_s = period_s
        self.fail_after = fail_after
        self.done_after = done_after
        self.fail_in = fail_in
        self.teardown_s = teardown_s
        self.steps = 0

    def _log(self, what: str) -> None:
        with Path(self.log_path).open("a") as f:
            f.write(f"{what} {self.name}\n")

    def setup(self) -> None:
        self._log("setup")
        if self.fail_in == "setup":
            raise RuntimeError(f"{self.name} could not open its device")

    def step(self) -> bool | None:
        time.sleep(self.period_s)
        self.steps += 1
        if self.fail_after is not None and self.steps >= self.fail_after:
            raise ValueError(f"bad spike batch in {self.name}")
        if self.done_after is not None and self.steps >= self.done_after:
            return False
        return None

    def teardown(self) -> None:
        time.sleep(self.teardown_s)
        self._log("teardown")


class Crasher(Component):
    """Kills its own process without a word (a segfault, an OOM kill)."""

    def step(self) -> bool | None:
        import os

        time.sleep(0.05)
        os._exit(3)


class Stuck(Component):
    """A step that blocks far longer than its heartbeat interval, then finishes."""

    def __init__(self, name: str, block_s: float):
        super().__init__(name, heartbeat_interval_s=0.05)
        self.block_s = block_s

    def step(self) -> bool | None:
        time.sleep(self.block_s)
        return False
