"""The acquisition buffer the runner and replay drain their stream with."""

from __future__ import annotations

import numpy as np
import zmq

from closedloop.acquisition.buffer import AcquisitionBuffer
from closedloop.messages import Heartbeat, SpikeBatch, StimulusShown, SyncEvent
from closedloop.transport import Publisher, inproc_endpoint


def _connected(context: zmq.Context, **options) -> tuple[Publisher, AcquisitionBuffer]:
    publisher = Publisher(inproc_endpoint("buffer"), source="array", context=context)
    buffer = AcquisitionBuffer(publisher.endpoint, "test", **options)
    for _ in range(200):  # PUB/SUB joins late: until the subscription has propagated
        publisher.send(Heartbeat(state="running"))
        if buffer.poll():
            return publisher, buffer
        buffer.socket.poll(10)
    raise AssertionError("never connected")


def test_spikes_and_sync_pile_up_until_taken_and_heartbeats_are_noted():
    context = zmq.Context.instance()  # the buffer's subscriber uses it too (inproc)
    others = []
    publisher, buffer = _connected(context, on_other=others.append)
    try:
        beats = buffer.heartbeats
        publisher.send(SpikeBatch(unit_ids=np.array([1, 2]), times=np.array([0.5, 0.7])))
        publisher.send(SyncEvent(line=1, state=1, time=0.4))
        publisher.send(SyncEvent(line=1, state=0, time=0.45))
        publisher.send(SyncEvent(line=2, state=1, time=0.46))
        publisher.send(SpikeBatch(unit_ids=np.array([3]), times=np.array([0.9])))
        publisher.send(StimulusShown(stimulus_id=1, trial=0, block=0, flip_time=0.1, n_frames=3))
        publisher.send(Heartbeat(state="finished"))
        received = 0
        for _ in range(100):
            received += buffer.poll()
            if buffer.finished:
                break
            buffer.socket.poll(10)
        assert received >= 7 and buffer.finished and buffer.heartbeats > beats
        assert buffer.horizon == 0.9 and len(others) == 1 and isinstance(others[0], StimulusShown)
        np.testing.assert_array_equal(buffer.pending_edges(1), [0.4])
        data = buffer.take()
        np.testing.assert_array_equal(data.spike_units, [1, 2, 3])
        np.testing.assert_array_equal(data.spike_times, [0.5, 0.7, 0.9])
        np.testing.assert_array_equal(data.rising_edges(1), [0.4])
        np.testing.assert_array_equal(data.sync_lines, [1, 1, 2])
        assert buffer.take().empty and buffer.horizon == 0.9  # taken once; the horizon stays
    finally:
        buffer.close()
        publisher.close()


def test_replay_keeps_spikes_until_forgotten_by_time():
    context = zmq.Context.instance()
    publisher, buffer = _connected(context)
    try:
        publisher.send(SpikeBatch(unit_ids=np.array([1, 2, 3]), times=np.array([0.1, 0.2, 0.3])))
        publisher.send(SpikeBatch(unit_ids=np.array([4]), times=np.array([0.4])))
        for _ in range(100):
            buffer.poll()
            if buffer.spikes()[1].size == 4:
                break
            buffer.socket.poll(10)
        buffer.forget_spikes(0.25)
        units, times = buffer.spikes()
        np.testing.assert_array_equal(units, [3, 4])
        np.testing.assert_array_equal(times, [0.3, 0.4])
        times, lines, states = buffer.take_sync()
        assert times.size == lines.size == states.size == 0
    finally:
        buffer.close()
        publisher.close()
