"""Publish our spikes and TTL edges the way the Open Ephys Event Broadcaster does.

Lets the simulated array stand in for an Open Ephys GUI: any client of the Event
Broadcaster (our `OpenEphysAdapter`, ``open_ephys.streaming.EventListener``, a lab's
own scripts) can listen to it.  One message per event, as the plugin sends them; the
frames come from `closedloop.acquisition.openephys_format`.
"""

from __future__ import annotations

import numpy as np
import zmq

from closedloop.acquisition.openephys_format import electrode_layout, encode_spike, encode_ttl
from closedloop.transport.security import PLAIN
from closedloop.transport.sockets import open_socket

#: The Event Broadcaster sends one message per spike: allow ~10 s of a 10 kHz population.
BROADCAST_HWM = 100_000


class EventBroadcaster:
    """A PUB socket speaking the Event Broadcaster's two-frame JSON format.

    Parameters
    ----------
    endpoint
        Where to bind (e.g. ``tcp://127.0.0.1:5557``, the plugin's default port).
    sample_rate
        Samples per second: event times become ``round(t · sample_rate)`` sample numbers.
    channels
        (n_units,) channel of each unit (unit index order); names and sorted ids follow
        `electrode_layout`.
    """

    def __init__(self, endpoint: str, sample_rate: float, channels: np.ndarray, *,
                 context: zmq.Context | None = None):
        if not np.isfinite(sample_rate) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate!r}")
        self.socket, self.endpoint = open_socket(zmq.PUB, endpoint, bind=True, context=context,
                                                 sndhwm=BROADCAST_HWM, linger_ms=1000, security=PLAIN)
        self.sample_rate = float(sample_rate)
        self.electrodes, self.sorted_ids = electrode_layout(channels)
        self.sent = 0

    def send(self, unit_index: np.ndarray, times: np.ndarray, sync: list[tuple[int, int, float]]) -> None:
        """Spikes (by unit index) and TTL edges, merged in time order."""
        events = [(t, 0, int(u)) for u, t in zip(unit_index, times)]
        events += [(t, 1, (line, state)) for line, state, t in sync]
        events.sort(key=lambda e: (e[0], e[1]))
        for t, is_ttl, what in events:
            sample = int(round(t * self.sample_rate))
            if is_ttl:
                frames = encode_ttl(sample, self.sample_rate, what[0], what[1])
            else:
                frames = encode_spike(sample, self.sample_rate, self.electrodes[what], int(self.sorted_ids[what]))
            try:
                self.socket.send_multipart(frames, zmq.NOBLOCK)
                self.sent += 1
            except zmq.Again:
                pass  # PUB never blocks; a full peer loses events, as with the real plugin

    def close(self) -> None:
        if not self.socket.closed:
            self.socket.close()
