"""Protocol execution: blocks, photodiode alignment, responses, the session file, resume (DESIGN §1, §5).

- `Runner`: the component that runs a protocol on a rig (`closedloop.runner.runner`).
- `Endpoints`, `RunnerSettings`: where its sockets are and how long it waits.
- `simulated_components`, `run_until_done`: a whole loop on a simulated rig, as threads.
- `Plan`, `trial_order`: the protocol unrolled into steps, seeded trial orders.
- `align_onsets`: photodiode edges ↔ presenter reports.
- `journal_path`, `Journal`, `BlockRecord`: the runner's per-block record next to the session file.
"""

from __future__ import annotations

from closedloop.runner.alignment import Alignment, align_onsets
from closedloop.runner.journal import BlockRecord, Journal, journal_path
from closedloop.runner.local import LocalLoop, brain_units, run_until_done, simulated_brain, simulated_components
from closedloop.runner.plan import Plan, PlannedStep, trial_order
from closedloop.runner.runner import Runner
from closedloop.runner.settings import Endpoints, RunnerSettings
from closedloop.runner.targets import check_protocol_units

__all__ = [
    "Alignment", "BlockRecord", "Endpoints", "Journal", "LocalLoop", "Plan", "PlannedStep", "Runner",
    "RunnerSettings", "align_onsets", "brain_units", "check_protocol_units", "journal_path", "run_until_done",
    "simulated_brain", "simulated_components", "trial_order",
]
