"""A stand-in Open Ephys Event Broadcaster in its own process, written from the plugin's source.

What ``EventBroadcaster::sendEvent`` / ``sendSpike`` (GUI 0.6+, Format: JSON) send: two
frames, a host-order uint16 type and the JSON that JUCE's ``JSON::toString`` writes
(pretty-printed, CRLF), TTL ``state`` a bool, ``line`` 0-based.  The GUI it imitates has
two streams with their own hardware counters (not starting at 0) and the same electrode
names, and a tetrode.

``python fake_broadcaster.py ENDPOINT``: binds a PUB socket and sends a TTL on line 7 of
stream A every 20 ms until "go" arrives on stdin; then sends, in order, bad messages of
every kind and the good events of `GOOD`, prints "sent" and waits for stdin to close.
"""

from __future__ import annotations

import json
import struct
import sys
import threading
import time

import zmq

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from closedloop.acquisition.openephys_format import encode_spike, encode_ttl, juce_json, type_frame  # noqa: E402

RATE = 30000.0
A, B = "Acquisition Board", "Probe B"
START = {A: 1_234_567, B: 98_765_432}  # hardware counters when acquisition started
# (kind, stream, sample after start, electrode or 0-based line, sorted_id or state)
GOOD = [
    ("ttl", A, 3000, 0, True),
    ("spike", A, 3300, "Electrode 3", 1),
    ("spike", A, 3450, "Tetrode 2", 2),
    ("spike", B, 3300, "Electrode 3", 1),
    ("ttl", B, 3400, 0, True),
    ("ttl", A, 6000, 0, False),
    ("spike", A, 6300, "Electrode 3", 0),
    ("spike", "Unlisted", 10, "Electrode 1", 1),
]


def _json(event_type: str, **fields) -> bytes:
    return juce_json({"event_type": event_type, "stream": A, "source_node": 104, "sample_rate": RATE, **fields})


BAD = [
    [type_frame(1)],  # one frame
    [type_frame(1), b"{}", b"extra"],  # three frames, not the plugin's 2
    [b"\x01", b"{}"],  # type frame of 1 byte
    [type_frame(1), b"\xff\xfe not json"],  # junk bytes: read as the Raw Binary format
    [type_frame(1), b"[1, 2]"],  # JSON but not an object
    [type_frame(0), _json("ttl", sample_number="x", line=1, state=True)],  # mistyped field
    [type_frame(1), _json("spike", sample_number=5)],  # no electrode
    [type_frame(5), b"{}"],  # unknown type code
    [type_frame(1), _json("lfp", sample_number=1)],  # unknown event_type
    [type_frame(1), json.dumps({"event_type": "spike", "pad": "x" * 100_000}).encode()],  # oversized
    [type_frame(1), _json("spike", sample_number=9, electrode="no number", sorted_id=1)],  # unmapped
    [type_frame(1), _json("spike", sample_number=9, electrode="Electrode 1099511627776", sorted_id=1)],
    [type_frame(1), _json("spike", sample_number=1e30, electrode="Electrode 1", sorted_id=1)],
    [type_frame(0), _json("ttl", sample_number=9, line=0, state=True, sample_rate=1e-300)],
    [type_frame(0), _json("ttl", sample_number=9, line=0, state=2)],  # state neither bool nor 0/1
    [type_frame(1), struct.pack("<BHqq", 1, 2, 3, 4)],  # the plugin's Raw Binary format
    [type_frame(0), struct.pack("<d", 1.5), b"\x00" * 10],  # GUI 0.4: type, timestamp, raw event
]


def main() -> None:
    go = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), go.set()), daemon=True).start()
    socket = zmq.Context.instance().socket(zmq.PUB)
    socket.setsockopt(zmq.LINGER, 2000)
    socket.bind(sys.argv[1])
    while not go.is_set():
        socket.send_multipart(encode_ttl(START[A], RATE, 7, True, stream=A))
        time.sleep(0.02)
    for frames in BAD:
        socket.send_multipart(frames)
    for kind, stream, sample, where, what in GOOD:
        sample += START.get(stream, 0)
        if kind == "ttl":
            frames = encode_ttl(sample, RATE, where, what, stream=stream)
        else:
            amplitudes = (40.0, 41.0, 42.0, 43.0) if where.startswith("Tetrode") else (40.0,)
            frames = encode_spike(sample, RATE, where, what, stream=stream, amplitudes=amplitudes)
        socket.send_multipart(frames)
    print("sent", flush=True)
    sys.stdin.read()
    socket.close()


if __name__ == "__main__":
    main()
