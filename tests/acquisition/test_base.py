"""The adapter base: batching by count and age, time order around sync edges, sequence numbers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from closedloop.acquisition.base import AcquisitionAdapter, Acquired, PlaybackClock
from closedloop.messages import Heartbeat
from closedloop.transport import Subscriber, tcp_endpoint

from .helpers import collect


class ScriptedAdapter(AcquisitionAdapter):
    """Returns the scripted chunks one per step, then finishes."""

    def __init__(self, endpoint: str, chunks: list[Acquired], **options):
        super().__init__("scripted", endpoint, **options)
        self.chunks = list(chunks)

    def acquire(self) -> Acquired:
        if not self.chunks:
            return Acquired(finished=True)
        return self.chunks.pop(0)


def run_and_collect(adapter: ScriptedAdapter, expected_spikes: int):
    with Subscriber(tcp_endpoint(), bind=True, name="test") as sub:
        adapter.endpoint = sub.endpoint
        adapter.bind = False
        adapter.setup()
        try:
            deadline = time.monotonic() + 10
            while sub.recv(20) is None:  # PUB drops until the subscriber is connected
                assert time.monotonic() < deadline, "never connected"
                adapter._send(Heartbeat(state="waiting"))
            while adapter.step():
                pass
            got = collect(
                sub, lambda c: len(c.times) >= expected_spikes and any(h.state == "finished" for h in c.heartbeats)
            )
        finally:
            adapter.teardown()
        return got, sub.stats


def test_spikes_go_out_in_batches_of_at_most_batch_spikes_in_time_order():
    times = np.sort(np.random.default_rng(0).uniform(0, 1, 25))
    chunk = Acquired(unit_ids=np.arange(25) % 4, times=times, sync=[(1, 1, 0.5)])
    adapter = ScriptedAdapter("tcp://127.0.0.1:1", [chunk], batch_spikes=10, batch_ms=1000)
    got, stats = run_and_collect(adapter, 25)
    assert np.array_equal(got.times, times)
    assert all(len(b.times) <= 10 for b in got.batches)
    # the sync edge at 0.5 s comes after every spike before it and before every spike after it
    assert np.all(np.diff(got.stream_times) >= 0)
    assert sorted(t for t in got.stream_times) == got.stream_times
    assert (stats.gaps, stats.missing, stats.rejected) == (0, 0, 0)
    assert adapter.stats.spikes == 25 and adapter.stats.sync_events == 1
    assert got.order.count("SpikeBatch") == adapter.stats.batches


def test_waiting_spikes_are_flushed_after_batch_ms():
    class Slow(ScriptedAdapter):
        def acquire(self) -> Acquired:
            time.sleep(0.004)
            return super().acquire()

    chunks = [Acquired(unit_ids=[1], times=[0.001 * i]) for i in range(30)]
    adapter = Slow("tcp://127.0.0.1:1", chunks, batch_spikes=10_000, batch_ms=20)
    got, _ = run_and_collect(adapter, 30)
    # 30 steps of >= 4 ms with a 20 ms age limit: several batches, not one per spike and not one in all
    assert 2 <= len(got.batches) <= 12
    assert np.array_equal(got.times, 0.001 * np.arange(30))


def test_channels_travel_when_given():
    chunk = Acquired(unit_ids=[3, 4], times=[0.1, 0.2], channels=[7, 8])
    got, _ = run_and_collect(ScriptedAdapter("tcp://127.0.0.1:1", [chunk]), 2)
    assert got.batches[0].channels.tolist() == [7, 8]


def test_mismatched_arrays_are_a_bug_in_the_adapter():
    adapter = ScriptedAdapter("tcp://127.0.0.1:1", [])
    with pytest.raises(ValueError, match="different lengths"):
        adapter.publish(Acquired(unit_ids=[1, 2], times=[0.1]))


def test_playback_clock():
    clock = PlaybackClock(10.0)
    clock.start()
    time.sleep(0.05)
    assert 0.4 <= clock.now_s() < 2.0
    assert PlaybackClock(0).now_s() == float("inf")
    with pytest.raises(ValueError):
        PlaybackClock(-1)
