"""A session file under failing writes, damage and repair: nothing committed is lost, nothing bad committed."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import types

import h5py
import numpy as np
import pytest

from closedloop.cli import main
from closedloop.data.session import SessionReader, SessionWriter
from closedloop.data.session_integrity import check_committed
from closedloop.data.session_repair import repair_session
from closedloop.data.session_space import StorageError, describe_error, session_bytes
from closedloop.errors import DataFileError
from closedloop.runner import journal as journal_module
from closedloop.runner.journal import BlockRecord, Journal, journal_path, read_records
from closedloop.runner.resume import check_resumable

from .session_child import N_FULL, N_STIMULI, block_content, session_kwargs, stimulus_pixels

CHILD = os.path.join(os.path.dirname(__file__), "session_child.py")


def _session(path, n_blocks: int, journal: bool = True):
    with SessionWriter(path, **session_kwargs()) as writer:
        writer.add_stimuli(stimulus_pixels(), "natural")
        for index in range(n_blocks):
            writer.append_block("natural", **block_content(index))
    if journal:
        log = Journal(journal_path(path))
        for index in range(n_blocks):
            log.append(BlockRecord(index, index, f"blocks[{index}]", "natural", "finished", model_version=index))
    return path


class _DroppingFile:
    """An h5py file whose writes to one dataset never reach it (as a lost chunk write would)."""

    def __init__(self, file: h5py.File, dropped: str):
        self._file, self._dropped = file, dropped

    def __getitem__(self, name):
        dataset = self._file[name]
        return _Dropped(dataset) if name == self._dropped else dataset

    def __getattr__(self, name):
        return getattr(self._file, name)


class _Dropped:
    def __init__(self, dataset):
        self.dataset = dataset

    def resize(self, *args, **kwargs):
        self.dataset.resize(*args, **kwargs)

    def __setitem__(self, key, value):
        pass  # lost on the way to the disk

    def __getitem__(self, key):
        return self.dataset[key]


def test_a_failed_write_commits_nothing_and_stops_the_writer(tmp_path):
    path = _session(tmp_path / "s.h5", 1, journal=False)
    writer = SessionWriter.resume(path)

    def full_disk():
        raise RuntimeError(
            "Unable to synchronously flush file (file write failed: time = now\n, errno = 28, "
            "error message = 'No space left on device', buf = 0x0)"
        )

    writer._file.flush = full_disk
    with pytest.raises(StorageError) as caught:
        writer.append_block("natural", **block_content(1))
    text = str(caught.value)
    assert "\n" not in text and "writing block 1 failed: No space left on device (errno 28)" in text
    assert " free on its filesystem" in text and "block 0 is committed and readable" in text
    with pytest.raises(StorageError):  # HDF5's state after a failed write is not trusted: no more writes
        writer.add_stimuli(stimulus_pixels()[:1], "natural")
    assert writer.failure is caught.value
    writer.close()
    with SessionReader(path) as reader:
        assert reader.n_blocks == 1 and len(reader.stimuli) == N_STIMULI
        assert check_committed(reader).ok
    with SessionWriter.resume(path) as writer:  # after making room the session goes on
        assert writer.append_block("natural", **block_content(1)) == 1


def test_a_block_whose_data_did_not_reach_the_file_is_never_committed(tmp_path):
    path = _session(tmp_path / "s.h5", 1, journal=False)
    writer = SessionWriter.resume(path)
    real = writer._file
    writer._file = _DroppingFile(real, "spikes/time_s")
    with pytest.raises(StorageError, match="spikes/time_s read back differently"):
        writer.append_block("natural", **block_content(1))
    writer._file = real
    writer.close()
    with SessionReader(path) as reader:
        assert reader.n_blocks == 1 and check_committed(reader).ok


def test_a_failed_journal_write_leaves_whole_lines(tmp_path, monkeypatch):
    log = Journal(tmp_path / "s.runner.jsonl")
    log.append(BlockRecord(0, 0, "blocks[0]", "natural", "finished"))

    def half_then_full(fd, data):
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(journal_module, "os", types.SimpleNamespace(**{**vars(os), "write": half_then_full}))
    with pytest.raises(StorageError, match="record of block 1 failed: No space left on device"):
        log.append(BlockRecord(1, 1, "blocks[1]", "fit", "finished"))
    monkeypatch.undo()
    assert log.path.read_text().count("\n") == 1 and log.path.read_text().endswith("\n")
    log.append(BlockRecord(1, 1, "blocks[1]", "fit", "finished"))
    log.retract_last()  # its block could not be written: the record goes too
    assert [r.session_block for r in read_records(log.path)] == [0]


def _spoil(path, block: int):
    """What an older writer left on a full disk: a committed block whose spikes read back as fill values."""
    with h5py.File(path, "r+") as file:
        start = int(file["blocks/spike_start"][block])
        file["spikes/time_s"][start : start + 5] = np.nan
        file["spikes/unit_id"][start : start + 5] = -1


def test_committed_never_written_data_is_refused_and_repair_keeps_what_is_before_it(tmp_path, capsys):
    path = _session(tmp_path / "s.h5", 3)
    _spoil(path, 1)
    with SessionReader(path, check_values=False) as reader:
        integrity = check_committed(reader)
    assert integrity.good_blocks == 1 and "5 spikes with a NaN time" in integrity.text()
    assert main(["export-nwb", str(path), str(tmp_path / "s.nwb")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "never written" in err and "closedloop repair" in err
    assert not (tmp_path / "s.nwb").exists()
    with pytest.raises(DataFileError, match="cannot be resumed.*closedloop repair"):
        check_resumable(path)
    out = tmp_path / "fixed.h5"
    assert main(["repair", str(path), str(out)]) == 0
    assert "1 of 3 committed blocks" in capsys.readouterr().out
    with h5py.File(out, "r") as file:  # plain h5py
        assert int(file["blocks/committed"][()].sum()) == 1
    with SessionReader(out) as reader:
        assert reader.n_blocks == 1 and check_committed(reader).ok
        np.testing.assert_array_equal(reader.spikes["time_s"], block_content(0)["spike_times_s"])
    assert [r.session_block for r in read_records(journal_path(out))] == [0]
    assert check_resumable(out) == 1  # the copy can be resumed; versions go on after the last recorded
    assert main(["repair", str(path), str(out)]) == 2  # never overwrites without being told


def test_repair_of_a_killed_writer_makes_a_file_plain_h5py_opens(tmp_path):
    path = tmp_path / "killed.h5"
    child = subprocess.run(
        [sys.executable, CHILD, "partial", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    with pytest.raises(OSError):
        h5py.File(path, "r")  # HDF5's "open for write" flag is still set
    report = repair_session(path, tmp_path / "copy.h5")
    assert report.kept_blocks == N_FULL and report.uncommitted_rows.get("trials", 0) > 0  # the half block
    with h5py.File(tmp_path / "copy.h5", "r") as file:
        assert file["trials/stimulus_id"].shape == (N_FULL * N_STIMULI,)


def test_resume_checks_say_what_is_wrong_and_versions_go_on(tmp_path):
    path = _session(tmp_path / "s.h5", 3)
    assert check_resumable(path) == 3  # journal versions 0, 1, 2
    journal_path(path).unlink()
    with pytest.raises(DataFileError, match="journal s.runner.jsonl is missing"):
        check_resumable(path)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(DataFileError, match="is truncated.*copy the whole file again"):
        check_resumable(cut)


def test_error_text_and_size_estimate():
    h5_text = (
        "Can't synchronously write data (file write failed: time = Fri\n, filename = 's.h5', errno = 28, "
        "error message = 'No space left on device', buf = 0x1)"
    )
    assert describe_error(OSError(28, h5_text)) == "No space left on device (errno 28)"
    assert describe_error(OSError(errno.EIO, "Input/output error")) == "Input/output error (errno 5)"
    small = session_bytes(
        n_units=10, stimulus_shape=(66, 66), n_stimuli=20, n_trials=40, n_spikes=1, n_sync=80, n_blocks=3
    )
    assert small > 20 * 66 * 66 * 4 + 65536 * 16  # one spike already takes a whole chunk of spike rows
