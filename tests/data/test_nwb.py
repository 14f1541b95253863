"""NWB export: a session round-trips through pynwb, and bad input never leaves a file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import datetime, UTC
from pathlib import Path

import h5py
import numpy as np
import pynwb
import pytest
from pynwb import NWBHDF5IO

from closedloop.cli import main
from closedloop.data import nwb
from closedloop.data.nwb import BEING_WRITTEN, CLOSED, WRITER_STOPPED, export_nwb, writer_state
from closedloop.data.session import SessionReader, SessionWriter
from closedloop.errors import DataFileError
from closedloop.sim.archive import ArchiveSpec, make_archive

from .session_child import N_FULL, block_content, session_kwargs, stimulus_pixels

CHILD = Path(__file__).with_name("session_child.py")
SPEC = ArchiveSpec(layout="session", seed=4, n_units=5, n_images=4, n_repeats=2)


@pytest.fixture(scope="module")
def session_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nwb") / "session.h5"
    make_archive(path, SPEC)
    return path


@pytest.fixture(scope="module")
def exported(session_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("nwb_out") / "session.nwb"
    summary = export_nwb(session_file, out)
    return summary, out


def _session(path):
    with SessionReader(path) as reader:
        return nwb.read_contents(reader)


def test_spike_times_per_unit_equal_the_sessions(session_file, exported):
    _, out = exported
    session = _session(session_file)
    with NWBHDF5IO(str(out), "r") as io:
        units = io.read().units
        np.testing.assert_array_equal(units.id[:], session.unit_ids)
        for row, unit in enumerate(session.unit_ids):
            expected = np.sort(session.spikes["time_s"][session.spikes["unit_id"] == unit])
            np.testing.assert_array_equal(units["spike_times"][row], expected)
        np.testing.assert_array_equal(units["channel"][:], session.channels)
        electrode_ids = io.read().electrodes.id[:]
        for row, channel in enumerate(session.channels):
            np.testing.assert_array_equal(units["electrodes"][row].index, [channel])
            assert electrode_ids[list(electrode_ids).index(channel)] == channel
        assert units["simulated_type"][0] == session.metadata["unit_types"][0]


def test_trials_match_presentations_and_blocks(session_file, exported):
    _, out = exported
    session = _session(session_file)
    trials = session.trials
    with NWBHDF5IO(str(out), "r") as io:
        nwbfile = io.read()
        table = nwbfile.trials
        np.testing.assert_array_equal(table["start_time"][:], trials["onset_s"])
        # 6 frames at the simulated rig's 60 Hz
        np.testing.assert_allclose(table["stop_time"][:] - table["start_time"][:], 0.1, atol=1e-12)
        for column, name in [
            ("stimulus_id", "stimulus_id"),
            ("block", "block"),
            ("repeat", "repeat"),
            ("dropped_frames", "dropped_frames"),
            ("n_frames", "n_frames"),
            ("flip_time", "flip_s"),
        ]:
            np.testing.assert_array_equal(table[column][:], trials[name])
        kinds = np.array(table["stimulus_kind"][:])
        assert set(kinds) == {"natural", "grating"}
        assert not np.any(table["block_flagged"][:])
        blocks = nwbfile.intervals["blocks"]
        np.testing.assert_array_equal(blocks.id[:], session.blocks["index"])
        assert list(blocks["block_kind"][:]) == ["natural"] * 2 + ["grating"] * 2
        np.testing.assert_array_equal(blocks["start_time"][:], trials["onset_s"][session.blocks["trial_start"]])
        sync = nwbfile.events["sync"]
        np.testing.assert_array_equal(sync["timestamp"][:], session.sync["time_s"])
        np.testing.assert_array_equal(sync["state"][:], session.sync["state"])
        np.testing.assert_array_equal(sync["line"][:], session.sync["line"])


def test_images_are_the_stimulus_pixels(session_file, exported):
    _, out = exported
    session = _session(session_file)
    with NWBHDF5IO(str(out), "r") as io:
        nwbfile = io.read()
        presentations = nwbfile.stimulus["stimulus_presentations"]
        np.testing.assert_array_equal(presentations.data[:], session.trials["stimulus_id"])
        np.testing.assert_array_equal(presentations.timestamps[:], session.trials["onset_s"])
        ordered = presentations.indexed_images.order_of_images
        assert len(ordered) == session.stimuli.size
        for index in (0, 3, session.stimuli.size - 1):
            np.testing.assert_array_equal(ordered[index].data[:], session.pixels[index])
        shown = session.trials["stimulus_id"][7]
        np.testing.assert_array_equal(ordered[int(presentations.data[7])].data[:], session.pixels[shown])
        stimuli = nwbfile.stimulus["stimuli"]
        np.testing.assert_array_equal(stimuli.id[:], session.stimuli["id"])
        np.testing.assert_array_equal(stimuli["orientation_deg"][:], session.stimuli["orientation_deg"])


def test_responses_and_metadata(session_file, exported):
    summary, out = exported
    session = _session(session_file)
    with NWBHDF5IO(str(out), "r") as io:
        nwbfile = io.read()
        table = nwbfile.processing["responses"]["trial_responses"]
        np.testing.assert_array_equal(table["rates"][:], session.responses)
        np.testing.assert_array_equal(table["trial"].data[:], np.arange(session.trials.size))
        np.testing.assert_allclose(table["window_start_time"][:], session.trials["onset_s"] + 0.05)
        assert nwbfile.session_id == session.session_id
        assert nwbfile.session_start_time == datetime.fromisoformat(session.created_utc)
        assert nwbfile.session_start_time.tzinfo is not None
        for text in (session.rig_yaml, session.protocol_yaml, json.dumps(session.seeds, sort_keys=True)):
            assert text in nwbfile.notes
    assert pynwb.validate(path=str(out)) == []
    assert (summary.n_units, summary.n_trials, summary.n_stimuli, summary.n_blocks) == (
        5,
        session.trials.size,
        session.stimuli.size,
        4,
    )
    assert summary.n_spikes == session.spikes.size and summary.writer_state == CLOSED


def test_flagged_blocks_unknown_channels_and_protocol_timing(tmp_path):
    """A hand-made session: a flagged block, a unit without a channel, no frame counts."""
    path = tmp_path / "s.h5"
    kwargs = {
        **session_kwargs(),
        "channels": np.array([3, -1, 2, 3]),
        "protocol_yaml": "timing:\n  stimulus_ms: 150\n",
        "rig_yaml": "name: bench\n",
    }
    with SessionWriter(path, **kwargs) as writer:
        writer.add_stimuli(stimulus_pixels(), "natural")
        writer.add_stimuli(
            stimulus_pixels()[:1],
            "synthesized",
            unit_id=12,
            target_hz=30.0,
            model_version=2,
            spread_hz=4.5,
            start_stimulus_id=3,
        )
        for index in range(2):
            content = block_content(index)
            del content["n_frames"]
            writer.append_block("natural", flag="photodiode_mismatch" if index == 1 else "none", **content)
    export_nwb(path, tmp_path / "s.nwb")
    with NWBHDF5IO(str(tmp_path / "s.nwb"), "r") as io:
        nwbfile = io.read()
        trials = nwbfile.trials
        np.testing.assert_array_equal(trials["block_flagged"][:], np.repeat([False, True], 6))
        assert list(trials["block_flag"][:]) == ["none"] * 6 + ["photodiode_mismatch"] * 6
        np.testing.assert_allclose(trials["stop_time"][:] - trials["start_time"][:], 0.15)
        assert list(nwbfile.intervals["blocks"]["flag"][:]) == ["none", "photodiode_mismatch"]
        units = nwbfile.units
        assert list(nwbfile.electrodes.id[:]) == [2, 3]
        assert [list(units["electrodes"][row].index) for row in range(4)] == [[3], [], [2], [3]]
        stimuli = nwbfile.stimulus["stimuli"]
        assert stimuli["kind"][6] == "synthesized" and stimuli["unit_id"][6] == 12
        assert stimuli["target_hz"][6] == 30.0 and stimuli["model_version"][6] == 2
        assert stimuli["spread_hz"][6] == 4.5 and np.isnan(stimuli["spread_hz"][0])
        assert stimuli["start_stimulus_id"][6] == 3 and stimuli["start_stimulus_id"][0] == -1
        assert "achieved_hz" not in stimuli.colnames  # all NaN: left out
    assert pynwb.validate(path=str(tmp_path / "s.nwb")) == []


def test_a_session_still_being_written_exports_its_committed_blocks(tmp_path):
    path = tmp_path / "live.h5"
    with SessionWriter(path, **session_kwargs()) as writer:
        just_started = export_nwb(path, tmp_path / "empty.nwb")  # nothing committed yet
        assert (just_started.n_trials, just_started.n_stimuli, just_started.n_units) == (0, 0, 4)
        assert pynwb.validate(path=str(tmp_path / "empty.nwb")) == []
        writer.add_stimuli(stimulus_pixels(), "natural")
        for index in range(2):
            writer.append_block("natural", **block_content(index))
        assert writer_state(path) == BEING_WRITTEN
        summary = export_nwb(path, tmp_path / "live.nwb")
    assert writer_state(path) == CLOSED
    assert summary.writer_state == BEING_WRITTEN and summary.n_blocks == 2 and summary.n_trials == 12
    assert "still being written" in summary.text() and "2 committed blocks" in summary.text()
    with NWBHDF5IO(str(tmp_path / "live.nwb"), "r") as io:
        assert len(io.read().trials) == 12


def test_a_killed_writer_exports_its_committed_blocks_only(tmp_path):
    path = tmp_path / "killed.h5"
    child = subprocess.run(
        [sys.executable, str(CHILD), "partial", str(path)], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == -signal.SIGKILL and child.stdout.strip() == "partial"
    assert writer_state(path) == WRITER_STOPPED
    summary = export_nwb(path, tmp_path / "killed.nwb")
    assert summary.n_blocks == N_FULL and summary.n_trials == 6 * N_FULL
    assert summary.n_spikes == 400 * N_FULL  # the half-written block's spikes are left out
    assert "stopped without closing" in summary.text()


# ------------------------------------------------------------------------------ CLI
def test_cli_end_to_end_with_json(session_file, tmp_path, capsys):
    out, report = tmp_path / "cli.nwb", tmp_path / "summary.json"
    assert main(["export-nwb", str(session_file), str(out), "--json", str(report)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wrote {out}") and "5 units" in lines[0]
    summary = json.loads(report.read_text())
    assert summary["n_units"] == 5 and summary["n_blocks"] == 4 and summary["out"] == str(out)
    assert summary["writer_state"] == CLOSED
    # --overwrite replaces it; without it the existing file is refused and kept
    before = out.read_bytes()
    assert main(["export-nwb", str(session_file), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["export-nwb", str(session_file), str(out), "--overwrite"]) == 0
    with NWBHDF5IO(str(out), "r") as io:
        assert len(io.read().units) == 5


def _bad_inputs(tmp_path: Path, session_file: Path) -> dict:
    text = tmp_path / "notes.txt"
    text.write_text("not a session\n")
    other_hdf5 = tmp_path / "other.h5"
    with h5py.File(other_hdf5, "w") as file:
        file["x"] = np.arange(3)
    truncated = tmp_path / "truncated.h5"
    data = session_file.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return {
        "missing": (tmp_path / "missing.h5", tmp_path / "out.nwb", "missing.h5", "does not exist"),
        "not hdf5": (text, tmp_path / "out.nwb", "notes.txt", "not an HDF5 file"),
        "not a session": (other_hdf5, tmp_path / "out.nwb", "other.h5", "not a closedloop session"),
        "truncated": (truncated, tmp_path / "out.nwb", "truncated.h5", "truncated"),
        "missing folder": (session_file, tmp_path / "nowhere" / "out.nwb", "nowhere", "does not exist"),
        "out is the session": (session_file, session_file, session_file.name, "session file itself"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "not hdf5", "not a session", "truncated", "missing folder", "out is the session"]
)
def test_bad_input_is_exit_2_with_a_clear_message_and_no_file(case, session_file, tmp_path, capsys):
    session, out, named, says = _bad_inputs(tmp_path, session_file)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["export-nwb", str(session), str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("closedloop export-nwb: error:") and named in err and says in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no OUT, no temporary file
    assert session_file.exists()


def test_a_failed_write_leaves_no_file_and_keeps_the_old_one(session_file, tmp_path, monkeypatch):
    out = tmp_path / "out.nwb"
    out.write_bytes(b"previous export")

    def fail(self, *args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(NWBHDF5IO, "write", fail)
    with pytest.raises(DataFileError, match="out.nwb: cannot be written .*No space left"):
        export_nwb(session_file, out, overwrite=True)
    assert out.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nwb"]


def test_start_time_and_duration_fallbacks():
    assert nwb.session_start_time("2025-03-04T10:00:00", "2025-03-04T09:00:00+00:00") == datetime(
        2025, 3, 4, 10, tzinfo=UTC
    )  # the runner's start time, no offset: UTC
    assert nwb.session_start_time(None, "2025-03-04T09:00:00+01:00").utcoffset().seconds == 3600
    trials = np.zeros(3, dtype=[("n_frames", np.int32)])
    trials["n_frames"] = [12, -1, 6]
    durations, source = nwb.stimulus_durations(
        trials, {"display": {"refresh_hz": 120}}, {"timing": {"stimulus_ms": 100}}
    )
    np.testing.assert_allclose(durations, [0.1, 0.1, 0.05])
    assert "protocol timing.stimulus_ms" in source and "120 Hz" in source
    durations, source = nwb.stimulus_durations(trials, {}, {})
    np.testing.assert_array_equal(durations, 0.0)
    assert "unknown" in source


def test_unreadable_rig_yaml_is_exported_verbatim(tmp_path):
    path = tmp_path / "s.h5"
    rig = "display: {refresh_hz: 60\n  - broken: [\n"
    with SessionWriter(path, **{**session_kwargs(), "rig_yaml": rig}) as writer:
        writer.add_stimuli(stimulus_pixels()[:2], "natural")
        writer.append_block("natural", stimulus_ids=[0, 1], onsets_s=[1.0, 2.0], n_frames=[6, 6])
    summary = export_nwb(path, tmp_path / "s.nwb")
    assert "unknown" in summary.stimulus_durations
    with NWBHDF5IO(str(tmp_path / "s.nwb"), "r") as io:
        assert rig in io.read().notes
