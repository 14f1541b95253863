"""How well the closed loop worked, iteration by iteration (docs/methods.md, Synthesis; benchmarks/README.md).

Read from a finished (or interrupted) session file and the runner's journal: for every
synthesize block that made images — one loop iteration — the model that made them and
the one refitted after their responses (held-out r, r/rmax), each image's unit, target,
the model's predicted ("achieved") rate, the measured mean rate over its presentations
and, given the simulated brain, its ground-truth expected rate.  Summaries say how
closely the measured (and true) rates followed the targets, how "max" images compare
with the unit's best natural image, whether the refit predicts the synthesized images
better than the model that made them, and the loop's turnaround from the journal's
timing (`closedloop.runner.journal.TIMES`).

The report's records are in `closedloop.reports.loop_types`, its numbers come from
`closedloop.reports.loop_numbers`; `LoopReport.text` and `LoopReport.figure` present them
(`closedloop.reports.loop_view`).
"""

from __future__ import annotations

import json
from pathlib import Path

from closedloop.errors import DataFileError
from closedloop.reports.loop_numbers import build_report
from closedloop.reports.loop_types import LoopReport


def loop_report(
    session_path: str | Path, brain=None, *, models_dir: str | Path | None = None, device: str = "cpu"
) -> LoopReport:
    """The loop report of a session (see module notes).

    Parameters
    ----------
    session_path
        The session ``.h5`` file; its journal ``NAME.runner.jsonl`` must be beside it.
    brain
        The simulated brain (`closedloop.acquisition.BrainSpec`, or a built spike
        source with ``expected_rates``) for ground-truth rates; ``None``: none.
    models_dir
        Where the model server saved every version (``model_vNNN.pt``: the server's
        ``out_dir``, ``closedloop run --model-out``), for the predictions of the refit
        on the synthesized images; ``None``: that comparison is left out.
    device
        Device the saved models predict on.

    Raises
    ------
    DataFileError
        The session file or journal cannot be read, or a saved model is damaged.
    """
    session_path = Path(session_path)
    if not session_path.is_file():
        raise DataFileError(session_path, "no such session file")
    return build_report(session_path, brain, None if models_dir is None else Path(models_dir), device)


def write_json(report: LoopReport, path: str | Path) -> Path:
    """``report.to_dict()`` as indented JSON."""
    path = Path(path)
    path.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return path
