"""Publish our spikes and TTL edges the way the Open Ephys Event Broadcaster does.

Lets the simulated array stand in for an Open Ephys GUI: any client of the Event
Broadcaster (our `OpenEphysAdapter`, ``open_ephys.streaming.EventListener``, a lab's
own scripts) can listen to it.  One message per event, as the plugin sends them
(JSON written as JUCE writes it, TTL ``line`` 0-based, ``state`` a JSON bool); the
frames come from `closedloop.acquisition.openephys_format`.

A `BroadcastLayout` says how units appear: the plain one is one stream whose
counter starts at 0, ``"Electrode {channel + 1}"``; `gui_layout` is what a two-stream
GUI sends (the same electrode names in both streams, tetrodes, hardware counters that
do not start at 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zmq

from closedloop.acquisition.openephys_format import encode_spike, encode_ttl
from closedloop.acquisition.openephys_units import electrode_layout
from closedloop.transport.security import PLAIN
from closedloop.transport.sockets import open_socket

#: The Event Broadcaster sends one message per spike: allow ~10 s of a 10 kHz population.
BROADCAST_HWM = 100_000


@dataclass(frozen=True)
class BroadcastLayout:
    """Per unit (index order): stream, electrode name, sorted id; per stream: first sample number.

    TTL edges go out on ``ttl_stream``.
    """

    streams: tuple[str, ...]
    electrodes: tuple[str, ...]
    sorted_ids: tuple[int, ...]
    counter_start: dict[str, int]
    ttl_stream: str


def plain_layout(channels: np.ndarray, stream: str = "closedloop") -> BroadcastLayout:
    """One stream from sample 0, channel ``c`` named ``"Electrode {c + 1}"`` (`electrode_layout`)."""
    names, sorted_ids = electrode_layout(channels)
    return BroadcastLayout((stream,) * len(names), tuple(names), tuple(int(s) for s in sorted_ids), {stream: 0}, stream)


def gui_layout(
    channels: np.ndarray,
    streams: tuple[str, str] = ("Acquisition Board", "Probe B"),
    counter_start: tuple[int, int] = (1_234_567, 98_765_432),
) -> BroadcastLayout:
    """Two streams as a GUI sends them: even channels on the first, odd on the second.

    Within a stream, channel ``c`` is electrode ``c // 2 + 1``, named ``"Tetrode N"`` when
    N is a multiple of 4 and ``"Electrode N"`` otherwise, so both streams have an
    ``"Electrode 1"``; units sharing an electrode get sorted ids 1, 2, ….  TTLs go out on
    the first stream.
    """
    channels = np.asarray(channels, dtype=np.int64)
    names, per_stream, sorted_ids = [], [], []
    seen: dict[tuple[str, str], int] = {}
    for c in channels.tolist():
        stream = streams[c % 2]
        number = c // 2 + 1
        name = f"Tetrode {number}" if number % 4 == 0 else f"Electrode {number}"
        seen[(stream, name)] = seen.get((stream, name), 0) + 1
        names.append(name)
        per_stream.append(stream)
        sorted_ids.append(seen[(stream, name)])
    return BroadcastLayout(
        tuple(per_stream), tuple(names), tuple(sorted_ids), dict(zip(streams, counter_start)), streams[0]
    )


class EventBroadcaster:
    """A PUB socket speaking the Event Broadcaster's two-frame JSON format.

    Parameters
    ----------
    endpoint
        Where to bind (e.g. ``tcp://127.0.0.1:5557``, the plugin's default port).
    sample_rate
        Samples per second: time ``t`` is sample ``counter_start + round(t · sample_rate)``.
    channels
        (n_units,) channel of each unit (unit index order), named by ``layout``.
    layout
        How units appear (default `plain_layout`).
    """

    def __init__(
        self,
        endpoint: str,
        sample_rate: float,
        channels: np.ndarray,
        *,
        layout: BroadcastLayout | None = None,
        context: zmq.Context | None = None,
    ):
        if not np.isfinite(sample_rate) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate!r}")
        self.socket, self.endpoint = open_socket(
            zmq.PUB, endpoint, bind=True, context=context, sndhwm=BROADCAST_HWM, linger_ms=1000, security=PLAIN
        )
        self.sample_rate = float(sample_rate)
        self.layout = layout or plain_layout(channels)
        if len(self.layout.electrodes) != len(np.asarray(channels)):
            raise ValueError(f"layout names {len(self.layout.electrodes)} units, channels {len(channels)}")
        self.sent = 0

    def send(self, unit_index: np.ndarray, times: np.ndarray, sync: list[tuple[int, int, float]]) -> None:
        """Spikes (by unit index) and TTL edges (line as the GUI numbers it, from 1), in time order."""
        layout = self.layout
        # (time, 0, unit index) for a spike, (time, 1, (line, state)) for a TTL edge.
        events: list[tuple[float, int, int | tuple[int, int]]] = [(t, 0, int(u)) for u, t in zip(unit_index, times)]
        events += [(t, 1, (line, state)) for line, state, t in sync]
        events.sort(key=lambda e: (e[0], e[1]))
        for t, _, what in events:
            sample = int(round(t * self.sample_rate))
            if isinstance(what, tuple):  # a TTL edge
                line, state = what
                stream = layout.ttl_stream
                frames = encode_ttl(
                    sample + layout.counter_start[stream], self.sample_rate, line - 1, bool(state), stream=stream
                )
            else:
                stream = layout.streams[what]
                frames = encode_spike(
                    sample + layout.counter_start[stream],
                    self.sample_rate,
                    layout.electrodes[what],
                    layout.sorted_ids[what],
                    stream=stream,
                    amplitudes=(42.5,) * (4 if layout.electrodes[what].startswith("Tetrode") else 1),
                )
            try:
                self.socket.send_multipart(frames, zmq.NOBLOCK)
                self.sent += 1
            except zmq.Again:
                pass  # PUB never blocks; a full peer loses events, as with the real plugin

    def close(self) -> None:
        if not self.socket.closed:
            self.socket.close()
