"""Package layering: reading the runner's journal loads no component of the loop."""

from __future__ import annotations

import subprocess
import sys

_CHECK = """
import sys
import {module}
loaded = sorted(m for m in sys.modules if m.startswith(("closedloop.acquisition", "closedloop.present",
                                                       "closedloop.sim", "closedloop.loop", "torch")))
print(",".join(loaded))
"""


def _loaded_by(module: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _CHECK.format(module=module)], capture_output=True, text=True, check=True
    ).stdout.strip()
    return out.split(",") if out else []


def test_the_journal_reader_loads_no_acquisition_presenter_simulator_or_torch():
    assert _loaded_by("closedloop.runner.journal") == []
    assert _loaded_by("closedloop.reports.summary") == []


def test_the_runner_component_loads_neither_the_loop_assembly_nor_torch():
    loaded = _loaded_by("closedloop.runner.runner")
    assert not [m for m in loaded if not m.startswith("closedloop.acquisition")], loaded
    assert "closedloop.acquisition.sim_array" not in loaded and "closedloop.acquisition.buffer" in loaded
