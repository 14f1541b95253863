"""A stand-in Open Ephys Event Broadcaster in its own process (the documented two-frame format).

``python fake_broadcaster.py ENDPOINT``: binds a PUB socket and sends a TTL on line 7
every 20 ms until "go" arrives on stdin; then sends, in order, bad messages of every
kind and the good events of `GOOD`, prints "sent" and waits for stdin to close.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import zmq

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from closedloop.acquisition.openephys_format import encode_spike, encode_ttl, type_frame  # noqa: E402

RATE = 30000.0
# (kind, sample_number, electrode or line, sorted_id or state)
GOOD = [("ttl", 3000, 1, 1), ("spike", 3300, "Electrode 3", 1), ("spike", 3450, "Electrode 12", 2),
        ("ttl", 6000, 1, 0), ("spike", 6300, "Electrode 3", 0)]
BAD = [
    [type_frame(1)],  # one frame
    [type_frame(1), b"{}", b"extra"],  # three frames
    [b"\x01", b"{}"],  # type frame of 1 byte
    [type_frame(1), b"\xff\xfe not json"],  # junk bytes
    [type_frame(1), b"[1, 2]"],  # JSON but not an object
    [type_frame(0), json.dumps({"event_type": "ttl", "sample_number": "x", "sample_rate": RATE,
                                "line": 1, "state": 1}).encode()],  # mistyped field
    [type_frame(1), json.dumps({"event_type": "spike", "sample_number": 5, "sample_rate": RATE}).encode()],
    [type_frame(5), b"{}"],  # unknown type code
    [type_frame(1), json.dumps({"event_type": "lfp", "sample_number": 1, "sample_rate": RATE}).encode()],
    [type_frame(1), json.dumps({"event_type": "spike", "pad": "x" * 100_000}).encode()],  # oversized
    [type_frame(1), json.dumps({"event_type": "spike", "sample_number": 9, "sample_rate": RATE,
                                "electrode": "no number", "sorted_id": 1}).encode()],  # unmapped
]


def main() -> None:
    go = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), go.set()), daemon=True).start()
    socket = zmq.Context.instance().socket(zmq.PUB)
    socket.setsockopt(zmq.LINGER, 2000)
    socket.bind(sys.argv[1])
    while not go.is_set():
        socket.send_multipart(encode_ttl(0, RATE, 7, 1))
        time.sleep(0.02)
    for frames in BAD:
        socket.send_multipart(frames)
    for kind, sample, where, what in GOOD:
        frames = encode_ttl(sample, RATE, where, what) if kind == "ttl" else encode_spike(sample, RATE, where, what)
        socket.send_multipart(frames)
    print("sent", flush=True)
    sys.stdin.read()
    socket.close()


if __name__ == "__main__":
    main()
