"""`closedloop demo` end to end, shrunk: the closed loop in simulation and its report against the truth."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from closedloop.cli import main

from .helpers import N_UNITS, PROTOCOL, RIG, SCENARIO


def _tiny(tmp_path):
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO.format(n_units=N_UNITS))
    rig = tmp_path / "rig.yaml"
    rig.write_text(RIG.format(scenario=scenario))
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(PROTOCOL.format(top_k=2, iterations=1))
    return rig, protocol


def test_demo_runs_the_loop_and_reports_against_the_ground_truth(tmp_path, capsys):
    rig, protocol = _tiny(tmp_path)
    out = tmp_path / "demo"
    status = main(
        [
            "demo",
            "--out",
            str(out),
            "--rig",
            str(rig),
            "--protocol",
            str(protocol),
            "--device",
            "cpu",
            "--json",
            str(out / "demo.json"),
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "model v1: held-out r" in printed and "iteration 1" in printed and "true" in printed
    for produced in ("demo.h5", "demo.runner.jsonl", "loop.png", "models/model_v001.pt"):
        assert (out / produced).exists(), produced
    summary = json.loads((out / "demo.json").read_text())
    assert len(summary["report"]["iterations"]) == 1


@pytest.mark.slow
def test_demo_with_the_psychopy_presenter_under_xvfb(tmp_path):
    # No display: the demo starts Xvfb itself for the PsychoPy window.  A fresh process, as a
    # user runs it (pyglet keeps the first display a process opened).
    rig, protocol = _tiny(tmp_path)
    environment = {key: value for key, value in os.environ.items() if key != "DISPLAY"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "closedloop.cli",
            "demo",
            "--out",
            str(tmp_path / "demo"),
            "--rig",
            str(rig),
            "--protocol",
            str(protocol),
            "--presenter",
            "psychopy",
            "--device",
            "cpu",
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "under Xvfb" in done.stdout and (tmp_path / "demo" / "loop.png").exists()
