"""Which Open Ephys stream's sample clock is the session clock, and the others converted to it.

Every stream of the GUI counts its own samples (its own hardware counter, its own rate),
so two streams' sample numbers are never comparable.  One stream is the session clock:
the rig's ``acquisition.clock_stream``, or else the stream the first photodiode TTL
arrives on (the photodiode must share the clock of the spikes it times).  Its events
are at ``sample_number / sample_rate`` seconds.  Another stream is used only when the rig
lists it in ``acquisition.streams`` with ``offset_s``: its events are at
``sample_number / sample_rate + offset_s``.  Anything else is refused and counted.

Until the clock stream is known, events wait here (at most `MAX_HELD`, then the oldest
are dropped and counted); when, after ``settle_s`` of listening, exactly one stream heard
is not among the rig's other ``streams``, it is taken as the clock (the usual one-board
rig, or a rig that lists every stream but its clock).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from closedloop.acquisition.openephys_format import OpenEphysEvent

#: Events kept while the clock stream is not yet known (~3 s of a busy array).
MAX_HELD = 100_000
MAX_STREAM_NAMES = 100


@dataclass(frozen=True)
class OtherStream:
    """A stream besides the clock stream: its name and offset to the clock (``None``: refused)."""

    name: str
    offset_s: float | None = None


class StreamClocks:
    """Place events of many streams on one clock.

    Parameters
    ----------
    clock_stream
        The clock stream's name, or ``None`` to learn it (see module notes).
    streams
        Other streams to accept, in unit-id slot order (slot = position + 1).
    photodiode_wire_line
        The photodiode's TTL line as the plugin sends it (0-based).
    settle_s
        With no photodiode TTL yet, how long one lone stream must be heard to be the clock.
    """

    def __init__(
        self,
        clock_stream: str | None = None,
        streams: Sequence[OtherStream] = (),
        *,
        photodiode_wire_line: int | None = None,
        settle_s: float = 2.0,
    ):
        self.clock_stream = clock_stream
        self.streams = list(streams)
        self.photodiode_wire_line = photodiode_wire_line
        self.settle_s = float(settle_s)
        self.held: deque[OpenEphysEvent] = deque()
        self.held_dropped = 0
        self.heard: set[str] = set()
        self._first_heard: float | None = None
        self.decided_by = "rig" if clock_stream is not None else ""

    @property
    def known(self) -> bool:
        return self.clock_stream is not None

    def stream_names(self) -> list[str]:
        """Stream names by unit-id slot (slot 0: the clock stream, ``""`` until known)."""
        return [self.clock_stream or "", *(s.name for s in self.streams)]

    def hold(self, event: OpenEphysEvent) -> list[OpenEphysEvent]:
        """Offer an event; returns the events now ready to place (this one and any held)."""
        if self.known:
            return [event]
        if len(self.heard) < MAX_STREAM_NAMES:  # a peer inventing names must not grow this without bound
            self.heard.add(event.stream)
        now = time.monotonic()
        if self._first_heard is None:
            self._first_heard = now
        unlisted = self.heard - {other.name for other in self.streams}
        if event.event_type == "ttl" and event.line == self.photodiode_wire_line:
            self._decide(event.stream, "photodiode TTL")
        elif len(unlisted) == 1 and now - self._first_heard >= self.settle_s:
            self._decide(
                next(iter(unlisted)),
                "the only stream heard"
                if len(self.heard) == 1
                else "the only stream heard that acquisition.streams does not list",
            )
        if not self.known:
            if len(self.held) >= MAX_HELD:
                self.held.popleft()
                self.held_dropped += 1
            self.held.append(event)
            return []
        ready = [*self.held, event]
        self.held.clear()
        return ready

    def _decide(self, stream: str, why: str) -> None:
        self.clock_stream, self.decided_by = stream, why

    def place(self, event: OpenEphysEvent) -> tuple[int, float] | None:
        """(unit-id slot, session time) of an event, or ``None`` when its stream is refused."""
        if event.stream == self.clock_stream:
            return 0, event.time_s
        for slot, other in enumerate(self.streams, start=1):
            if other.name == event.stream and other.offset_s is not None:
                return slot, event.time_s + other.offset_s
        return None
