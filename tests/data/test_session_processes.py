"""A session file shared between processes: a live reader, a killed writer, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from closedloop.data.session import SessionReader, SessionWriter
from closedloop.errors import DataFileError

from .session_child import N_FULL, N_STIMULI, block_content, stimulus_pixels

CHILD = Path(__file__).with_name("session_child.py")


def _expected_tables(n_blocks):
    blocks = [block_content(i) for i in range(n_blocks)]
    return {
        "stimulus_id": np.concatenate([b["stimulus_ids"] for b in blocks]),
        "onset_s": np.concatenate([b["onsets_s"] for b in blocks]),
        "spike_unit": np.concatenate([b["spike_unit_ids"] for b in blocks]),
        "spike_time": np.concatenate([b["spike_times_s"] for b in blocks]),
    }


def _assert_first_blocks_intact(path, n_blocks):
    with SessionReader(path) as reader:
        assert reader.n_blocks == n_blocks
        expected = _expected_tables(n_blocks)
        np.testing.assert_array_equal(reader.trials["stimulus_id"], expected["stimulus_id"])
        np.testing.assert_array_equal(reader.trials["onset_s"], expected["onset_s"])
        np.testing.assert_array_equal(reader.spikes["unit_id"], expected["spike_unit"])
        np.testing.assert_array_equal(reader.spikes["time_s"], expected["spike_time"])
        assert reader.responses.shape == (n_blocks * N_STIMULI, 4)
        np.testing.assert_array_equal(reader.stimulus_pixels, stimulus_pixels())


def _resume_and_append(path, n_blocks):
    with SessionWriter.resume(path) as writer:
        assert writer.n_blocks == n_blocks and writer.n_trials == n_blocks * N_STIMULI
        assert writer.append_block("natural", **block_content(n_blocks)) == n_blocks
    _assert_first_blocks_intact(path, n_blocks + 1)
    with SessionReader(path) as reader:
        repeats = reader.trials["repeat"].reshape(n_blocks + 1, N_STIMULI)
        np.testing.assert_array_equal(repeats[-1], n_blocks)  # repeat counts carried over


def test_reader_in_another_process_sees_blocks_grow(tmp_path):
    path = tmp_path / "live.h5"
    reader_code = textwrap.dedent(
        f"""
        import json, time
        from closedloop.data.session import SessionReader
        reader = SessionReader({str(path)!r})
        state = lambda: (reader.n_blocks, reader.n_trials, int(reader.spikes.size))
        seen, deadline = [state()], time.monotonic() + 30
        print("open", flush=True)
        while time.monotonic() < deadline:
            reader.refresh()
            if seen[-1][0] != reader.n_blocks:
                seen.append(state())
            if reader.n_blocks == 5:
                break
            time.sleep(0.01)
        print(json.dumps(seen), flush=True)
        """
    )
    with SessionWriter(path, **_session_kwargs()) as writer:
        writer.add_stimuli(stimulus_pixels(), "natural")
        child = subprocess.Popen([sys.executable, "-c", reader_code], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "open"
            for index in range(5):
                writer.append_block("natural", **block_content(index))
                time.sleep(0.15)
            out, _ = child.communicate(timeout=30)
        finally:
            child.kill()
    seen = json.loads(out)
    blocks_seen = [n for n, _, _ in seen]
    assert blocks_seen[0] == 0 and blocks_seen[-1] == 5
    assert len(blocks_seen) >= 3 and blocks_seen == sorted(blocks_seen)
    for n, trials, spikes in seen:  # never a half-committed block
        assert trials == n * N_STIMULI and spikes == n * 400


def _session_kwargs():
    from .session_child import session_kwargs

    return session_kwargs()


def test_writer_killed_mid_block_keeps_committed_blocks_and_resumes(tmp_path):
    path = tmp_path / "killed.h5"
    child = subprocess.run(
        [sys.executable, str(CHILD), "partial", str(path)], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout.strip() == "partial"
    _assert_first_blocks_intact(path, N_FULL)  # the half block is invisible
    # The kill left HDF5's "open for write" flags set, so resume goes through recovery.
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r+", libver="latest")
    _resume_and_append(path, N_FULL)
    assert not path.with_name(path.name + ".recovering").exists()


def test_writer_killed_at_a_random_moment(tmp_path):
    path = tmp_path / "racing.h5"
    child = subprocess.Popen([sys.executable, str(CHILD), "blocks", str(path)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(4):  # let it commit a few blocks, then kill it while it keeps writing
            child.stdout.readline()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    with SessionReader(path) as reader:
        n_blocks = reader.n_blocks
    assert n_blocks >= 4
    _assert_first_blocks_intact(path, n_blocks)
    _resume_and_append(path, n_blocks)


def test_truncated_file_of_a_killed_writer_is_an_error_not_a_hang(tmp_path):
    path = tmp_path / "killed.h5"
    subprocess.run([sys.executable, str(CHILD), "partial", str(path)], capture_output=True, timeout=60)
    cut = tmp_path / "cut.h5"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    started = time.monotonic()
    with pytest.raises(DataFileError, match="truncated"):
        SessionReader(cut)
    with pytest.raises(DataFileError, match="truncated"):
        SessionWriter.resume(cut)
    assert time.monotonic() - started < 10


def _append_in_another_process(path, index):
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(CHILD.parent)!r})
        from session_child import block_content
        from closedloop.data.session import SessionWriter
        with SessionWriter.resume({str(path)!r}) as writer:
            writer.append_block("natural", **block_content({index}))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_open_reader_follows_a_resumed_session(tmp_path):
    path = tmp_path / "followed.h5"
    subprocess.run([sys.executable, str(CHILD), "partial", str(path)], capture_output=True, timeout=60)
    with SessionReader(path) as reader:  # opened on the killed file (SWMR)
        assert reader.n_blocks == N_FULL
        _append_in_another_process(path, N_FULL)  # recovery replaces the file
        reader.refresh()
        assert reader.n_blocks == N_FULL + 1
    with SessionReader(path) as reader:  # a closed session opens without SWMR
        _append_in_another_process(path, N_FULL + 1)
        reader.refresh()
        assert reader.n_blocks == N_FULL + 2
    _assert_first_blocks_intact(path, N_FULL + 2)


def test_resume_in_the_process_that_reads_is_a_clear_error(tmp_path):
    path = tmp_path / "s.h5"
    with SessionWriter(path, **_session_kwargs()):
        pass
    with SessionReader(path):
        with pytest.raises(DataFileError, match="close the SessionReader first"):
            SessionWriter.resume(path)
