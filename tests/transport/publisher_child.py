"""A publisher process for the cross-process tests.

``python publisher_child.py ENDPOINT SOURCE MODE N``: connects a Publisher to ENDPOINT,
sends Heartbeats every 5 ms until it reads "go" on stdin, then
- ``burst``: sends N SpikeBatch messages of 100 spikes as fast as it can, prints "sent",
  and exits after flushing;
- ``stream``: sends SpikeBatch messages at ~2 kHz until killed.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np

from closedloop.messages import Heartbeat, SpikeBatch
from closedloop.transport import Publisher


def main() -> None:
    endpoint, source, mode, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    go = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), go.set()), daemon=True).start()
    units = np.arange(100, dtype=np.int32) % 7
    with Publisher(endpoint, source=source, bind=False) as publisher:
        while not go.is_set():
            publisher.send(Heartbeat(state="waiting"))
            time.sleep(0.005)
        if mode == "burst":
            for i in range(n):
                publisher.send(SpikeBatch(unit_ids=units, times=np.full(100, float(i))))
            print("sent", flush=True)
        else:
            i = 0
            while True:
                publisher.send(SpikeBatch(unit_ids=units, times=np.full(100, float(i))))
                i += 1
                time.sleep(0.0005)


if __name__ == "__main__":
    main()
