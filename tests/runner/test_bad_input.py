"""The runner under bad input: a dead model server, a missing photodiode edge."""

from __future__ import annotations

import threading
import time

import numpy as np

from closedloop.acquisition import SimulatedArray
from closedloop.config import load_protocol
from closedloop.data.session import SessionReader
from closedloop.data.session_format import BlockFlag
from closedloop.loop import run_until_done, simulated_components
from closedloop.present import PresenterComponent
from closedloop.runner import Runner
from closedloop.transport import Endpoints

from .fake_server import FakeModelServer, ServerThread
from .helpers import FAST, PROTOCOL, wait_for, write_protocol


class GatedRunner(Runner):
    """A runner that waits before step k until ``gates[k]`` is set (so a test can act in between)."""

    def __init__(self, *args, gates: dict[int, threading.Event], **kwargs):
        super().__init__(*args, **kwargs)
        self.gates = gates

    def _run(self, step):
        gate = self.gates.get(step.index)
        while gate is not None and not gate.is_set():
            yield
        yield from super()._run(step)


def test_a_model_server_killed_mid_run_means_natural_images_then_everything_resent(tmp_path, rig, brain_and_units):
    brain, unit_ids, channels = brain_and_units
    protocol = write_protocol(tmp_path, iterations=2)
    endpoints = Endpoints.local_tcp()
    first = ServerThread(FakeModelServer(endpoints.model, endpoints.model_events)).start()
    second: list[ServerThread] = []
    loop = simulated_components(
        rig, protocol, tmp_path / "s.h5", endpoints=endpoints, brain=brain, units=(unit_ids, channels), settings=FAST
    )
    killed, back = threading.Event(), threading.Event()
    # the server dies after the first fit, before the loop's synthesize (step 2); the runner then waits
    # before step 3 until a fresh server (which knows nothing) is listening
    loop.runner = loop.components[-1] = GatedRunner(
        rig,
        protocol,
        tmp_path / "s.h5",
        endpoints,
        unit_ids=unit_ids,
        channels=channels,
        settings=FAST,
        gates={2: killed, 3: back},
    )
    runner = loop.runner

    def chaos() -> None:
        try:
            wait_for(lambda: runner.link is not None and runner.link.version >= 1, 30)
            first.stop()
            killed.set()
            wait_for(lambda: any(s.kind == "synthesize" and s.state != "started" for s in runner.statuses), 30)
            second.append(ServerThread(FakeModelServer(endpoints.model, endpoints.model_events)).start())
            time.sleep(0.5)  # the runner's sockets reconnect
        finally:
            killed.set()
            back.set()

    helper = threading.Thread(target=chaos, daemon=True)
    helper.start()
    try:
        report = run_until_done(loop, timeout_s=60)
    finally:
        helper.join(10)
        for server in second:
            server.stop()
    assert report.ok and runner.finished
    statuses = [(s.block, s.kind, s.state) for s in runner.statuses if s.state != "started"]
    assert statuses[:3] == [(0, "natural", "finished"), (1, "fit", "finished"), (2, "synthesize", "flagged")]
    assert "model server unavailable: synthesize block replaced by 4 natural images" in runner.statuses[5].detail
    # the next blocks found the fresh server, sent it everything recorded, refitted and synthesized again
    assert statuses[3:] == [
        (3, "present_synthesized", "skipped"),
        (4, "fit", "finished"),
        (5, "synthesize", "finished"),
        (6, "present_synthesized", "finished"),
        (7, "fit", "finished"),
    ]
    with SessionReader(tmp_path / "s.h5") as reader:
        blocks = reader.blocks
    assert blocks["flagged"].sum() == 0  # every block recorded, its data good
    good = [int(b["index"]) for b in blocks if b["trial_stop"] > b["trial_start"]]
    assert good == [0, 2, 6]
    received = [block for kind, block, n in second[0].server.received if kind == "FitRequest" and n > 0]
    assert sorted(received) == good and len(set(received)) == len(received)  # each once
    assert second[0].server.version == 3  # the re-sent data's refit, then the loop's two fits
    assert runner.link.up


EDGE_PROTOCOL = (
    PROTOCOL.split("blocks:\n")[0].format(top_k=2, iterations=1)
    + """blocks:
  - kind: natural
    images: 10
    repeats: 2
  - kind: natural
    images: 10
    repeats: 2
"""
)


class EdgeDroppingArray(SimulatedArray):
    """A simulated array whose photodiode misses some rising edges (by their number, from 0)."""

    def __init__(self, *args, drop: set[int], **kwargs):
        super().__init__(*args, **kwargs)
        self.drop, self.rising = drop, 0

    def _release(self, until):
        chunk = super()._release(until)
        kept = []
        for edge in chunk.sync:
            if edge[1] == 1:
                self.rising += 1
                if self.rising - 1 in self.drop:
                    continue
            kept.append(edge)
        chunk.sync = kept
        return chunk


def test_a_missing_photodiode_edge_flags_the_block_keeps_its_data_and_the_run_goes_on(tmp_path, rig, brain_and_units):
    brain, unit_ids, channels = brain_and_units
    (tmp_path / "edges.yaml").write_text(EDGE_PROTOCOL)
    protocol = load_protocol(tmp_path / "edges.yaml")
    endpoints = Endpoints.inproc()
    array = EdgeDroppingArray(
        endpoints.spikes, endpoints.stimulus, brain, speed=0, block_endpoint=endpoints.responses, seed=1, drop={7}
    )
    presenter = PresenterComponent(
        "presenter",
        rig=rig,
        timing=protocol.frames(rig),
        request_endpoint=endpoints.blocks,
        shown_endpoint=endpoints.stimulus,
    )
    server = FakeModelServer(endpoints.model, endpoints.model_events)
    runner = Runner(rig, protocol, tmp_path / "s.h5", endpoints, unit_ids=unit_ids, channels=channels, settings=FAST)
    report = run_until_done([array, presenter, server, runner], timeout_s=60)
    assert report.ok and runner.finished
    flagged = [s for s in runner.statuses if s.state == "flagged"]
    assert len(flagged) == 1 and flagged[0].block == 0
    assert "19 photodiode rising edges for 20 trials (1 missing)" in flagged[0].detail
    with SessionReader(tmp_path / "s.h5") as reader:
        blocks, trials, responses, sync = reader.blocks, reader.trials, reader.responses, reader.sync
    # (a third, trial-less block may hold what acquisition sent after the last block)
    assert blocks["flag_code"].tolist()[:2] == [BlockFlag.PHOTODIODE_MISMATCH, BlockFlag.NONE]
    assert np.all(blocks["trial_stop"][2:] == 40)
    # the flagged block keeps its trials, spikes and sync events, but no responses from a guess
    assert (blocks["trial_stop"] - blocks["trial_start"]).tolist()[:2] == [20, 20]
    assert blocks["spike_stop"][0] > 0 and blocks["sync_stop"][0] == 39  # 19 rising + 20 falling edges
    assert np.all(np.isnan(responses[:20])) and np.all(np.isfinite(responses[20:]))
    assert np.all(np.isfinite(trials["onset_s"]))
    # the next block aligns again, and only it was sent for fitting
    assert [(block, n) for kind, block, n in server.received if kind == "FitRequest"] == [(1, 20)]
    rising = sync["time_s"][(sync["line"] == 1) & (sync["state"] == 1)]
    np.testing.assert_allclose(trials["onset_s"][20:], rising[19:39])


class SilentArray(SimulatedArray):
    """A simulated array whose units never spike (the photodiode still works)."""

    def _release(self, until):
        chunk = super()._release(until)
        chunk.unit_ids, chunk.times, chunk.channels = chunk.unit_ids[:0], chunk.times[:0], None
        return chunk


def test_a_block_where_no_unit_responds_is_reported_and_kept(tmp_path, rig, brain_and_units):
    brain, unit_ids, channels = brain_and_units
    (tmp_path / "edges.yaml").write_text(EDGE_PROTOCOL)
    protocol = load_protocol(tmp_path / "edges.yaml")
    endpoints = Endpoints.inproc()
    array = SilentArray(
        endpoints.spikes, endpoints.stimulus, brain, speed=0, block_endpoint=endpoints.responses, seed=1
    )
    presenter = PresenterComponent(
        "presenter",
        rig=rig,
        timing=protocol.frames(rig),
        request_endpoint=endpoints.blocks,
        shown_endpoint=endpoints.stimulus,
    )
    runner = Runner(rig, protocol, tmp_path / "s.h5", endpoints, unit_ids=unit_ids, channels=channels, settings=FAST)
    report = run_until_done([array, presenter, runner], timeout_s=60)  # no model server at all, either
    assert report.ok and runner.finished
    done = [s for s in runner.statuses if s.state != "started"]
    assert [s.state for s in done] == ["flagged", "flagged"]
    assert all("no unit responded" in s.detail for s in done)
    with SessionReader(tmp_path / "s.h5") as reader:
        assert reader.blocks["flagged"].tolist() == [0, 0]  # real zeros, usable data
        assert reader.n_trials == 40 and not reader.responses.any()
