"""Acquisition from the Open Ephys GUI's Event Broadcaster (REFERENCE.md).

Subscribes to the plugin's PUB socket (``tcp://HOST:5557`` by default) and translates
its events into our stream, on one clock:

- time: ``sample_number / sample_rate`` seconds (the event's own ``sample_rate``; the
  rig's ``sample_rate_hz`` is only a cross-check, a mismatch is counted and logged);
  the GUI's streams are taken to share one start of acquisition;
- spikes: unit id ``electrode_number × 1000 + sorted_id`` and channel = electrode
  number (`closedloop.acquisition.openephys_format`); ``sorted_id`` 0 is the unsorted
  multi-unit activity of the electrode and kept unless ``drop_unsorted``;
- TTL: every line's edges become `SyncEvent` (``line``, ``state``) as sent; the runner
  picks the photodiode line.

Bad input never stops the adapter: each rejected message (wrong frame count, bad
type frame, non-JSON, missing or mistyped fields, oversized, unknown ``event_type``,
unmapped electrode) is counted by kind and logged, rate-limited.  The plugin numbers
nothing, so lost events cannot be counted; silence longer than ``silence_s`` is logged
(a GUI that stopped or vanished), and the stream's heartbeats go on meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import numpy as np
import zmq

from closedloop.acquisition.base import AcquisitionAdapter, Acquired
from closedloop.acquisition.openephys_format import (
    MAX_EVENT_BYTES, EventFormatError, decode, electrode_number, unit_id_for,
)
from closedloop.transport.receiver import RateLimitedLog
from closedloop.transport.security import PLAIN
from closedloop.transport.sockets import open_socket

logger = logging.getLogger(__name__)

#: One message per event: 100 000 is several seconds of a busy array before drops.
EVENT_RCVHWM = 100_000
EVENTS_PER_STEP = 20_000
#: libzmq drops (uncounted) a connection that sends more than this in one frame: a guard
#: for memory only; events above ``max_event_bytes`` still arrive and are counted as oversized.
MAX_WIRE_BYTES = 16 * 1024 * 1024


class OpenEphysAdapter(AcquisitionAdapter):
    """Translate Event Broadcaster events into SpikeBatch / SyncEvent.

    Parameters
    ----------
    endpoint
        Where our spike stream is published.
    event_endpoint
        The Event Broadcaster's endpoint (connected to).
    sample_rate_hz
        Expected sample rate (rig file), used when checking events.
    electrodes
        Optional ``{electrode name: number}``; default: the name's trailing integer.
    drop_unsorted
        Drop spikes with ``sorted_id`` 0.
    silence_s
        Log when no event has arrived for this long.
    """

    def __init__(self, endpoint: str, event_endpoint: str, *, name: str = "openephys",
                 sample_rate_hz: float = 30000.0, electrodes: Mapping[str, int] | None = None,
                 drop_unsorted: bool = False, silence_s: float = 5.0, max_event_bytes: int = MAX_EVENT_BYTES,
                 **adapter_options):
        super().__init__(name, endpoint, **adapter_options)
        self.event_endpoint = event_endpoint
        self.sample_rate_hz = float(sample_rate_hz)
        self.electrodes = dict(electrodes) if electrodes else None
        self.drop_unsorted = bool(drop_unsorted)
        self.silence_s = float(silence_s)
        self.max_event_bytes = int(max_event_bytes)
        self.counts = {"events": 0, "spikes": 0, "ttl": 0, "malformed": 0, "oversized": 0, "unknown_type": 0,
                       "unmapped_electrode": 0, "unsorted_dropped": 0, "rate_mismatch": 0, "silences": 0}
        self.socket: zmq.Socket | None = None

    def open(self) -> None:
        self.socket, _ = open_socket(zmq.SUB, self.event_endpoint, bind=False, rcvhwm=EVENT_RCVHWM,
                                     options={zmq.MAXMSGSIZE: MAX_WIRE_BYTES},
                                     security=PLAIN)  # Open Ephys's broadcaster speaks no CURVE
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self._warn = RateLimitedLog(logger, 2.0)
        self._last_event = time.monotonic()
        self._silent = False

    def close(self) -> None:
        if self.socket is not None and not self.socket.closed:
            self.socket.close()

    def input_stats(self) -> dict[str, int]:
        return dict(self.counts)

    def acquire(self) -> Acquired:
        assert self.socket is not None
        units: list[int] = []
        channels: list[int] = []
        times: list[float] = []
        sync: list[tuple[int, int, float]] = []
        if self.socket.poll(5, zmq.POLLIN):
            for _ in range(EVENTS_PER_STEP):
                try:
                    frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self._translate(frames, units, channels, times, sync)
        self._watch_silence()
        order = np.argsort(np.asarray(times), kind="stable")
        return Acquired(unit_ids=np.asarray(units, dtype=np.int64)[order],
                        times=np.asarray(times, dtype=np.float64)[order],
                        channels=np.asarray(channels, dtype=np.int32)[order], sync=sync)

    def _translate(self, frames: list, units: list[int], channels: list[int], times: list[float],
                   sync: list[tuple[int, int, float]]) -> None:
        self._last_event = time.monotonic()
        try:
            event = decode(frames, max_bytes=self.max_event_bytes)
        except EventFormatError as error:
            self._reject(error.kind, str(error))
            return
        self.counts["events"] += 1
        if abs(event.sample_rate - self.sample_rate_hz) > 1e-6 * self.sample_rate_hz:
            self.counts["rate_mismatch"] += 1
            self._warn.warning("rate", "%s: event at %g Hz but the rig says %g Hz (stream %r); using the event's "
                               "rate; %d so far", self.name, event.sample_rate, self.sample_rate_hz, event.stream,
                               self.counts["rate_mismatch"])
        if event.event_type == "ttl":
            self.counts["ttl"] += 1
            sync.append((event.line, event.state, event.time_s))
            return
        number = electrode_number(event.electrode, self.electrodes)
        if number is None:
            self._reject("unmapped_electrode", f"electrode {event.electrode[:40]!r} has no number")
            return
        if event.sorted_id == 0 and self.drop_unsorted:
            self.counts["unsorted_dropped"] += 1
            return
        try:
            unit = unit_id_for(number, event.sorted_id)
        except ValueError as error:
            self._reject("malformed", str(error))
            return
        self.counts["spikes"] += 1
        units.append(unit)
        channels.append(number)
        times.append(event.time_s)

    def _reject(self, kind: str, text: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self._warn.warning(kind, "%s: rejected an Event Broadcaster message (%s); %d %s so far",
                           self.name, text, self.counts[kind], kind)

    def _watch_silence(self) -> None:
        quiet = time.monotonic() - self._last_event
        if quiet > self.silence_s and not self._silent:
            self._silent = True
            self.counts["silences"] += 1
            logger.warning("%s: no event from %s for %.1f s (GUI stopped, acquisition paused, or gone?)",
                           self.name, self.event_endpoint, quiet)
        elif quiet <= self.silence_s and self._silent:
            self._silent = False
            logger.info("%s: events from %s again", self.name, self.event_endpoint)
