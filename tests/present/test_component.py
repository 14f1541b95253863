"""The presenter component answers BlockRequests with one StimulusShown per trial."""

from __future__ import annotations

import time

import numpy as np
import pytest

from closedloop.messages import BlockRequest, Error, StimulusShown
from closedloop.present import PresenterComponent
from closedloop.runtime import Supervisor
from closedloop.transport import RequestClient, Subscriber, inproc_endpoint, tcp_endpoint


def _pixels(n: int) -> np.ndarray:
    return np.random.default_rng(2).random((n, 20, 20)).astype(np.float32)


def _connect(component: PresenterComponent) -> tuple[RequestClient, Subscriber]:
    client = RequestClient(component.request_endpoint, source="runner")
    shown = Subscriber(component.shown_endpoint, topics=[StimulusShown])
    time.sleep(0.3)  # PUB/SUB joins late, and the component only publishes during a block
    return client, shown


def _step_until(component: PresenterComponent, done, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not done():
        assert time.monotonic() < deadline, "component did not finish in time"
        component.step()


def _receive(shown: Subscriber, n: int, timeout_ms: int = 2000) -> list[StimulusShown]:
    messages = []
    for _ in range(n):
        decoded = shown.recv(timeout_ms)
        assert decoded is not None, f"only {len(messages)} of {n} StimulusShown arrived"
        messages.append(decoded.message)
    return messages


@pytest.mark.parametrize("make_endpoint", [inproc_endpoint, tcp_endpoint])
def test_block_request_in_stimulus_shown_out(test_rig, timing, make_endpoint) -> None:
    component = PresenterComponent(
        "presenter",
        rig=test_rig,
        timing=timing,
        request_endpoint=make_endpoint(),
        shown_endpoint=make_endpoint(),
        presenter_options={"start_time": 50.0},
    )
    component.setup()
    client, shown = _connect(component)
    try:
        assert (
            client.send(
                BlockRequest(
                    block=2, kind="synthesized", stimulus_ids=[11, 12], repeats=2, image_ids=[11, 12], pixels=_pixels(2)
                )
            )
            is not None
        )
        _step_until(component, lambda: component.blocks_shown == 1)
        messages = _receive(shown, 4)
        assert [m.stimulus_id for m in messages] == [11, 12, 11, 12]
        assert [m.trial for m in messages] == [0, 1, 2, 3] and {m.block for m in messages} == {2}
        assert all(m.n_frames == 3 and m.dropped_frames == 0 for m in messages)
        np.testing.assert_allclose(np.diff([m.flip_time for m in messages]), 5 / 60)
        assert shown.stats.gaps == 0
        # a later block may name images sent before
        client.send(BlockRequest(block=3, kind="natural", stimulus_ids=[12]))
        _step_until(component, lambda: component.blocks_shown == 2)
        assert [(m.stimulus_id, m.block) for m in _receive(shown, 1)] == [(12, 3)]
    finally:
        client.close()
        shown.close()
        component.teardown()


def test_bad_block_is_answered_with_an_error_and_the_next_one_still_runs(test_rig, timing) -> None:
    component = PresenterComponent(
        "presenter",
        rig=test_rig,
        timing=timing,
        request_endpoint=inproc_endpoint(),
        shown_endpoint=inproc_endpoint(),
        images={1: np.full((20, 20), 0.5)},
    )
    component.setup()
    client, shown = _connect(component)
    try:
        reply = _request_and_step(component, client, BlockRequest(block=0, kind="natural", stimulus_ids=[1, 9]))
        assert isinstance(reply, Error) and reply.code == "bad_block"
        assert "block 0 (natural) not shown: stimulus 9 has no image" in reply.message
        wrong_size = np.zeros((1, 19, 19), dtype=np.float32)
        reply = _request_and_step(
            component,
            client,
            BlockRequest(block=1, kind="synthesized", stimulus_ids=[5], image_ids=[5], pixels=wrong_size),
        )
        assert isinstance(reply, Error) and "image is (19, 19)" in reply.message
        assert 5 not in component.images  # rejected pixels are not kept
        assert component.blocks_rejected == 2
        client.send(BlockRequest(block=2, kind="natural", stimulus_ids=[1]))
        _step_until(component, lambda: component.blocks_shown == 1)
        assert [m.block for m in _receive(shown, 1)] == [2]
    finally:
        client.close()
        shown.close()
        component.teardown()


def _request_and_step(component, client, request):
    seq = client.send(request)
    component.step()
    decoded = client.recv(2000)
    assert decoded is not None and decoded.envelope.reply_to == seq
    return decoded.message


def test_runs_under_the_supervisor_over_tcp(test_rig, timing) -> None:
    """As in the loop: the component in its own thread, a runner-side client and subscriber."""
    component = PresenterComponent(
        "presenter",
        rig=test_rig,
        timing=timing,
        request_endpoint=tcp_endpoint(),
        shown_endpoint=tcp_endpoint(),
        presenter_options={"realtime": True},
        heartbeat_interval_s=0.1,
    )
    supervisor = Supervisor([component], mode="thread")
    assert supervisor.start()
    client, shown = _connect(component)
    try:
        client.send(
            BlockRequest(block=0, kind="natural", stimulus_ids=[3, 4, 5], image_ids=[3, 4, 5], pixels=_pixels(3))
        )
        messages = _receive(shown, 3)
        assert [m.stimulus_id for m in messages] == [3, 4, 5]
        onsets = np.array([m.flip_time for m in messages])
        np.testing.assert_allclose(np.diff(onsets), 5 / 60, atol=1e-9)
        assert abs(time.monotonic() - onsets[-1]) < 1.0  # real-time pacing on the monotonic clock
    finally:
        client.close()
        shown.close()
        report = supervisor.shutdown()
    assert report.ok, report


def test_psychopy_presenter_component(xvfb_display, test_rig, timing) -> None:
    component = PresenterComponent(
        "presenter",
        rig=test_rig,
        timing=timing,
        request_endpoint=inproc_endpoint(),
        shown_endpoint=inproc_endpoint(),
        presenter="psychopy",
    )
    component.setup()
    client, shown = _connect(component)
    try:
        client.send(
            BlockRequest(block=7, kind="synthesized", stimulus_ids=[1, 2, 3], image_ids=[1, 2, 3], pixels=_pixels(3))
        )
        _step_until(component, lambda: component.blocks_shown == 1)
        messages = _receive(shown, 3)
        assert [(m.stimulus_id, m.trial, m.block) for m in messages] == [(1, 0, 7), (2, 1, 7), (3, 2, 7)]
        assert np.all(np.diff([m.flip_time for m in messages]) > 0)
    finally:
        client.close()
        shown.close()
        component.teardown()
    assert component.presenter.window is None


def test_unknown_presenter_kind(test_rig, timing) -> None:
    with pytest.raises(ValueError, match="presenter must be 'psychopy' or 'headless'"):
        PresenterComponent(
            "p",
            rig=test_rig,
            timing=timing,
            request_endpoint=inproc_endpoint(),
            shown_endpoint=inproc_endpoint(),
            presenter="qt",
        )
