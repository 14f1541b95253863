"""Replay of an archived recording through the online pipeline, compared with offline fitting.

- `replay_archive`, `ReplayOptions`, `ReplayOutcome`: the whole replay (`closedloop.replay.pipeline`).
- `ReplayDriver`, `DriverSettings`: the passive driver component (the runner's part, no presenter).
- `read_plan`, `ArchivePlan`, `ReplayBlock`: an archive's blocks, trials, units and fitting images.
- `BlockRow`: one block's progress line; `closedloop.replay.summary` prints and draws them.
"""

from __future__ import annotations

from closedloop.replay.driver import DriverSettings, ReplayDriver
from closedloop.replay.pipeline import ReplayOptions, ReplayOutcome, prepare, replay_archive
from closedloop.replay.plan import ArchivePlan, ReplayBlock, read_plan
from closedloop.replay.rows import BlockRow

__all__ = [
    "ArchivePlan", "BlockRow", "DriverSettings", "ReplayBlock", "ReplayDriver", "ReplayOptions", "ReplayOutcome",
    "prepare", "read_plan", "replay_archive",
]
