"""The receiving thread over real sockets: a synthetic stream, bad input, silence, restarts."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest

from closedloop.messages import types as msg
from closedloop.messages.codec import encode
from closedloop.monitor.health import SILENT_AFTER_S
from closedloop.monitor.state import MonitorState
from closedloop.monitor.stream import StreamReceiver, host_endpoints
from closedloop.monitor.synthetic import SyntheticPublisher, SyntheticSession
from closedloop.transport import Publisher, inproc_endpoint, tcp_endpoint

STREAMS = ("responses", "model_events", "stimulus", "spikes")


def wait_until(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_synthetic_stream_over_tcp_reaches_the_state(synthetic_messages):
    state = MonitorState()
    session = SyntheticSession(n_units=12, n_images=10, repeats=2, iterations=1, synth_units=2, seed=3, n_candidates=30)
    publisher = SyntheticPublisher({name: tcp_endpoint() for name in STREAMS}, session)
    receiver = StreamReceiver(publisher.endpoints, state).start()
    publisher.start(delay_s=0.5)
    try:
        assert publisher.done.wait(30)
        assert wait_until(
            lambda: sum(sum(h.by_type.values()) for h in state.view().health.values()) == len(synthetic_messages)
        )
    finally:
        publisher.stop()
        receiver.stop()
    # the same messages fed directly give the same picture
    direct = MonitorState()
    for stream, message in synthetic_messages:
        direct.ingest(stream, message)
    got, expected = state.view(), direct.view()
    np.testing.assert_allclose(got.unit_points["measured"], expected.unit_points["measured"])
    np.testing.assert_array_equal(got.spikes.counts, expected.spikes.counts)
    assert got.population_r == expected.population_r and got.model_version == 2
    for health in got.health.values():
        assert health.transport["gaps"] == 0 and health.rejected == 0


def test_unknown_types_and_wrong_schema_are_counted_not_raised():
    endpoint = inproc_endpoint("monitor-junk")
    publisher = Publisher(endpoint, source="runner")
    state = MonitorState()
    receiver = StreamReceiver({"responses": endpoint}, state).start()
    time.sleep(0.2)
    try:
        good = encode(msg.BlockStatus(block=0, kind="natural", state="started"), source="runner", seq=0)
        header = msgpack.unpackb(good[1])
        unknown = [b"Nonsense", msgpack.packb({**header, "type": "Nonsense", "seq": 1})]
        future = [good[0], msgpack.packb({**header, "schema": 99, "seq": 2})]
        for frames in (good, unknown, future, [b"x", b"\x00garbage"]):
            publisher.socket.send_multipart(frames)
        publisher.seq = 3
        publisher.send(msg.Heartbeat())
        assert wait_until(lambda: state.view().health["responses"].transport["malformed"] == 1)
    finally:
        receiver.stop()
        publisher.close()
    health = state.view().health["responses"]
    assert health.transport["unknown_type"] == 1 and health.transport["wrong_schema"] == 1
    assert health.by_type["BlockStatus"] == 1 and health.ignored["Heartbeat"] == 1
    assert "3 rejected (1 malformed, 1 wrong schema, 1 unknown type)" in health.line()
    assert receiver.error is None


def test_a_restarted_publisher_shows_as_a_restart_and_is_received_again():
    endpoint = tcp_endpoint()
    first = Publisher(endpoint, source="presenter", linger_ms=0)
    endpoint = first.endpoint
    state = MonitorState()
    receiver = StreamReceiver({"stimulus": endpoint}, state).start()
    shown = msg.StimulusShown(stimulus_id=1, trial=0, block=0, flip_time=0.0, n_frames=6)
    try:
        assert wait_until(lambda: (first.send(shown), state.view().now is not None)[1])
        for _ in range(100):  # a presenter that has been running a while
            first.send(shown)
        assert wait_until(lambda: state.view().health["stimulus"].by_type["StimulusShown"] >= 100)
        first.close()  # the presenter crashes ...
        second = rebind(endpoint, source="presenter")  # ... and comes back: seq starts at 0 again
        later = msg.StimulusShown(stimulus_id=2, trial=1, block=0, flip_time=0.1, n_frames=6)
        assert wait_until(lambda: (second.send(later), state.view().now.stimulus_id == 2)[1], 20)
        second.close()
    finally:
        receiver.stop()
    assert state.view().health["stimulus"].transport["restarts"] == 1


def rebind(endpoint: str, **options) -> Publisher:
    """A publisher on the port just closed (the OS may need a moment to free it)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return Publisher(endpoint, **options)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_silent_stream_is_named():
    state = MonitorState()
    health = state.stream("responses", "tcp://10.0.0.9:5604")
    assert health.line(now=health.since + 1) == "runner: 0 msgs"
    assert "no messages yet" in health.line(now=health.since + SILENT_AFTER_S + 1)
    state.ingest("responses", msg.BlockStatus(block=0, kind="natural", state="started"))
    text = state.view().health["responses"].line(now=time.monotonic() + 7)
    assert text.startswith("no messages from runner for 7 s")


def test_endpoints_from_host_and_rig_ports():
    from closedloop.config.rig import Network, Ports

    assert host_endpoints("rig-pc")["spikes"] == "tcp://rig-pc:5601"
    network = Network(host="10.1.2.3", ports=Ports(responses=7004))
    from closedloop.monitor.stream import rig_endpoints

    assert rig_endpoints(network)["responses"] == "tcp://10.1.2.3:7004"
    with pytest.raises(ValueError, match="unknown stream"):
        StreamReceiver({"blocks": "tcp://127.0.0.1:5605"}, MonitorState())
