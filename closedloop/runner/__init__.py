"""Protocol execution: blocks, photodiode alignment, responses, the session file, resume (docs/architecture.md).

- `Runner`: the component that runs a protocol on a rig (`closedloop.runner.runner`).
- `RunnerSettings`: how long it waits for what (its sockets: `closedloop.transport.Endpoints`).
- `Plan`, `trial_order`: the protocol unrolled into steps, seeded trial orders.
- `align_onsets`: photodiode edges ↔ presenter reports.
- `journal_path`, `Journal`, `BlockRecord`: the runner's per-block record next to the session file.

A whole loop is assembled in `closedloop.loop`; reports on a session are in `closedloop.reports`.
Names are imported on first use (`closedloop.lazy`): reading the journal loads no component.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from closedloop.lazy import lazy_exports

if TYPE_CHECKING:  # the names as mypy reads them; at run time each is imported on first use
    from closedloop.runner.alignment import align_onsets as align_onsets, Alignment as Alignment
    from closedloop.runner.journal import BlockRecord as BlockRecord, Journal as Journal, journal_path as journal_path
    from closedloop.runner.plan import Plan as Plan, PlannedStep as PlannedStep, trial_order as trial_order
    from closedloop.runner.runner import Runner as Runner
    from closedloop.runner.settings import RunnerSettings as RunnerSettings
    from closedloop.runner.targets import check_protocol_units as check_protocol_units


_EXPORTS = {
    "Alignment": "closedloop.runner.alignment",
    "align_onsets": "closedloop.runner.alignment",
    "BlockRecord": "closedloop.runner.journal",
    "Journal": "closedloop.runner.journal",
    "journal_path": "closedloop.runner.journal",
    "Plan": "closedloop.runner.plan",
    "PlannedStep": "closedloop.runner.plan",
    "trial_order": "closedloop.runner.plan",
    "Runner": "closedloop.runner.runner",
    "RunnerSettings": "closedloop.runner.settings",
    "check_protocol_units": "closedloop.runner.targets",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
