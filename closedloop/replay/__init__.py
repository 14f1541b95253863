"""Replay of an archived recording through the online pipeline, compared with offline fitting.

- `replay_archive`, `ReplayOptions`, `ReplayOutcome`: the whole replay (`closedloop.replay.pipeline`).
- `ReplayDriver`, `DriverSettings`: the passive driver component (the runner's part, no presenter).
- `read_plan`, `ArchivePlan`, `ReplayBlock`: an archive's blocks, trials, units and fitting images.
- `BlockRow`: one block's progress line; `closedloop.replay.summary` prints and draws them.

Names are imported on first use (`closedloop.lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from closedloop.lazy import lazy_exports

if TYPE_CHECKING:  # the names as mypy reads them; at run time each is imported on first use
    from closedloop.replay.driver import DriverSettings as DriverSettings, ReplayDriver as ReplayDriver
    from closedloop.replay.pipeline import (
        prepare as prepare,
        replay_archive as replay_archive,
        ReplayOptions as ReplayOptions,
        ReplayOutcome as ReplayOutcome,
    )
    from closedloop.replay.plan import ArchivePlan as ArchivePlan, read_plan as read_plan, ReplayBlock as ReplayBlock
    from closedloop.replay.rows import BlockRow as BlockRow


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
