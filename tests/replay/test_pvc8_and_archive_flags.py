"""A small pvc-8 file in blocks of N trials; session files with flagged, uncommitted or misaligned blocks."""

from __future__ import annotations

import shutil

import h5py
import numpy as np

from closedloop.data.pvc8 import read_pvc8
from closedloop.replay import ReplayOptions, replay_archive


def test_pvc8_replay_in_blocks_of_n_trials_fits_the_small_natural_images(archives, linear_protocol, rig):
    path = archives["pvc8"]
    recording = read_pvc8(path)
    outcome = replay_archive(path, linear_protocol, rig, ReplayOptions(device="cpu", block_trials=220, units="all"))
    n_trials = recording.n_stimuli * recording.n_repeats  # 448 stimuli × 3 repeats
    assert len(outcome.rows) == -(-n_trials // 220)
    assert [row.label for row in outcome.rows[:2]] == ["trials 0-219", "trials 220-439"]
    # only blocks holding small natural images (the first 32 stimuli of each repeat) are fitted
    fitted = [row.block for row in outcome.rows if row.state == "fitted"]
    assert fitted == [0, 2, 4] and outcome.final_version == 3
    assert [row.trials_so_far for row in outcome.rows if row.state == "fitted"] == [16, 32, 48]
    assert outcome.server.stimulus_size_px == 320  # the archive's images, whatever the rig says
    assert outcome.inputs.ok, outcome.inputs
    # ridge regression is deterministic: same data and split give the same model online and offline
    c = outcome.comparison
    assert np.allclose(c.online.r, c.offline.r, atol=1e-6, equal_nan=True)
    assert np.array_equal(c.online.unit_ids, recording.unit_ids)


def test_flagged_and_uncommitted_blocks_are_reported_and_left_out(archives, linear_protocol, rig, tmp_path):
    path = tmp_path / "flagged.h5"
    shutil.copy(archives["session"], path)
    with h5py.File(path, "r+") as file:
        blocks = file["blocks"]
        blocks["flagged"][1], blocks["flag_code"][1] = 1, 2  # dropped frames
        blocks["committed"][7] = 0  # the last grating block was never committed
    outcome = replay_archive(path, linear_protocol, rig, ReplayOptions(device="cpu"))
    assert len(outcome.rows) == 7
    row = outcome.rows[1]
    assert row.state == "flagged" and "flagged in the archive (dropped_frames)" in row.detail
    assert [r.version for r in outcome.rows[:4]] == [1, 0, 2, 3]
    assert any("1 uncommitted block(s)" in note for note in outcome.notes)
    assert any("flagged in the archive" in note for note in outcome.notes)
    assert outcome.inputs.ok  # the offline loader leaves the flagged block out too


def test_a_block_whose_photodiode_edges_do_not_match_is_flagged_and_the_replay_goes_on(
    archives, linear_protocol, rig, tmp_path
):
    path = tmp_path / "edge.h5"
    shutil.copy(archives["session"], path)
    with h5py.File(path, "r+") as file:
        start = int(file["blocks"]["sync_start"][2])
        file["sync"]["state"][start + 10] = 0  # a rising edge in block 2 lost
    outcome = replay_archive(path, linear_protocol, rig, ReplayOptions(device="cpu", max_blocks=4))
    assert [row.state for row in outcome.rows] == ["fitted", "fitted", "flagged", "fitted"]
    assert "photodiode: 39 photodiode rising edges for 40 trials" in outcome.rows[2].detail
    assert outcome.rows[3].trials_so_far == 120
    # the offline loader keeps that block (the file does not flag it): the check says the inputs differ
    assert not outcome.inputs.ok
