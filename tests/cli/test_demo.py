"""`closedloop demo` end to end, shrunk: simulate, fit, synthesize, check against the truth."""

from __future__ import annotations

import json

from closedloop.cli import main

TINY_MODEL = """\
model:
  core_filters: [4]
  core_kernels: [5]
  dense_units: 16
  max_epochs: 20
  patience: 10
  stop_check_every: 5
"""


def test_demo_runs_every_step_and_reports_the_ground_truth(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_MODEL)
    out = tmp_path / "demo"
    status = main(["demo", "--out", str(out), "--population", "6", "--images", "40", "--repeats", "4",
                   "--config", str(config), "--top", "2", "--steps", "30", "--device", "cpu",
                   "--json", str(out / "demo.json")])
    printed = capsys.readouterr().out
    assert status == 0
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]"):
        assert step in printed
    for produced in ("sim_session.h5", "fit/model.pt", "fit/metrics.json", "fit/fig3.png", "library.h5",
                     "synthesized.png"):
        assert (out / produced).exists(), produced
    summary = json.loads((out / "demo.json").read_text())
    assert summary["archive"]["n_units"] == 6
    judged = summary["synthesis_vs_truth"]["units"]["all units"]
    assert judged["n_units"] == 2
    assert 0.0 <= judged["max_beats_best_natural"] <= 1.0
