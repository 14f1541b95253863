"""The runner on a tiny protocol with the simulated array, the headless presenter and a fake model server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from closedloop.data.session import SessionReader
from closedloop.data.session_format import BlockKind, StimulusKind
from closedloop.errors import ConfigError
from closedloop.loop import run_until_done, simulated_components
from closedloop.runner import Runner, journal_path
from closedloop.transport import Endpoints

from .helpers import FAST, N_UNITS, Watcher, write_protocol
from .fake_server import FakeModelServer


def run_loop(tmp_path, rig, protocol, brain_and_units, *, session="session.h5", **server_options):
    brain, unit_ids, channels = brain_and_units
    endpoints = Endpoints.inproc()
    server = FakeModelServer(endpoints.model, endpoints.model_events, **server_options)
    loop = simulated_components(
        rig,
        protocol,
        tmp_path / session,
        endpoints=endpoints,
        brain=brain,
        units=(unit_ids, channels),
        model_server=server,
        settings=FAST,
    )
    watcher = Watcher(endpoints.responses)
    try:
        report = run_until_done(loop, timeout_s=60)
        watcher.poll()
    finally:
        watcher.close()
    return loop.runner, server, watcher, report


def records(path):
    return [json.loads(line) for line in journal_path(path).read_text().splitlines()]


def test_a_closed_loop_runs_end_to_end_and_the_session_file_has_everything(tmp_path, rig, protocol, brain_and_units):
    runner, server, watcher, report = run_loop(tmp_path, rig, protocol, brain_and_units)
    assert report.ok and runner.finished and runner.stop_reason == ""
    unit_ids = brain_and_units[1]
    with SessionReader(tmp_path / "session.h5") as reader:
        blocks, trials, stimuli, responses = reader.blocks, reader.trials, reader.stimuli, reader.responses
        sync = reader.sync
        assert np.array_equal(reader.unit_ids, unit_ids)
    # natural, fit, synthesize, present_synthesized, fit: one session block per protocol step
    assert blocks["kind"].tolist() == [
        BlockKind.NATURAL,
        BlockKind.OTHER,
        BlockKind.OTHER,
        BlockKind.SYNTHESIZED,
        BlockKind.OTHER,
    ]
    assert blocks["flagged"].tolist() == [0] * 5
    assert (blocks["trial_stop"] - blocks["trial_start"]).tolist() == [40, 0, 0, 8, 0]
    # trial order: every natural image twice, shuffled (not in pool order)
    natural_trials = trials["stimulus_id"][:40]
    assert np.array_equal(np.bincount(natural_trials), np.full(20, 2))
    assert not np.array_equal(natural_trials[:20], np.arange(20))
    # onsets are the photodiode's rising edges, and responses count spikes in 50-100 ms after them
    rising = sync["time_s"][(sync["line"] == 1) & (sync["state"] == 1)]
    assert np.allclose(trials["onset_s"], rising)
    assert responses.shape == (48, N_UNITS) and np.all(np.isfinite(responses)) and responses.sum() > 0
    with SessionReader(tmp_path / "session.h5") as reader:
        spikes = reader.spikes
    first = (
        (spikes["unit_id"] == unit_ids[0])
        & (spikes["time_s"] >= rising[0] + 0.05)
        & (spikes["time_s"] < rising[0] + 0.1)
    )
    assert responses[0, 0] == pytest.approx(first.sum() / 0.05)
    # stimuli: the natural pool, then 2 units x 2 targets synthesized, with provenance
    assert stimuli["kind"].tolist() == [StimulusKind.NATURAL] * 20 + [StimulusKind.SYNTHESIZED] * 4
    synthesized = stimuli[20:]
    assert set(synthesized["unit_id"].tolist()) == set(unit_ids[:2].tolist())  # the fake's best two units
    assert np.isfinite(synthesized["target_hz"]).tolist() == [True, False, True, False]  # p50, max per unit
    assert synthesized["model_version"].tolist() == [1] * 4
    assert np.all(np.isfinite(synthesized["achieved_hz"]))
    # the ensemble spread is stored as the server sent it, image by image
    assert len(server.synthesized) == 1
    np.testing.assert_array_equal(synthesized["spread_hz"], server.synthesized[0].spread)
    np.testing.assert_array_equal(synthesized["start_stimulus_id"], server.synthesized[0].start_ids)
    assert synthesized["start_stimulus_id"].tolist() == [0, -1, 2, -1]
    assert (stimuli["start_stimulus_id"][:20] == -1).all()  # natural images did not start anywhere
    # ... and the server is told which images the synthesized ones were edited from
    sent = [r for r in server.fit_requests if r.image_ids is not None and 20 in r.image_ids.tolist()]
    assert len(sent) == 1 and sent[0].image_ids.tolist() == [20, 21, 22, 23]
    assert sent[0].parent_ids.tolist() == [0, -1, 2, -1]
    assert all(r.parent_ids is None for r in server.fit_requests if r is not sent[0])
    assert set(trials["stimulus_id"][40:].tolist()) == set(range(20, 24))
    # the journal: one record per block, protocol positions in order, model versions of the fits
    journal = records(tmp_path / "session.h5")
    assert [r["step"] for r in journal] == [0, 1, 2, 3, 4]
    assert [r["state"] for r in journal] == ["finished"] * 5
    assert [r["model_version"] for r in journal if r["kind"] == "fit"] == [1, 2]
    assert journal[1]["metrics"]["r_median"] == pytest.approx(0.5 * 0.6, rel=0.01)  # the fake's median r at v1
    # what the server got: each presentation block's trials, then a refit per fit block
    fits = [(block, n) for kind, block, n in server.received if kind == "FitRequest"]
    assert fits == [(0, 40), (1, 0), (3, 8), (4, 0)]
    assert len(server.images) == 24
    # what was published for the monitor
    states = [(s.block, s.kind, s.state) for s in watcher.statuses]
    assert states[:2] == [(0, "natural", "started"), (0, "natural", "finished")]
    assert [s for s in states if s[2] != "started"] == [
        (0, "natural", "finished"),
        (1, "fit", "finished"),
        (2, "synthesize", "finished"),
        (3, "present_synthesized", "finished"),
        (4, "fit", "finished"),
    ]
    assert [r.block for r in watcher.responses] == [0, 3]
    assert np.allclose(watcher.responses[0].rates, responses[:40])
    assert [len(r.image_ids) for r in watcher.requests] == [20, 4]


def test_a_server_that_sends_no_spread_leaves_it_nan(tmp_path, rig, protocol, brain_and_units):
    runner, server, _, report = run_loop(tmp_path, rig, protocol, brain_and_units, send_spread=False)
    assert report.ok and runner.finished and server.synthesized[0].spread is None
    with SessionReader(tmp_path / "session.h5") as reader:
        synthesized = reader.stimuli[reader.stimuli["kind"] == StimulusKind.SYNTHESIZED]
    assert synthesized.size == 4 and np.all(np.isnan(synthesized["spread_hz"]))
    assert (synthesized["start_stimulus_id"] == -1).all()
    assert np.all(np.isfinite(synthesized["achieved_hz"]))


def test_top_k_above_the_fitted_units_fails_the_synthesize_block_clearly(tmp_path, rig, protocol, brain_and_units):
    runner, _, watcher, report = run_loop(tmp_path, rig, protocol, brain_and_units, fitted_units=1)
    assert report.ok and runner.finished
    failed = [s for s in watcher.statuses if s.state == "failed"]
    assert len(failed) == 1 and failed[0].kind == "synthesize"
    assert "top_k is 2 but model version 1 has fitted only 1 unit(s)" in failed[0].detail
    skipped = [s for s in watcher.statuses if s.state == "skipped"]
    assert [s.kind for s in skipped] == ["present_synthesized"]


def test_top_k_above_the_session_units_is_a_config_error(tmp_path, rig, brain_and_units):
    protocol = write_protocol(tmp_path, top_k=N_UNITS + 1)
    _, unit_ids, channels = brain_and_units
    with pytest.raises(ConfigError, match=rf"top_k.*session has {N_UNITS} unit"):
        Runner(rig, protocol, tmp_path / "s.h5", Endpoints.inproc(), unit_ids=unit_ids, channels=channels)


GRATINGS_PROTOCOL = """\
name: gratings
seed: 2
timing: {stimulus_ms: 100, blank_ms: 200}
images: {n: 12, seed: 1}
blocks:
  - kind: gratings
    set: orientation
    repeats: 1
  - kind: natural
    images: 5
    repeats: 1
  - kind: natural
    images: 10
    repeats: 1
"""


def test_gratings_are_stored_with_their_parameters_and_natural_blocks_walk_the_pool(tmp_path, rig, brain_and_units):
    from closedloop.config import load_protocol

    (tmp_path / "g.yaml").write_text(GRATINGS_PROTOCOL)
    protocol = load_protocol(tmp_path / "g.yaml")
    brain, unit_ids, channels = brain_and_units
    loop = simulated_components(
        rig, protocol, tmp_path / "g.h5", brain=brain, units=(unit_ids, channels), settings=FAST
    )  # and no model server: fit requests just wait
    report = run_until_done(loop, timeout_s=60)
    assert report.ok and loop.runner.finished
    with SessionReader(tmp_path / "g.h5") as reader:
        stimuli, trials, blocks = reader.stimuli, reader.trials, reader.blocks
        gratings = reader.to_dataset().gratings
    assert (stimuli["kind"] == StimulusKind.GRATING).sum() == 64
    assert np.unique(stimuli["orientation_deg"][stimuli["kind"] == StimulusKind.GRATING]).size == 16
    assert blocks["kind"][:3].tolist() == [BlockKind.GRATING, BlockKind.NATURAL, BlockKind.NATURAL]
    assert blocks["flagged"].sum() == 0
    # the second natural block starts where the first stopped, and wraps around the 12-image pool
    second = trials["stimulus_id"][blocks["trial_start"][2] : blocks["trial_stop"][2]]
    assert sorted(second.tolist()) == [0, 1, 2, 5, 6, 7, 8, 9, 10, 11]
    assert gratings is not None and gratings.orientations_deg.size == 16
    assert len(loop.runner.link.backlog) == 3  # every block's responses kept for a server that never came
