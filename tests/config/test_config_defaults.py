"""Defaults every component reads from the config objects: the onset sync line, the window in seconds."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from config_helpers import ROOT, write_variant  # noqa: E402

from closedloop.config import load_protocol, load_rig  # noqa: E402
from closedloop.config.rig import PHOTODIODE_LINE  # noqa: E402


def test_onset_line_is_the_rigs_photodiode_line_else_the_default(tmp_path):
    sim = load_rig(ROOT / "rigs/sim.yaml")
    assert sim.acquisition.photodiode_line is None and sim.acquisition.onset_line == PHOTODIODE_LINE == 1
    named = load_rig(write_variant(tmp_path, "rigs/example_openephys.yaml", {"acquisition.photodiode_line": 4}))
    assert named.acquisition.onset_line == 4


def test_response_window_in_seconds(tmp_path):
    protocol = load_protocol(write_variant(tmp_path, "protocols/demo.yaml", {"response.window_ms": [40, 120]}))
    assert protocol.response.window_s == (0.04, 0.12)
