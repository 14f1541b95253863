"""Crafted Event Broadcaster messages never stop the translator: each is placed or counted."""

from __future__ import annotations

import json
import math
import time

import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop.acquisition import OpenEphysAdapter
from closedloop.acquisition.openephys_clock import OtherStream
from closedloop.acquisition.openephys_format import encode_spike, type_frame
from closedloop.runtime import Supervisor
from closedloop.transport import Subscriber, random_tcp_endpoint

from .helpers import collect

numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 255, 256, 65535, 2**62, 2**63, 1e30, 1e-300, -1, True, False]),
)
anything = st.one_of(
    numbers,
    st.none(),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
names = st.one_of(
    st.sampled_from(
        [
            "Electrode 1",
            "Tetrode 2",
            "Stereotrode 3",
            "Electrode 1099511627776",
            "Electrode 3000000",
            "TT12",
            "",
            "Electrode -1",
            "Électrode 1",
        ]
    ),
    st.text(max_size=20),
)
FIELDS = {
    "event_type": st.one_of(st.sampled_from(["ttl", "spike", "lfp"]), anything),
    "stream": st.one_of(st.sampled_from(["A", "B", "C"]), anything),
    "source_node": anything,
    "sample_rate": st.one_of(st.sampled_from([30000.0, 30000]), numbers, anything),
    "sample_number": st.one_of(st.integers(0, 10**6), numbers, anything),
    "line": st.one_of(numbers, anything),
    "state": st.one_of(st.booleans(), numbers, anything),
    "electrode": st.one_of(names, anything),
    "sorted_id": st.one_of(st.integers(0, 5), numbers, anything),
    "num_channels": anything,
    "amp1": numbers,
}
events = st.fixed_dictionaries({}, optional=FIELDS)
type_frames = st.one_of(st.sampled_from([type_frame(0), type_frame(1)]), st.binary(max_size=4))


def _frames(kind: bytes, body: dict, pretty: bool) -> list[bytes]:
    text = json.dumps(body, indent=2 if pretty else None, allow_nan=True)  # NaN/Infinity as a careless peer writes
    return [kind, text.encode()]


def _adapter(endpoint: str, event_endpoint: str) -> OpenEphysAdapter:
    return OpenEphysAdapter(
        endpoint, event_endpoint, photodiode_line=1, clock_stream="A", streams=[OtherStream("B", 1.5)]
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=type_frames, body=events, pretty=st.booleans())
def test_every_crafted_event_is_placed_or_counted(kind, body, pretty):
    adapter = _adapter("inproc://unused", "inproc://unused")
    out = ([], [], [], [])
    adapter.translate(_frames(kind, body, pretty), out)
    placed = len(out[2]) + len(out[3])
    outcomes = placed + sum(v for k, v in adapter.counts.items() if k not in ("events", "spikes", "ttl"))
    assert outcomes == 1  # placed, or counted under exactly one reason
    assert all(len(part) == len(out[0]) for part in out[:3])
    for t in out[2] + [edge[2] for edge in out[3]]:
        assert math.isfinite(t) and 0 <= t < 2**62  # finite, non-negative session times
    for unit in out[0]:
        assert 0 <= unit < 9_000_000_000


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(st.tuples(type_frames, events, st.booleans()), max_size=20))
def test_a_translator_still_learning_its_clock_never_raises(messages):
    adapter = OpenEphysAdapter("inproc://unused", "inproc://unused", photodiode_line=1)  # clock from the data
    out = ([], [], [], [])
    for kind, body, pretty in messages:
        adapter.translate(_frames(kind, body, pretty), out)
    assert len(adapter.clocks.held) <= len(messages)
    assert all(math.isfinite(t) for t in out[2])


def test_the_live_translator_survives_a_flood_of_crafted_events():
    """The same strategy, sent over a real socket to a running adapter, then a good event gets through."""
    event_endpoint, endpoint = random_tcp_endpoint(), random_tcp_endpoint()
    publisher = zmq.Context.instance().socket(zmq.PUB)
    publisher.setsockopt(zmq.LINGER, 0)
    publisher.bind(event_endpoint)
    adapter = _adapter(endpoint, event_endpoint)
    supervisor = Supervisor([adapter], mode="thread")
    sent = []

    @settings(max_examples=300, deadline=None, database=None)
    @given(kind=type_frames, body=events, pretty=st.booleans())
    def send(kind, body, pretty):
        frames = _frames(kind, body, pretty)
        publisher.send_multipart(frames)
        sent.append(frames)

    try:
        with Subscriber(endpoint, name="test") as sub:
            assert supervisor.start()
            good = encode_spike(30000, 30000.0, "Electrode 5", 1, stream="A")
            deadline = time.monotonic() + 10
            while adapter.counts["spikes"] == 0 and time.monotonic() < deadline:  # until connected
                publisher.send_multipart(good)
                time.sleep(0.05)
            send()
            publisher.send_multipart(encode_spike(60000, 30000.0, "Electrode 6", 2, stream="A"))
            got = collect(sub, lambda c: 6002 in c.unit_ids.tolist(), timeout_s=20)
        report = supervisor.shutdown()
    finally:
        publisher.close()
    assert report.ok and report.components[adapter.name].state != "failed"
    assert got.times[got.unit_ids == 6002].tolist() == [2.0]
    assert adapter.counts["events"] + sum(
        adapter.counts[k] for k in ("malformed", "out_of_range", "oversized", "unknown_type", "wrong_format")
    ) >= len(sent)
