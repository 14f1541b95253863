"""Stopping a run midway and resuming it: the protocol finishes with nothing lost or duplicated."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from closedloop.data.session import SessionReader
from closedloop.data.session_format import BlockFlag
from closedloop.errors import DataFileError
from closedloop.loop import run_until_done, simulated_components
from closedloop.runner import Plan, Runner, journal_path
from closedloop.runner.plan import PRESENTATION_KINDS
from closedloop.transport import Endpoints

from .fake_server import FakeModelServer, ServerThread
from .helpers import FAST, wait_for, write_protocol


def loop_on(tmp_path, rig, protocol, brain_and_units, server_endpoints: Endpoints, **options):
    brain, unit_ids, channels = brain_and_units
    fresh = Endpoints.inproc()
    endpoints = Endpoints(
        blocks=fresh.blocks,
        stimulus=fresh.stimulus,
        spikes=fresh.spikes,
        model=server_endpoints.model,
        model_events=server_endpoints.model_events,
        responses=fresh.responses,
    )
    return simulated_components(
        rig,
        protocol,
        tmp_path / "s.h5",
        endpoints=endpoints,
        brain=brain,
        units=(unit_ids, channels),
        settings=FAST,
        **options,
    )


class HeldRunner(Runner):
    """A runner whose step-6 block never completes (so a stop surely lands inside it)."""

    held = False

    def setup(self) -> None:
        super().setup()
        complete = self.collector.block_complete

        def held_complete(block, n_trials, *args):
            if self.active is not None and self.active.step.index == 6:
                self.held = len(self.collector.trials_of(block).by_trial) == n_trials
                return False
            return complete(block, n_trials, *args)

        self.collector.block_complete = held_complete


def runner_arguments(runner: Runner) -> dict:
    return dict(
        rig=runner.rig,
        protocol=runner.protocol,
        session_path=runner.session_path,
        endpoints=runner.endpoints,
        unit_ids=runner.unit_ids,
        channels=runner.channels,
        settings=runner.settings,
    )


@pytest.mark.parametrize("fresh_server", [False, True], ids=["same server", "server restarted too"])
def test_stop_in_a_block_then_resume_finishes_the_protocol_with_nothing_lost_or_duplicated(
    tmp_path, rig, brain_and_units, fresh_server
):
    protocol = write_protocol(tmp_path, iterations=2)
    plan = Plan(protocol)
    server_endpoints = Endpoints.local_tcp()  # tcp: a restarted server binds the same port again
    server = ServerThread(FakeModelServer(server_endpoints.model, server_endpoints.model_events)).start()
    try:
        first = loop_on(tmp_path, rig, protocol, brain_and_units, server_endpoints)
        runner = first.runner = first.components[-1] = HeldRunner(**runner_arguments(first.runner))
        # Ctrl-C arrives while the second present_synthesized block (step 6) is being shown
        stopper = threading.Thread(target=lambda: wait_for(lambda: runner.held, 30) and first.stop.set(), daemon=True)
        stopper.start()
        report = run_until_done(first, timeout_s=60)
        stopper.join(5)
        assert report.reason == "stopped" and not runner.finished
        assert runner.position == 5  # synthesize of iteration 2 done, its presentation interrupted
        with SessionReader(tmp_path / "s.h5") as reader:
            assert reader.blocks["flag_code"][-1] == BlockFlag.ABORTED
            assert reader.blocks["trial_stop"][-1] > reader.blocks["trial_start"][-1]  # its trials are kept
        blocks_at_stop, fits_at_stop = server.server.received.copy(), len(server.server.fit_requests)
        assert {m.version_floor for m in server.server.fit_requests} == {0}  # a new session: no floor
        if fresh_server:  # it lost everything: the resumed runner must notice and send it all
            server.stop()
            server = ServerThread(FakeModelServer(server_endpoints.model, server_endpoints.model_events)).start()
            blocks_at_stop, fits_at_stop = [], 0

        second = loop_on(tmp_path, rig, protocol, brain_and_units, server_endpoints, resume=True)
        report = run_until_done(second, timeout_s=60)
        assert report.ok and second.runner.finished
    finally:
        server.stop()

    records = [json.loads(line) for line in journal_path(tmp_path / "s.h5").read_text().splitlines()]
    done = [r["step"] for r in records if r["advances"]]
    assert done == list(range(len(plan)))  # every step exactly once, in order
    aborted = [r for r in records if not r["advances"]]
    assert [(r["step"], r["state"]) for r in aborted] == [(6, "aborted")]
    with SessionReader(tmp_path / "s.h5") as reader:
        blocks, trials, stimuli = reader.blocks, reader.trials, reader.stimuli
        dataset_trials = reader.to_dataset().trial_rates
    presented = [r for r in records if r["advances"] and r["n_trials"]]
    assert [r["kind"] for r in presented] == [s.kind for s in plan.steps if isinstance(s.block, PRESENTATION_KINDS)]
    good = blocks[blocks["flagged"] == 0]
    assert int((good["trial_stop"] - good["trial_start"]).sum()) == 40 + 8 + 8
    # the interrupted block's trials are kept but flagged, so fitting never counts them twice
    assert np.count_nonzero(np.isfinite(dataset_trials[..., 0])) == 56
    # the resumed presentation showed the same synthesized images as the interrupted one, in the same order
    interrupted, redone = blocks[blocks["flag_code"] == BlockFlag.ABORTED][0], blocks[-2]
    first_trials = trials["stimulus_id"][interrupted["trial_start"] : interrupted["trial_stop"]]
    redone_trials = trials["stimulus_id"][redone["trial_start"] : redone["trial_stop"]]
    assert np.array_equal(redone_trials[: first_trials.size], first_trials)
    assert (stimuli["kind"] == 2).sum() == 8  # two synthesize blocks, none redone
    # the server was sent the recorded responses again on resume (it keeps them per block: no double counting)
    resent = [b for kind, b, n in server.server.received[len(blocks_at_stop) :] if kind == "FitRequest" and n]
    assert resent == [0, 3, 7]  # the good blocks before the stop, then the redone presentation, once each
    versions = [r["model_version"] for r in records if r["kind"] == "fit"]
    # fits before the stop made versions 1 and 2; on resume the data went again with a refit (3), then the
    # last fit: a restarted server is told to number on from 3 too, so no recorded version is reused
    assert versions == [1, 2, 4]
    assert {m.version_floor for m in server.server.fit_requests[fits_at_stop:]} == {3}  # every resumed request
    # images sent after the resume carry their parents as the session recorded them (a restarted server needs
    # them to keep an edit in its original's part of the split)
    recorded = dict(zip(stimuli["id"].tolist(), stimuli["start_stimulus_id"].tolist()))
    with_images = [m for m in server.server.fit_requests[fits_at_stop:] if m.image_ids is not None]
    assert with_images
    for message in with_images:
        wanted = [recorded[int(i)] for i in message.image_ids]
        assert (message.parent_ids is None and set(wanted) == {-1}) or message.parent_ids.tolist() == wanted
    if fresh_server:
        assert any(m.parent_ids is not None for m in with_images)  # iteration 1's edits went again with parents


def test_resuming_with_another_protocol_is_refused(tmp_path, rig, brain_and_units):
    protocol = write_protocol(tmp_path)
    server_endpoints = Endpoints.inproc()
    server = ServerThread(FakeModelServer(server_endpoints.model, server_endpoints.model_events)).start()
    try:
        report = run_until_done(loop_on(tmp_path, rig, protocol, brain_and_units, server_endpoints), timeout_s=60)
        assert report.ok
        other = write_protocol(tmp_path, iterations=3, name="other.yaml")
        loop = loop_on(tmp_path, rig, other, brain_and_units, server_endpoints, resume=True)
        with pytest.raises(DataFileError, match="another protocol"):
            loop.runner.setup()
        loop.runner.teardown()
    finally:
        server.stop()
