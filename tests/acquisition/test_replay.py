"""Replay of a small session file and a small pvc-8 file, at full speed, from another process."""

from __future__ import annotations

import numpy as np

from closedloop.acquisition import ReplayAdapter
from closedloop.data.pvc8 import read_pvc8
from closedloop.data.session import SessionReader
from closedloop.messages import StimulusShown
from closedloop.runtime import Supervisor
from closedloop.sim.archive import ArchiveSpec, make_archive
from closedloop.transport import Subscriber, random_tcp_endpoint

from .helpers import collect


def replay(path, **options):
    endpoint, stimulus_endpoint = random_tcp_endpoint(), random_tcp_endpoint()
    adapter = ReplayAdapter(
        endpoint,
        path,
        speed=0,
        stimulus_endpoint=stimulus_endpoint,
        wait_for_subscriber_s=20,
        batch_spikes=500,
        **options,
    )
    with Subscriber(endpoint, name="spikes") as sub, Subscriber(stimulus_endpoint, name="stimuli") as stimuli:
        supervisor = Supervisor([adapter], mode="process", setup_timeout_s=60)
        assert supervisor.start()
        got = collect(sub, lambda c: any(h.state == "finished" for h in c.heartbeats), timeout_s=40)
        shown = [d.message for d in stimuli.drain() if isinstance(d.message, StimulusShown)]
        report = supervisor.run(timeout_s=20)
        assert report.ok and report.reason == "all_done"
        assert (sub.stats.gaps, sub.stats.rejected) == (0, 0)
    return got, shown


def test_session_file_replays_every_spike_and_edge_in_order(tmp_path):
    path = tmp_path / "s.h5"
    make_archive(path, ArchiveSpec(layout="session", n_units=4, n_images=6, n_repeats=2))
    with SessionReader(path) as reader:
        spikes, sync, trials = reader.spikes, reader.sync, reader.trials
    got, shown = replay(path)
    assert np.array_equal(got.times, np.sort(spikes["time_s"]))
    assert len(got.times) == len(spikes) and np.bincount(got.unit_ids).sum() == len(spikes)
    assert np.array_equal(np.sort(got.unit_ids), np.sort(spikes["unit_id"]))
    assert [(e.time, e.line, e.state) for e in got.sync] == [
        (float(t), int(ln), int(s)) for t, ln, s in zip(sync["time_s"], sync["line"], sync["state"])
    ]
    assert np.all(np.diff(got.stream_times) >= 0)
    assert [m.stimulus_id for m in shown] == trials["stimulus_id"].tolist()
    assert np.allclose([m.flip_time for m in shown], trials["flip_s"])


def test_pvc8_file_replays_every_count_with_onset_edges(tmp_path):
    path = tmp_path / "p.mat"
    make_archive(path, ArchiveSpec(layout="pvc8", n_units=4, n_images=6, n_repeats=2))
    recording = read_pvc8(path, load_blank=True)
    got, shown = replay(path)
    n_trials = recording.n_stimuli * recording.n_repeats
    total = int(recording.resp_train.sum(dtype=np.int64) + recording.resp_train_blk.sum(dtype=np.int64))
    assert len(got.times) == total
    per_unit = recording.resp_train.sum(axis=(1, 2, 3), dtype=np.int64) + recording.resp_train_blk.sum(
        axis=(1, 2, 3), dtype=np.int64
    )
    assert np.array_equal(np.bincount(got.unit_ids, minlength=5)[1:], per_unit)
    onsets = got.onsets(1)
    assert len(onsets) == n_trials and len(got.onsets(1, 0)) == n_trials
    period = (recording.n_bins + recording.resp_train_blk.shape[3]) * 0.001
    assert np.allclose(np.diff(onsets), period)
    assert np.all(np.diff(got.stream_times) >= 0)
    # the stimulus-window counts of the first trial (repeat 0, stimulus 0) are the file's
    first = (got.times >= onsets[0]) & (got.times < onsets[0] + recording.n_bins * 0.001)
    assert np.array_equal(np.bincount(got.unit_ids[first], minlength=5)[1:], recording.resp_train[:, 0, 0].sum(axis=1))
    assert [m.stimulus_id for m in shown] == list(range(recording.n_stimuli)) * recording.n_repeats
    assert [m.block for m in shown] == [r for r in range(recording.n_repeats) for _ in range(recording.n_stimuli)]


def test_missing_archive_is_a_clear_setup_failure(tmp_path):
    adapter = ReplayAdapter(random_tcp_endpoint(), tmp_path / "none.h5", speed=0)
    supervisor = Supervisor([adapter], mode="thread")
    report = supervisor.run(timeout_s=10)
    assert report.reason == "setup_failed"
    assert "does not exist" in report.components["replay"].errors[0]
