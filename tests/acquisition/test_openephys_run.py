"""A whole `closedloop run` on an Open Ephys rig, against a stand-in GUI broadcasting two streams.

The stand-in is the simulated array broadcasting what a two-stream Open Ephys GUI sends
(`gui_layout`: the same electrode names on both streams, tetrodes, hardware counters not
starting at 0, JUCE's JSON, bool TTL states, 0-based lines), driven by the headless
presenter's trial reports.  The rig file is the shipped example, changed only in ports,
its second stream's offset, and a shorter unit discovery.
"""

from __future__ import annotations

import json

import h5py
import numpy as np

from closedloop.acquisition import BrainSpec, SimulatedArray
from closedloop.acquisition.openephys_broadcast import gui_layout
from closedloop.acquisition.openephys_units import UnitIds
from closedloop.cli import main
from closedloop.config import load_rig
from closedloop.runtime import Supervisor
from closedloop.transport import free_tcp_ports, random_tcp_endpoint

from .openephys_rig import openephys_rig

RATE = 30000.0
SCENARIO = """\
name: openephys-run-test
population:
  n_units: 10
  seed: 4
  fractions: {simple: 0.5, complex: 0.5}
  size_px: 66
  pixels_per_degree: 48.0
  aperture_diameter_px: 60.0
  spontaneous_hz: [20.0, 30.0]
  peak_hz: [40.0, 80.0]
  calibration_images: 48
"""
PROTOCOL = """\
name: openephys-run-test
seed: 3
timing:
  stimulus_ms: 100
  blank_ms: 100
response:
  window_ms: [50, 100]
images:
  source: photographs
  n: 6
  seed: 1
fit:
  max_epochs: 2
  patience: 1
blocks:
  - kind: natural
    images: all
    repeats: 2
  - kind: natural
    images: all
    repeats: 1
"""


def _run(tmp_path, rig_edits: dict[str, str], args: list[str]):
    """Run the protocol against the stand-in; (exit status, the layout it broadcast, session path).

    ``rig_edits`` replaces text in the rig file; ``args`` are added to ``closedloop run``.
    """
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    brain = BrainSpec(scenario=str(scenario), seed=1, size_px=66)
    layout = gui_layout(brain.build().channels)
    (start_a, start_b) = (layout.counter_start[s] for s in ("Acquisition Board", "Probe B"))
    event_port = free_tcp_ports(1)[0]
    rig_path = openephys_rig(
        tmp_path, event_port, streams=f'[{{name: "Probe B", offset_s: {(start_a - start_b) / RATE!r}}}]'
    )
    text = rig_path.read_text().replace("discover_units_s: 10", "discover_units_s: 3")
    for old, new in rig_edits.items():
        text = text.replace(old, new)
    rig_path.write_text(text)
    rig = load_rig(rig_path)
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(PROTOCOL)
    stand_in = SimulatedArray(
        random_tcp_endpoint(),
        rig.network.endpoint("stimulus"),
        brain,
        speed=1.0,
        # A real array records whatever the presenter's reports do; the stand-in places each trial
        # by its report, so it holds its stream back long enough for a report late on a loaded machine.
        emit_delay_s=0.5,
        refresh_hz=rig.display.refresh_hz,
        photodiode_line=1,  # wired to the GUI's line 1
        openephys_endpoint=f"tcp://127.0.0.1:{event_port}",
        sample_rate_hz=RATE,
        openephys_layout="gui",
        seed=2,
        block_endpoint=rig.network.endpoint("responses"),
    )
    supervisor = Supervisor([stand_in], mode="thread", setup_timeout_s=60)
    session = tmp_path / "s.h5"
    try:
        assert supervisor.start()
        status = main(
            [
                "run",
                str(protocol),
                "--rig",
                str(rig_path),
                "--session",
                str(session),
                "--presenter",
                "headless",
                "--timeout",
                "120",
                *args,
            ]
        )
    finally:
        assert supervisor.shutdown().ok  # the stand-in ran throughout
    return status, layout, session


def test_a_run_on_an_open_ephys_rig_finds_its_units_and_every_photodiode_edge(tmp_path, capsys):
    status, layout, session = _run(tmp_path, {}, [])
    captured = capsys.readouterr()
    out = captured.out
    assert status == 0, out + captured.err
    assert "listening 3 s for the units" in out and "found 10 units" in out
    with h5py.File(session, "r", locking=False) as file:
        flagged = file["blocks/flagged"][()]
        units = file["units/id"][()].tolist()
        metadata = json.loads(file.attrs["metadata_json"])
        sync = file["sync/line"][()], file["sync/state"][()]
        n_trials = file["trials/stimulus_id"].shape[0]
    assert not flagged.any() and n_trials == 18  # (a last block keeps what arrived after the protocol)
    assert int(np.sum((sync[0] == 1) & (sync[1] == 1))) == 18  # one photodiode edge per trial, GUI line 1
    names = UnitIds()
    sources = {
        names.unit_id(0 if stream == "Acquisition Board" else 1, electrode, sorted_id): (stream, electrode, sorted_id)
        for stream, electrode, sorted_id in zip(layout.streams, layout.electrodes, layout.sorted_ids)
    }
    assert units == sorted(sources) and len(set(units)) == 10  # every unit discovered, none merged
    assert {u // 100_000_000 for u in units} == {0, 1}  # both streams, same electrode names: distinct units
    assert any(u % 100_000_000 // 10_000_000 == 2 for u in units)  # a tetrode
    table = {row["unit_id"]: row for row in metadata["unit_sources"]["units"]}
    for unit, (stream, electrode, sorted_id) in sources.items():  # the session file names each unit's source
        assert (table[unit]["electrode"], table[unit]["sorted_id"]) == (electrode, sorted_id)
        assert table[unit]["stream"] == stream or stream == "Acquisition Board"  # the clock stream, learned


def test_a_run_whose_photodiode_never_arrives_stops_saying_which_keys_to_check(tmp_path, capsys, caplog):
    # The rig names TTL line 2, the photodiode is on line 1: no edge ever comes for the first block.
    status, _, session = _run(
        tmp_path,
        {"photodiode_line: 1 ": "photodiode_line: 2 ", "photodiode_timeout_s: 30": "photodiode_timeout_s: 2"},
        ["--units", "1-3"],
    )
    err = capsys.readouterr().err
    assert status == 2
    line = err.strip().splitlines()[-1]
    assert "no photodiode edge on TTL line 2 within 2 s of the first trial" in line
    assert "acquisition.photodiode_line" in line and "acquisition.clock_stream" in line
    # --units 1-3: none of them spike; the 10 that do are reported, and stored
    assert "10 unit(s) appeared after the session's units were fixed" in caplog.text
    with h5py.File(session, "r", locking=False) as file:  # what was recorded is kept, and flagged
        assert file["blocks/flagged"][0] != 0
