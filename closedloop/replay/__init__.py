"""Replay of an archived recording through the online pipeline, compared with offline fitting.

- `replay_archive`, `ReplayOptions`, `ReplayOutcome`: the whole replay (`closedloop.replay.pipeline`).
- `ReplayDriver`, `DriverSettings`: the passive driver component (the runner's part, no presenter).
- `read_plan`, `ArchivePlan`, `ReplayBlock`: an archive's blocks, trials, units and fitting images.
- `BlockRow`: one block's progress line; `closedloop.replay.summary` prints and draws them.

Names are imported on first use (`closedloop.lazy`).
"""

from __future__ import annotations

from closedloop.lazy import lazy_exports

_EXPORTS = {
    "DriverSettings": "closedloop.replay.driver",
    "ReplayDriver": "closedloop.replay.driver",
    "ReplayOptions": "closedloop.replay.pipeline",
    "ReplayOutcome": "closedloop.replay.pipeline",
    "prepare": "closedloop.replay.pipeline",
    "replay_archive": "closedloop.replay.pipeline",
    "ArchivePlan": "closedloop.replay.plan",
    "ReplayBlock": "closedloop.replay.plan",
    "read_plan": "closedloop.replay.plan",
    "BlockRow": "closedloop.replay.rows",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
