"""Per-source sequence checking: gaps, restarts and out-of-order messages (docs/architecture.md, Messages).

Every sender numbers its messages 0, 1, 2, … per source.  A receiver feeds each
envelope's ``(source, session, seq)`` to a `SequenceTracker`, which classifies it:

- the first message from a source starts tracking wherever it is (joining late is not
  a loss);
- ``seq == last + 1`` is in order;
- ``seq > last + 1`` is a gap of ``seq - last - 1`` lost messages;
- ``seq <= last``, or a new session id, is a restart of the source, counted once and
  not as a storm of gaps.  ZeroMQ keeps the order of one connection, so a number going
  backwards means the sender started again (its first messages, seq 0, 1…, are often
  lost while it connects) — or two senders share one source name, a configuration bug
  the restart count makes visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class SeqStatus(Enum):
    FIRST = "first"
    IN_ORDER = "in_order"
    GAP = "gap"
    RESTART = "restart"


@dataclass
class SourceCounts:
    """What one source has sent us so far."""

    session: str
    last_seq: int
    received: int = 0
    gaps: int = 0
    missing: int = 0
    restarts: int = 0


@dataclass(frozen=True)
class SeqResult:
    """Classification of one message; ``missing`` > 0 only for a gap."""

    status: SeqStatus
    missing: int = 0
    expected: int | None = None


class SequenceTracker:
    """Tracks the sequence of every source seen so far."""

    def __init__(self) -> None:
        self.sources: dict[str, SourceCounts] = {}

    def observe(self, source: str, seq: int, session: str = "") -> SeqResult:
        """Record one message and classify it."""
        counts = self.sources.get(source)
        if counts is None:
            self.sources[source] = SourceCounts(session=session, last_seq=seq, received=1)
            return SeqResult(SeqStatus.FIRST)
        counts.received += 1
        expected = counts.last_seq + 1
        if seq == expected and session == counts.session:
            counts.last_seq = seq
            return SeqResult(SeqStatus.IN_ORDER)
        if session != counts.session or seq < expected:
            counts.restarts += 1
            counts.session = session
            counts.last_seq = seq
            return SeqResult(SeqStatus.RESTART, expected=expected)
        counts.last_seq = seq
        counts.gaps += 1
        counts.missing += seq - expected
        return SeqResult(SeqStatus.GAP, missing=seq - expected, expected=expected)

    def totals(self) -> dict[str, int]:
        """Sums over all sources."""
        fields = ("received", "gaps", "missing", "restarts")
        return {f: sum(getattr(c, f) for c in self.sources.values()) for f in fields}
