"""A disk that fills up during `closedloop run`: nothing committed is lost, nothing bad is committed.

The run (rigs/sim.yaml, a tiny protocol) writes to a small tmpfs, which is made full
at one of three points: the first block, the synthesized images in mid-session, and
the journal record of a block.  Each time the run must stop with one line naming the
file, the error and the free space, exit 2 (never a crash), and leave a session file
whose committed blocks are all readable and hold no NaN or placeholder data, with a
journal record for exactly those blocks.  After making room, ``--resume`` finishes it.

A tmpfs needs root (CI runs as root); otherwise the same failures are injected as
ENOSPC into HDF5's flush or the journal's write.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest

from closedloop.cli import main
from closedloop.config import load_protocol, load_rig
from closedloop.data.session import SessionReader
from closedloop.data.session_format import StimulusKind
from closedloop.data.session_space import free_bytes
from closedloop.runner.journal import journal_path, read_records
from closedloop.runner.session_size import estimate_session

from .disk_filler import FILLER, fill

REPO = Path(__file__).resolve().parents[2]
PROTOCOL = """\
name: disk-full
seed: 3
timing: {stimulus_ms: 100, blank_ms: 200}
response: {window_ms: [50, 100]}
images: {source: photographs, n: 20, seed: 1}
fit: {max_epochs: 5, patience: 2}
synthesis:
  units: {top_k: 2}
  targets: [p50, max]
  steps: 5
  images_per_target: 1
  seed: 4
blocks:
  - {kind: natural, images: all, repeats: 2}
  - {kind: fit}
  - {kind: synthesize}
  - {kind: present_synthesized, repeats: 2}
  - {kind: natural, images: 10, repeats: 1}
  - {kind: natural, images: 10, repeats: 1}
"""


@pytest.fixture
def disk(tmp_path):
    """(folder on a 16 MB tmpfs, "fill"), or (a plain folder, "inject") when no tmpfs can be mounted."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = False
    wanted = os.environ.get("CLOSEDLOOP_TEST_DISK_FULL", "fill") == "fill"  # "inject": test the fallback as root
    if wanted and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount"):
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=16m", f"disk-full-{uuid.uuid4().hex[:8]}", str(folder)],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )
    try:
        yield folder, "fill" if mounted else "inject"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def _run(tmp_path: Path, folder: Path, mode: str, where: str, n: int, *args: str) -> subprocess.CompletedProcess:
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(PROTOCOL)
    command = [
        sys.executable,
        "-m",
        "tests.faults.disk_filler",
        mode,
        str(folder),
        where,
        str(n),
        "--",
        "run",
        str(protocol),
        "--rig",
        "rigs/sim.yaml",
        "--inproc",
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _check_committed_part(session: Path, n_blocks: int | None) -> None:
    """Exactly ``n_blocks`` (None: any number) committed, each complete and real, and a record for each."""
    with SessionReader(session) as reader:
        blocks, spikes, stimuli = reader.blocks, reader.spikes, reader.stimuli
        n_blocks = len(blocks) if n_blocks is None else n_blocks
        assert len(blocks) == n_blocks
        assert np.all(np.isfinite(spikes["time_s"]))
        assert np.all(np.isin(spikes["unit_id"], reader.unit_ids))
        assert np.all(np.isfinite(reader.stimulus_pixels)) and np.all(stimuli["id"] == np.arange(len(stimuli)))
        trials = reader.trials
        assert np.all(np.isfinite(trials["onset_s"])) and np.all(trials["stimulus_id"] < len(stimuli))
        for block in blocks[blocks["flagged"] == 0]:
            assert np.all(np.isfinite(reader.responses[block["trial_start"] : block["trial_stop"]]))
    journal = journal_path(session)  # every line whole: read_records refuses a cut one
    records = read_records(journal) if journal.exists() else []
    assert [record.session_block for record in records] == list(range(n_blocks))
    with h5py.File(session, "r"):  # plain h5py opens it, no h5clear needed
        pass


def _check_stopped_cleanly(result: subprocess.CompletedProcess, session: Path, what: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr  # not a signal (a segfault is -11)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one line: the file, the error and the free space
    last = lines[-1]
    assert last.startswith("closedloop run: error: ") and str(session.parent) in last, last
    assert f"writing {what} failed: No space left on device" in last and " free on its filesystem" in last, last
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    "where, what",
    [("block", "block 0"), ("stimuli", "stimuli 0-19")],
    ids=["first block", "natural images at the start"],
)
def test_disk_full_at_the_first_block_commits_nothing_and_says_so(tmp_path, disk, where, what):
    folder, mode = disk
    session = folder / "s.h5"
    result = _run(tmp_path, folder, mode, where, 0, "--session", str(session))
    _check_stopped_cleanly(result, session, what)
    _check_committed_part(session, 0)


def test_disk_full_at_the_synthesized_images_keeps_earlier_blocks_and_resumes(tmp_path, disk, monkeypatch):
    folder, mode = disk
    monkeypatch.chdir(REPO)  # rigs/sim.yaml names its scenario relative to the repository
    session = folder / "s.h5"
    # add_stimuli call 0 stores the natural images, call 1 the synthesized ones (after natural and fit)
    result = _run(tmp_path, folder, mode, "stimuli", 1, "--session", str(session))
    _check_stopped_cleanly(result, session, "stimuli 20-23")
    _check_committed_part(session, 2)
    with SessionReader(session) as reader:
        assert len(reader.stimuli) == 20  # the synthesized images never got in
    fitted = max(r.model_version for r in read_records(journal_path(session)))
    assert fitted >= 1
    (folder / FILLER).unlink(missing_ok=True)  # make room, then continue where it stopped
    resumed = _run(tmp_path, folder, mode, "block", 10**6, "--resume", str(session))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _check_committed_part(session, None)
    steps = [r.step for r in read_records(journal_path(session)) if r.advances and r.step >= 0]
    assert steps == [0, 1, 2, 3, 4, 5], steps  # every protocol step once
    protocol = load_protocol(tmp_path / "protocol.yaml")
    estimate = estimate_session(load_rig("rigs/sim.yaml"), protocol)
    assert session.stat().st_size + journal_path(session).stat().st_size <= estimate.bytes  # an upper estimate
    with SessionReader(session) as reader:  # the resumed run's models are new versions, not v1 again
        synthesized = reader.stimuli[reader.stimuli["kind"] == StimulusKind.SYNTHESIZED]
    assert synthesized.size and np.all(synthesized["model_version"] > fitted), synthesized["model_version"]


def test_disk_full_at_the_journal_keeps_whole_lines_and_no_uncommitted_block(tmp_path, disk):
    folder, mode = disk
    session = folder / "s.h5"
    # the second journal line that needs a new page of the file: one of the later blocks
    result = _run(tmp_path, folder, mode, "journal", 1, "--session", str(session))
    match = re.search(r"the runner journal's record of block (\d+)", result.stderr)
    assert match, result.stdout + result.stderr
    block = int(match.group(1))
    _check_stopped_cleanly(result, journal_path(session), match.group(0))
    assert block >= 1
    _check_committed_part(session, block)


def test_a_run_the_disk_cannot_hold_does_not_start(tmp_path, disk, monkeypatch, capsys):
    folder, mode = disk
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(PROTOCOL)
    monkeypatch.chdir(REPO)  # rigs/sim.yaml names its scenario relative to the repository
    estimate = estimate_session(load_rig("rigs/sim.yaml"), load_protocol(protocol))
    assert main(["validate", "rigs/sim.yaml", str(protocol), "--json", str(tmp_path / "v.json")]) == 0
    assert estimate.text() in capsys.readouterr().out
    assert json.loads((tmp_path / "v.json").read_text())["session_bytes"] == estimate.bytes
    if mode == "fill":  # leave a little less room than the estimate
        fill(folder)
        (folder / FILLER).unlink()
        with open(folder / FILLER, "wb") as filler:
            filler.truncate(0)
            filler.write(bytes(max(0, free_bytes(folder) - estimate.bytes + 100_000)))
    else:
        monkeypatch.setattr("closedloop.runner.session_size.free_bytes", lambda _: estimate.bytes - 100_000)
    session = folder / "s.h5"
    assert main(["run", str(protocol), "--rig", "rigs/sim.yaml", "--inproc", "--session", str(session)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "free, but this session needs up to" in err and str(folder) in err, err
    assert not session.exists()
