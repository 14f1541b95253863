"""The model server under load: liveness beside long work, fair syntheses, ownership, bounded memory."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
import zmq
from conftest import UNIT_IDS

import closedloop.server.component as component_module
from closedloop.messages import (
    Accepted,
    Error,
    FitRequest,
    ModelUpdated,
    PredictRequest,
    Predictions,
    SynthesizeRequest,
    SynthesizeResult,
)
from closedloop.transport import RequestClient, random_tcp_endpoint


def _ping_seconds(client: RequestClient) -> float:
    started = time.perf_counter()
    reply = client.request(PredictRequest(images=np.zeros((0, 1, 1), np.float32)), 5000)
    assert reply is not None and isinstance(reply.message, Accepted) and reply.message.detail == "alive"
    return time.perf_counter() - started


def _fitted(run_server, recording, **changes):
    running = run_server(**changes)
    assert isinstance(running.ask(recording.request(block=1, index=slice(0, 40))), Accepted)
    assert isinstance(running.next_event((ModelUpdated, Error)), ModelUpdated)
    return running


def test_a_ping_is_answered_within_a_second_while_predictions_run(run_server, recording, monkeypatch) -> None:
    running = _fitted(run_server, recording)
    release = threading.Event()
    real = component_module._predictions

    def slow(*args):
        release.wait(30)  # a prediction that takes as long as the test wants
        return real(*args)

    monkeypatch.setattr(component_module, "_predictions", slow)
    big = RequestClient(running.server.request_endpoint, source="monitor")
    try:
        asked = [big.send(PredictRequest(images=recording.images[:4])) for _ in range(3)]
        assert None not in asked
        # the third exceeds max_queued_predictions (2): refused at once, not queued
        busy = big.recv(5000)
        assert isinstance(busy.message, Error) and busy.message.code == "busy"
        assert max(_ping_seconds(running.client) for _ in range(5)) < 1.0
        release.set()
        answers = [big.recv(10_000) for _ in range(2)]
        assert all(isinstance(a.message, Predictions) for a in answers)
    finally:
        big.close()


def test_a_visitors_huge_synthesis_is_cut_by_its_budget_and_preempted_by_the_runner(run_server, recording) -> None:
    running = _fitted(run_server, recording, synthesis_budget_s=3.0)
    visitor = RequestClient(running.server.request_endpoint, source="monitor", session="other")
    try:
        huge = SynthesizeRequest(unit_ids=np.repeat(UNIT_IDS[:2], 50), targets=np.full(100, np.nan), steps=10_000)
        assert visitor.send(huge) is not None
        started = time.monotonic()
        reply = visitor.recv(30_000)
        assert isinstance(reply.message, Error) and reply.message.code == "synthesis_timeout"
        assert time.monotonic() - started < 20

        assert visitor.send(huge) is not None
        time.sleep(0.5)  # the visitor's synthesis is running
        small = SynthesizeRequest(unit_ids=UNIT_IDS[:1], targets=[np.nan], steps=5)
        owner = running.ask(small, timeout_s=30)  # the runner that opened the session goes first
        assert isinstance(owner, SynthesizeResult)
        preempted = visitor.recv(10_000)
        assert isinstance(preempted.message, Error) and preempted.message.code == "preempted"
        assert max(_ping_seconds(running.client) for _ in range(3)) < 1.0
    finally:
        visitor.close()


def test_only_the_runner_that_opened_the_session_adds_data(run_server, recording) -> None:
    running = run_server(session="s1")
    rogue = RequestClient(running.server.request_endpoint, source="runner", session="rogue")
    owner = RequestClient(running.server.request_endpoint, source="runner", session="s1")
    try:
        lockout = FitRequest(
            block=0,
            stimulus_ids=recording.ids[:2],
            rates=np.ones((2, 1)),
            unit_ids=[-7],
            image_ids=recording.ids[:2],
            images=recording.images[:2],
            refit=False,
        )
        reply = rogue.request(lockout, 5000)
        assert isinstance(reply.message, Error) and reply.message.code == "not_owner"
        first = owner.request(recording.request(block=1, index=slice(0, 10), refit=False), 5000)
        assert isinstance(first.message, Accepted)
        replaced = rogue.request(recording.request(block=1, index=slice(0, 10), refit=False, seed=9), 5000)
        assert isinstance(replaced.message, Error) and replaced.message.code == "not_owner"
        np.testing.assert_array_equal(running.server.store.unit_ids, UNIT_IDS)
        assert running.server.owner.refused == 2
    finally:
        rogue.close()
        owner.close()


def test_a_resumed_sessions_runner_sets_where_model_versions_go_on(run_server, recording) -> None:
    running = run_server()
    first = running.ask(recording.request(block=0, index=slice(0, 40), refit=False))
    assert isinstance(first, Accepted) and first.version == 0
    resumed = dataclasses.replace(recording.request(block=1, index=slice(40, 60)), version_floor=7)
    reply = running.ask(resumed)
    assert isinstance(reply, Accepted) and reply.version == 7  # versions 1..6 were recorded
    again = dataclasses.replace(recording.request(block=2, index=slice(60, 70), refit=False), version_floor=3)
    assert running.ask(again).version in (0, 7)  # a lower floor never turns the numbering back
    with pytest.raises(ValueError, match="version_floor"):
        dataclasses.replace(resumed, version_floor=2**40)


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_flood_of_maximum_size_requests_stays_within_the_memory_bound(run_server, monkeypatch) -> None:
    cap = 1 << 20
    paused = threading.Event()
    real_step = component_module.ModelServer.step

    def step(self):
        while paused.is_set():  # a loop busy with something long: requests pile up in ZeroMQ
            time.sleep(0.01)
        return real_step(self)

    monkeypatch.setattr(component_module.ModelServer, "step", step)
    running = run_server(request_endpoint=random_tcp_endpoint(), max_request_bytes=cap, request_hwm=2)
    bound = running.server.settings.memory_bound_bytes(clients=1)
    flood = zmq.Context.instance().socket(zmq.DEALER)
    flood.setsockopt(zmq.SNDHWM, 2)
    flood.setsockopt(zmq.LINGER, 0)
    flood.connect(running.server.request_endpoint)
    junk = np.random.default_rng(0).integers(0, 256, cap - 1024, dtype=np.uint8).tobytes()
    try:
        time.sleep(0.3)
        paused.set()
        before, peak, taken = _rss_bytes(), 0, 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # 3 s of trying: hundreds of MiB offered
            try:
                flood.send_multipart([b"PredictRequest", junk], zmq.NOBLOCK)
                taken += 1
            except zmq.Again:
                time.sleep(0.005)
            peak = max(peak, _rss_bytes())
        assert taken * cap < 64 * cap, f"{taken} messages of 1 MiB taken while the server was paused"
        assert peak - before < bound + 32 * cap, (peak - before, bound)
        paused.clear()
        assert _ping_seconds(running.client) < 1.0
        assert running.server.requests.error_replies >= 1  # every junk request read is answered
    finally:
        paused.clear()
        flood.close(0)
