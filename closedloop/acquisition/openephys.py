"""Acquisition from the Open Ephys GUI's Event Broadcaster plugin (Format: JSON).

Subscribes to the plugin's PUB socket (``tcp://HOST:5557`` by default) and translates
its events into our stream, on one clock:

- time: the session clock is one stream's sample clock (`closedloop.acquisition.openephys_clock`):
  ``sample_number / sample_rate`` of the clock stream; other streams only with the rig's
  stated ``offset_s``, else refused;
- spikes: unit id from (stream, electrode name, sorted id)
  (`closedloop.acquisition.openephys_units`), channel = the electrode's number;
  ``sorted_id`` 0 is the electrode's unsorted activity, kept unless ``drop_unsorted``;
- TTL: the clock stream's edges become `SyncEvent` with the line numbered as the GUI
  shows it (the plugin sends line 0 for the GUI's TTL line 1), ``state`` 1/0.

Bad input never stops the adapter: each rejected message (wrong frame count, another
plugin format, bad type frame, non-JSON, missing, mistyped or out-of-range fields,
oversized, unknown ``event_type``, unmapped electrode, a refused stream) is counted by
kind and logged, rate-limited.  The plugin numbers nothing, so lost events cannot be
counted; silence longer than ``silence_s`` is logged (a GUI that stopped or vanished),
and the stream's heartbeats go on meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
import zmq

from closedloop.acquisition.base import Acquired, AcquisitionAdapter
from closedloop.acquisition.openephys_clock import OtherStream, StreamClocks
from closedloop.acquisition.openephys_format import MAX_EVENT_BYTES, WRONG_FORMAT, EventFormatError, decode
from closedloop.acquisition.openephys_units import UnitIdError, UnitIds
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
COUNTERS = (
    "events",
    "spikes",
    "ttl",
    "malformed",
    "out_of_range",
    "oversized",
    "unknown_type",
    "wrong_format",
    "unmapped_electrode",
    "other_stream",
    "other_stream_ttl",
    "unsorted_dropped",
    "held_dropped",
    "rate_mismatch",
    "silences",
)


class OpenEphysAdapter(AcquisitionAdapter):
    """Translate Event Broadcaster events into SpikeBatch / SyncEvent.

    Parameters
    ----------
    endpoint
        Where our spike stream is published.
    event_endpoint
        The Event Broadcaster's endpoint (connected to).
    sample_rate_hz
        Expected sample rate of the clock stream (rig file), used when checking events.
    photodiode_line
        The photodiode's TTL line as the GUI shows it (1 = the first; sent as line 0).
    clock_stream
        The stream whose sample clock is the session clock; ``None``: learned (see
        `closedloop.acquisition.openephys_clock`).
    streams
        Other streams to accept, with their offset to the clock stream.
    electrodes
        ``{electrode name: number}`` for names other than Electrode/Stereotrode/Tetrode N.
    drop_unsorted
        Drop spikes with ``sorted_id`` 0.
    silence_s
        Log when no event has arrived for this long.
    """

    def __init__(
        self,
        endpoint: str,
        event_endpoint: str,
        *,
        name: str = "openephys",
        sample_rate_hz: float = 30000.0,
        photodiode_line: int | None = None,
        clock_stream: str | None = None,
        streams: Sequence[OtherStream] = (),
        electrodes: Mapping[str, int] | None = None,
        drop_unsorted: bool = False,
        silence_s: float = 5.0,
        max_event_bytes: int = MAX_EVENT_BYTES,
        **adapter_options,
    ):
        super().__init__(name, endpoint, **adapter_options)
        self.event_endpoint = event_endpoint
        self.sample_rate_hz = float(sample_rate_hz)
        self.photodiode_line = photodiode_line
        self.clocks = StreamClocks(
            clock_stream, streams, photodiode_wire_line=None if photodiode_line is None else photodiode_line - 1
        )
        self.unit_ids = UnitIds(electrodes, self.clocks.stream_names())
        self.drop_unsorted = bool(drop_unsorted)
        self.silence_s = float(silence_s)
        self.max_event_bytes = int(max_event_bytes)
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.refused_streams: set[str] = set()
        self.socket: zmq.Socket | None = None
        self._warn = RateLimitedLog(logger, 2.0)
        self._last_event = time.monotonic()
        self._silent = False

    @classmethod
    def from_rig(cls, rig, endpoint: str, **options) -> OpenEphysAdapter:
        """The adapter an ``openephys`` rig file describes, publishing on ``endpoint``."""
        acquisition = rig.acquisition
        return cls(
            endpoint,
            acquisition.event_endpoint,
            sample_rate_hz=acquisition.sample_rate_hz,
            photodiode_line=acquisition.photodiode_line,
            clock_stream=acquisition.clock_stream,
            streams=[OtherStream(s.name, s.offset_s) for s in acquisition.streams],
            electrodes={e.name: e.number for e in acquisition.electrodes},
            drop_unsorted=acquisition.drop_unsorted,
            **options,
        )

    def open(self) -> None:
        self.socket, _ = open_socket(
            zmq.SUB,
            self.event_endpoint,
            bind=False,
            rcvhwm=EVENT_RCVHWM,
            options={zmq.MAXMSGSIZE: MAX_WIRE_BYTES},
            security=PLAIN,
        )  # Open Ephys's broadcaster speaks no CURVE
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self._last_event = time.monotonic()

    def close(self) -> None:
        if self.socket is not None and not self.socket.closed:
            self.socket.close()

    def input_stats(self) -> dict[str, int]:
        return dict(self.counts)

    def acquire(self) -> Acquired:
        assert self.socket is not None
        out: tuple[list[int], list[int], list[float], list[tuple[int, int, float]]] = ([], [], [], [])
        if self.socket.poll(5, zmq.POLLIN):
            for _ in range(EVENTS_PER_STEP):
                try:
                    frames = self.socket.recv_multipart(zmq.NOBLOCK)  # small: copying beats zmq.Frame objects
                except zmq.Again:
                    break
                self.translate(frames, out)
        self._watch_silence()
        units, channels, times, sync = out
        order = np.argsort(np.asarray(times), kind="stable")
        return Acquired(
            unit_ids=np.asarray(units, dtype=np.int64)[order],
            times=np.asarray(times, dtype=np.float64)[order],
            channels=np.asarray(channels, dtype=np.int32)[order],
            sync=sync,
        )

    def translate(self, frames: Sequence, out: tuple[list, list, list, list]) -> None:
        """Decode one message and add what it means to ``out`` = (units, channels, times, sync).

        Never raises for anything a peer can send: every rejection is counted and logged.
        """
        self._last_event = time.monotonic()
        try:
            event = decode(frames, max_bytes=self.max_event_bytes)
        except EventFormatError as error:
            self._reject(error.kind, error.message)
            return
        self.counts["events"] += 1
        known = self.clocks.known
        ready = self.clocks.hold(event)
        if not known and self.clocks.known:
            self._clock_decided()
        self.counts["held_dropped"] = self.clocks.held_dropped
        for item in ready:
            self._place(item, out)

    def _place(self, event, out: tuple[list, list, list, list]) -> None:
        units, channels, times, sync = out
        placed = self.clocks.place(event)
        if placed is None:
            self._refuse_stream(event.stream)
            return
        slot, at = placed
        if event.event_type == "ttl":
            if slot != 0:  # lines of other streams could clash with the photodiode's number
                self.counts["other_stream_ttl"] += 1
                return
            self.counts["ttl"] += 1
            self._check_rate(event)
            sync.append((event.line + 1, event.state, at))
            return
        if event.sorted_id == 0 and self.drop_unsorted:
            self.counts["unsorted_dropped"] += 1
            return
        try:
            unit = self.unit_ids.unit_id(slot, event.electrode, event.sorted_id)
        except UnitIdError as error:
            self._reject(error.kind, str(error))
            return
        self.counts["spikes"] += 1
        units.append(unit)
        channels.append(unit // 1000 % 10_000)
        times.append(at)

    def _clock_decided(self) -> None:
        self.unit_ids.stream_names = self.clocks.stream_names()
        logger.info(
            "%s: session clock = stream %r (%s)%s",
            self.name,
            self.clocks.clock_stream,
            self.clocks.decided_by,
            ""
            if self.clocks.decided_by == "photodiode TTL"
            else "; set acquisition.clock_stream in the rig file to be sure",
        )

    def _check_rate(self, event) -> None:
        if abs(event.sample_rate - self.sample_rate_hz) > 1e-6 * self.sample_rate_hz:
            self.counts["rate_mismatch"] += 1
            self._warn.warning(
                "rate",
                "%s: stream %r runs at %g Hz but the rig's acquisition.sample_rate_hz says "
                "%g Hz; using the event's rate; %d so far",
                self.name,
                event.stream[:40],
                event.sample_rate,
                self.sample_rate_hz,
                self.counts["rate_mismatch"],
            )

    def _refuse_stream(self, stream: str) -> None:
        self.counts["other_stream"] += 1
        if len(self.refused_streams) < 100:
            self.refused_streams.add(stream[:40])
        self._warn.warning(
            "stream",
            "%s: refused events of stream %r: its sample clock is not the session clock "
            "(stream %r); list it in the rig's acquisition.streams with offset_s (seconds to add) "
            "to use it; %d refused so far",
            self.name,
            stream[:40],
            self.clocks.clock_stream,
            self.counts["other_stream"],
        )

    def _reject(self, kind: str, text: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == WRONG_FORMAT:  # the whole stream is unusable: say what to change, not "rejected"
            self._warn.warning(kind, "%s: %s (%d such messages)", self.name, text, self.counts[kind])
            return
        self._warn.warning(
            kind,
            "%s: rejected an Event Broadcaster message (%s); %d %s so far",
            self.name,
            text,
            self.counts[kind],
            kind,
        )

    def _watch_silence(self) -> None:
        quiet = time.monotonic() - self._last_event
        if quiet > self.silence_s and not self._silent:
            self._silent = True
            self.counts["silences"] += 1
            logger.warning(
                "%s: no event from %s for %.1f s (GUI stopped, acquisition paused, or gone?)",
                self.name,
                self.event_endpoint,
                quiet,
            )
        elif quiet <= self.silence_s and self._silent:
            self._silent = False
            logger.info("%s: events from %s again", self.name, self.event_endpoint)
