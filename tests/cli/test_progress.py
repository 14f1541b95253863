"""Progress: stage lines when not on a terminal, and late heartbeats that say what is going on."""

from __future__ import annotations

import io
import logging
import threading
import time

from closedloop.commands.stage_progress import StageProgress
from closedloop.runtime import Supervisor
from closedloop.runtime.component import Component


def test_stage_progress_writes_lines_off_a_terminal():
    stream = io.StringIO()
    progress = StageProgress(stream, every_s=3600)
    for done in range(5):
        progress("simulating blocks", done, 4)
    progress("writing", 1, 1)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "simulating blocks ...",
        "simulating blocks: 4/4",
        "writing ...",
        "writing: 1/1",
    ]


def test_a_silent_stage_still_gets_lines():
    stream = io.StringIO()
    progress = StageProgress(stream, every_s=0.1)
    progress("writing the MATLAB file", 0, 1)
    time.sleep(0.45)
    progress.close()
    assert stream.getvalue().count("writing the MATLAB file: still working") >= 2


class _Slow(Component):
    """One step that blocks for a while, as a starved or stuck component would."""

    def __init__(self, name: str, block_s: float):
        super().__init__(name, heartbeat_interval_s=0.05)
        self.block_s = block_s
        self.done = threading.Event()

    def step(self):
        time.sleep(self.block_s)
        self.done.set()
        return False


class _Fitting(Component):
    def __init__(self):
        super().__init__("model-server", heartbeat_interval_s=0.05)
        self.activity = "fitting model v1, epoch 120/300"

    def step(self):
        time.sleep(0.01)


def test_a_late_heartbeat_names_what_the_busy_components_are_doing(caplog):
    slow = _Slow("sim-array", 0.8)
    supervisor = Supervisor([_Fitting(), slow], mode="thread", heartbeat_timeout_s=0.3)
    with caplog.at_level(logging.WARNING, logger="closedloop.runtime.supervisor"):
        supervisor.run(timeout_s=1.5)
    late = [r.getMessage() for r in caplog.records if "no heartbeat" in r.getMessage()]
    assert late and "'sim-array'" in late[0]
    assert "while model-server is fitting model v1, epoch 120/300" in late[0]
    assert "may be blocked" not in late[0]
