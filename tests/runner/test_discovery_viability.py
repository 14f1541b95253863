"""Unit discovery, late units and the stop rules of a real rig, piece by piece."""

from __future__ import annotations

import time

import numpy as np

from closedloop.config import load_rig
from closedloop.runner.discovery import LateUnits, describe, listen_for_units, unit_metadata
from closedloop.runner.viability import Viability

EXAMPLE = "rigs/example_openephys.yaml"


def test_listening_returns_every_unit_heard_with_progress_lines(monkeypatch):
    monkeypatch.setattr("closedloop.runner.discovery.PROGRESS_EVERY_S", 0.02)
    heard = [np.array([3001, 20_001_002]), np.array([3001, 100_003_001])]
    lines: list[str] = []
    listening = listen_for_units(lambda: np.concatenate(heard), 0.1, lines.append)
    try:
        while True:
            next(listening)
            time.sleep(0.01)
    except StopIteration as done:
        units = done.value
    assert units.tolist() == [3001, 20_001_002, 100_003_001]
    assert lines[0].startswith("listening 0.1 s") and "3 units so far" in lines[1] and "found 3 units" in lines[-1]


def test_late_units_are_reported_once_by_their_open_ephys_name():
    rig = load_rig(EXAMPLE)
    lines: list[str] = []
    late = LateUnits(rig, np.array([3001]), lines.append)
    assert late.check(np.array([3001, 3001])) == []
    assert late.check(np.array([20_002_001, 3001])) == [20_002_001]
    assert late.check(np.array([20_002_001])) == [] and late.late == [20_002_001]
    assert len(lines) == 1 and "Tetrode 2, sorted 1" in lines[0] and "spikes are stored" in lines[0]
    assert describe(rig, 3001).startswith("unit 3001 (Electrode 3, sorted 1")
    rows = unit_metadata(rig, np.array([3001]))["unit_sources"]["units"]
    assert rows == [
        {
            "unit_id": 3001,
            "stream": "(the stream the photodiode TTL arrives on)",
            "electrode": "Electrode 3",
            "sorted_id": 1,
        }
    ]


def test_stop_rules_photodiode_timeout_and_every_block_flagged():
    watch = Viability(photodiode_line=1, photodiode_timeout_s=0.05)
    assert watch.waiting(None, 0) == ""  # no trial reported yet
    first = time.monotonic()
    assert watch.waiting(first, 0) == ""
    time.sleep(0.06)
    reason = watch.waiting(first, 0)
    assert "no photodiode edge on TTL line 1 within 0.05 s" in reason and "acquisition.photodiode_line" in reason
    seen = Viability(photodiode_line=1, photodiode_timeout_s=0.05)
    assert seen.waiting(first, 1) == "" and seen.waiting(first - 10, 0) == ""  # an edge came once: fine
    assert seen.block_done(True, "photodiode: 0 edges") == ""  # one flagged block is not yet a pattern
    assert "all 2 presentation blocks so far were flagged" in seen.block_done(True, "photodiode: 0 edges")
    mixed = Viability(1, 1.0)
    assert mixed.block_done(False, "") == "" and mixed.block_done(True, "x") == "" and mixed.block_done(True, "x") == ""
