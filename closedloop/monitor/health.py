"""How each stream the monitor listens to is doing: messages, gaps, restarts, silence.

The transport's `ReceiverStats` count what the codec refused (malformed, wrong schema
version, unknown type, oversized) and what the sequence numbers say was lost or
restarted; this module adds what only the monitor knows: when the last message came,
and which well-formed messages it had no use for.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

#: Stream name → the component that publishes it (what the status line calls it).
STREAMS = {
    "responses": "runner",
    "model_events": "model server",
    "stimulus": "presenter",
    "spikes": "acquisition",
}
#: Names of other sources of messages (not network streams: never "silent").
OTHER_SOURCES = {"session": "session file"}
#: A stream quiet for longer than this is shown as silent.
SILENT_AFTER_S = 5.0
_TRANSPORT_FIELDS = (
    "received",
    "gaps",
    "missing",
    "restarts",
    "malformed",
    "wrong_schema",
    "unknown_type",
    "oversized",
)


@dataclass
class StreamHealth:
    """Counters of one stream."""

    name: str
    endpoint: str = ""
    last_message: float | None = None  # time.monotonic() of the newest message
    since: float = field(default_factory=time.monotonic)  # when we started listening
    by_type: Counter = field(default_factory=Counter)
    ignored: Counter = field(default_factory=Counter)  # valid messages the monitor does not use
    transport: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_TRANSPORT_FIELDS, 0))

    @property
    def publisher(self) -> str:
        return STREAMS.get(self.name) or OTHER_SOURCES.get(self.name, self.name)

    @property
    def rejected(self) -> int:
        t = self.transport
        return t["malformed"] + t["wrong_schema"] + t["unknown_type"] + t["oversized"]

    def silent_for(self, now: float | None = None) -> float:
        """Seconds since the last message (or since listening began, if none yet)."""
        now = time.monotonic() if now is None else now
        return now - (self.last_message if self.last_message is not None else self.since)

    def line(self, now: float | None = None) -> str:
        """One status line, e.g. ``runner: 812 msgs, 0 lost, 1 restart, 3 rejected``."""
        t = self.transport
        quiet = self.silent_for(now)
        parts = [f"{sum(self.by_type.values())} msgs"]
        if t["missing"] or t["gaps"]:
            parts.append(f"{t['missing']} lost in {t['gaps']} gap(s)")
        if t["restarts"]:
            parts.append(f"{t['restarts']} restart(s)")
        if self.rejected:
            kinds = ", ".join(f"{t[k]} {k.replace('_', ' ')}" for k in _TRANSPORT_FIELDS[4:] if t[k])
            parts.append(f"{self.rejected} rejected ({kinds})")
        if self.ignored:
            parts.append(f"{sum(self.ignored.values())} ignored")
        text = f"{self.publisher}: " + ", ".join(parts)
        if quiet > SILENT_AFTER_S and self.name in STREAMS:
            if self.last_message is None:
                where = f"on {self.endpoint}" if self.endpoint else ""
                text = f"{self.publisher}: no messages yet ({quiet:.0f} s) {where}"
            else:
                text = f"no messages from {self.publisher} for {quiet:.0f} s — " + text
        return text.strip()

    def copy(self) -> StreamHealth:
        return StreamHealth(
            self.name,
            self.endpoint,
            self.last_message,
            self.since,
            Counter(self.by_type),
            Counter(self.ignored),
            dict(self.transport),
        )
