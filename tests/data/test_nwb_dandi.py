"""NWB exports that DANDI accepts: `nwbinspector --config dandi` finds nothing critical and no
best-practice violation, for a session the runner recorded on the simulated rig, a replayed pvc-8
archive and an Open Ephys session with a flagged block (with and without the units' recorded sources);
what cannot go in is left out with the reason."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from nwbinspector import Importance, inspect_nwbfile, load_config
from pynwb import NWBHDF5IO

from closedloop.cli import main
from closedloop.data.nwb import export_nwb
from closedloop.data.session import SessionWriter
from closedloop.errors import ConfigError

SUBJECT = """\
session:
  experimenter: ["Doe, Jane"]
  subject: {subject_id: M7, species: Macaca fascicularis, sex: M, age: P4Y}
"""

REPLAY_RIG = """\
name: bench
display: {width_px: 1920, height_px: 1080, width_cm: 53.1, height_cm: 29.9, distance_cm: 57, refresh_hz: 60}
acquisition: {kind: replay, archive: /data/pvc8/01.mat}
session: {institution: Example University, lab: Example Lab}
"""

OPENEPHYS_RIG = """\
name: rig2
display: {width_px: 1920, height_px: 1080, width_cm: 53.1, height_cm: 29.9, distance_cm: 57, refresh_hz: 120}
acquisition: {kind: openephys, sample_rate_hz: 30000, photodiode_line: 1}
session:
  description: V1 recording, closed loop
  institution: Example University
  lab: Example Lab
  location: V1
  subject: {subject_id: M8, species: Macaca mulatta, sex: F, age: P5Y/P7Y}
"""


def problems(path: Path) -> list[str]:
    """What `nwbinspector --config dandi` reports as CRITICAL or BEST_PRACTICE_VIOLATION."""
    found = inspect_nwbfile(nwbfile_path=str(path), config=load_config("dandi"))
    serious = (Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION, Importance.ERROR)
    return [f"{m.importance.name} {m.check_function_name}: {m.message}" for m in found if m.importance in serious]


def _writer(path: Path, rig_yaml: str, unit_ids, channels, metadata: dict | None = None) -> SessionWriter:
    return SessionWriter(
        path,
        session_id="dandi-test",
        unit_ids=np.asarray(unit_ids),
        channels=np.asarray(channels),
        stimulus_shape=(16, 16),
        response_window_s=(0.05, 0.1),
        rig_yaml=rig_yaml,
        protocol_yaml="name: p\ntiming: {stimulus_ms: 100, blank_ms: 200}\n",
        seeds={"protocol": 1},
        metadata=metadata,
    )


def test_a_session_recorded_on_the_simulated_rig(tmp_path):
    from tests.runner.helpers import RIG, SCENARIO

    (tmp_path / "scenario.yaml").write_text(SCENARIO.format(n_units=6))
    # the scenario is named relative to the rig file; the run starts elsewhere
    rig = tmp_path / "rig.yaml"
    rig.write_text(RIG.format(scenario="scenario.yaml") + SUBJECT)
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(
        "name: nat\nseed: 1\ntiming: {stimulus_ms: 100, blank_ms: 200}\n"
        "images: {source: photographs, n: 6, seed: 1}\nfit: {max_epochs: 2, patience: 1}\n"
        "blocks:\n  - {kind: natural, images: all, repeats: 2}\n"
        "  - {kind: gratings, set: orientation, repeats: 1}\n"
        "session: {description: natural images and gratings on the simulated rig}\n"
    )
    session, out = tmp_path / "run.h5", tmp_path / "run.nwb"
    assert main(["run", str(protocol), "--rig", str(rig), "--inproc", "--session", str(session)]) == 0
    summary = export_nwb(session, out)
    assert summary.warnings == [] and summary.n_trials_left_out == 0
    assert problems(out) == []
    with NWBHDF5IO(str(out), "r") as io:
        nwbfile = io.read()
        assert nwbfile.subject.subject_id == "M7" and nwbfile.experimenter == ("Doe, Jane",)
        assert nwbfile.session_description == "natural images and gratings on the simulated rig"
        assert 0 < nwbfile.units.resolution < 1e-9  # continuous-time simulated spikes
        assert "orientation_deg" in nwbfile.stimulus["stimuli"].colnames


def test_a_replayed_pvc8_archive_with_metadata_from_a_file(tmp_path):
    path = tmp_path / "replay.h5"
    with _writer(path, REPLAY_RIG, [1, 2, 3], [4, 5, 6]) as writer:
        writer.add_stimuli(np.full((3, 16, 16), 0.5, np.float32), "natural")
        onsets = 1.0 + 0.3 * np.arange(6)
        # spikes at the centres of 1 ms bins: two in one bin of unit 1
        times = np.array([1.0605, 1.0605, 1.0715, 1.3625, 1.6555, 2.5705])
        writer.append_block(
            "natural",
            stimulus_ids=np.tile([0, 1, 2], 2),
            onsets_s=onsets,
            flip_s=np.full(6, np.nan),
            spike_unit_ids=np.array([1, 1, 2, 3, 1, 2]),
            spike_times_s=times,
            sync_times_s=onsets,
            sync_lines=np.ones(6, np.int32),
            sync_states=np.ones(6, np.int8),
            responses_hz=np.ones((6, 3), np.float32),
        )
    meta = tmp_path / "meta.yaml"
    meta.write_text(SUBJECT)
    out = tmp_path / "replay.nwb"  # the extension is added
    assert (
        main(
            [
                "export-nwb",
                str(path),
                str(tmp_path / "replay"),
                "--metadata",
                str(meta),
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    assert problems(out) == []
    from closedloop.data.output_files import current_umask

    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~current_umask()  # readable by the lab, not 0600
    with NWBHDF5IO(str(out), "r") as io:
        nwbfile = io.read()
        assert nwbfile.units.resolution == 0.001 and nwbfile.institution == "Example University"
        assert nwbfile.subject.species == "Macaca fascicularis"
        assert "flip_time" not in nwbfile.trials.colnames  # all NaN: left out
    assert json.loads((tmp_path / "s.json").read_text())["warnings"] == []


#: Units on two streams that both have an "Electrode 1" (``closedloop.acquisition.openephys_units``).
SOURCES = [
    (1001, "Acquisition Board", "Electrode 1", 1),
    (100_001_002, "Record Node 102/ProbeA", "Electrode 1", 2),
    (3000, "Acquisition Board", "Electrode 3", 0),
]


@pytest.mark.parametrize("journal, sources", [(False, False), (True, False), (False, True)])
def test_an_open_ephys_session_with_a_flagged_block_on_the_presenter_clock(tmp_path, journal, sources):
    path = tmp_path / "oe.h5"
    units = [unit for unit, *_ in SOURCES] if sources else [1001, 1002, 3000]
    metadata = {"runner": {"journal": "oe.runner.jsonl"}} if journal else {}
    if sources:  # as the runner records them (`closedloop.runner.discovery.unit_metadata`)
        metadata["unit_sources"] = {
            "rule": "...",
            "units": [{"unit_id": u, "stream": s, "electrode": e, "sorted_id": k} for u, s, e, k in SOURCES],
        }
    with _writer(path, OPENEPHYS_RIG, units, [-1, -1, -1], metadata) as writer:
        writer.add_stimuli(np.full((4, 16, 16), 0.5, np.float32), "natural")
        for index, (onsets, flag) in enumerate(
            [
                (45.0 + 0.3 * np.arange(4), "none"),
                (3187.0 + 0.3 * np.arange(4), "photodiode_mismatch"),
                (48.0 + 0.3 * np.arange(4), "none"),
            ]
        ):
            start = 45.0 + 1.5 * index
            rates = np.full((4, 3), np.nan if flag != "none" else 2.0, np.float32)
            writer.append_block(
                "natural",
                stimulus_ids=np.arange(4),
                onsets_s=onsets,
                flip_s=onsets - 0.01,
                spike_unit_ids=np.array(units * 3),
                spike_times_s=start + np.linspace(0, 1, 9),
                responses_hz=rates,
                flag=flag,
            )
    if journal:
        write_journal(path, {0: "photodiode", 1: "estimated: presenter flip times (no clock offset known)"})
    out = tmp_path / "oe.nwb"
    summary = export_nwb(path, out)
    assert summary.n_trials_left_out == 4 and "presenter" in summary.text()
    assert problems(out) == []
    with NWBHDF5IO(str(out), "r") as io:
        nwbfile = io.read()
        np.testing.assert_array_equal(nwbfile.trials.id[:], [0, 1, 2, 3, 8, 9, 10, 11])
        assert nwbfile.trials["start_time"][:].max() < 50  # every time on the acquisition clock
        blocks = nwbfile.intervals["blocks"]
        assert blocks["onset_clock"][1].startswith("presenter clock")
        assert np.all(np.diff(blocks["start_time"][:]) > 0)
        if sources:
            check_unit_sources(nwbfile)
        else:
            np.testing.assert_array_equal(nwbfile.units["channel"][:], [1, 1, 3])  # electrode × 1000 + sorted id
            assert sorted(nwbfile.electrode_groups) == ["electrode1", "electrode3"]
            assert "stream" not in nwbfile.units.colnames
        assert nwbfile.units.resolution == pytest.approx(1 / 30000)
        assert "sync" not in nwbfile.events  # no edge recorded: left out, and said so
        assert "left out: /events/sync" in nwbfile.notes and "left out: the trials of block 1" in nwbfile.notes


def check_unit_sources(nwbfile) -> None:
    """One electrode group per (stream, electrode) of `SOURCES`, and each unit's source in /units."""
    units = nwbfile.units
    assert list(units["stream"][:]) == [s for _, s, _, _ in SOURCES]
    assert list(units["electrode_name"][:]) == [e for _, _, e, _ in SOURCES]
    assert list(units["sorted_id"][:]) == [k for *_, k in SOURCES]
    names = [
        "Acquisition Board - Electrode 1",
        "Record Node 102-ProbeA - Electrode 1",  # no "/" in NWB names
        "Acquisition Board - Electrode 3",
    ]
    assert sorted(nwbfile.electrode_groups) == sorted(names)  # same electrode name, two streams: two groups
    assert [group.name for group in units["electrode_group"][:]] == names
    group = nwbfile.electrode_groups[names[1]]
    assert "'Electrode 1'" in group.description and "'Record Node 102/ProbeA'" in group.description
    assert [row["group_name"].item() for row in units["electrodes"][:]] == names  # one electrode per group


def write_journal(session: Path, onsets_by_block: dict[int, str]) -> None:
    """A runner journal beside ``session`` saying how each block's onsets were made."""
    from closedloop.runner.journal import BlockRecord

    lines = [
        BlockRecord(block, block, "", "natural", "flagged", onsets=how).to_json()
        for block, how in onsets_by_block.items()
    ]
    (session.parent / (session.stem + ".runner.jsonl")).write_text("\n".join(lines) + "\n")


def test_without_a_subject_the_export_warns_and_a_bad_metadata_file_is_refused(tmp_path):
    path = tmp_path / "bare.h5"
    with _writer(path, "name: bench\n", [1], [1]) as writer:
        writer.add_stimuli(np.full((1, 16, 16), 0.5, np.float32), "natural")
        writer.append_block("natural", stimulus_ids=np.zeros(1, int), onsets_s=np.ones(1))
    summary = export_nwb(path, tmp_path / "bare.nwb")
    assert any("no subject" in warning and "--metadata" in warning for warning in summary.warnings)
    bad = tmp_path / "bad.yaml"
    bad.write_text("session:\n  subject:\n    age: 4 years\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:3: session.subject.age: write an ISO 8601 duration"):
        export_nwb(path, tmp_path / "x.nwb", metadata=bad)
    assert not (tmp_path / "x.nwb").exists()


def test_output_files_honour_the_umask(tmp_path):
    from closedloop.data.output_files import write_via_temporary

    previous = os.umask(0o027)
    try:
        write_via_temporary(tmp_path / "a.bin", lambda p: p.write_bytes(b"x"))
    finally:
        os.umask(previous)
    write_via_temporary(tmp_path / "b.bin", lambda p: p.write_bytes(b"x"))
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o666 & ~previous
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
