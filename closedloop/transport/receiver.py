"""Turning received frames into messages without ever dying of bad input.

A `Receiver` decodes frames with the codec, checks sequence numbers per source and
counts every rejection by kind.  Problems are logged at WARNING, rate-limited per kind
so a flood of junk cannot flood the log (the count of suppressed reports is given the
next time one is written).  Gaps are logged as loudly as rejections: PUB/SUB drops
silently when a subscriber lags, so the count here is the only place a loss shows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from closedloop.messages.codec import REJECTION_KINDS, CodecError, Decoded, decode
from closedloop.messages.envelope import MAX_MESSAGE_BYTES
from closedloop.transport.sequence import SequenceTracker, SeqStatus

logger = logging.getLogger(__name__)


@dataclass
class ReceiverStats:
    """Counters of one receiver (all sources together)."""

    received: int = 0
    bytes: int = 0
    malformed: int = 0
    wrong_schema: int = 0
    oversized: int = 0
    unknown_type: int = 0
    gaps: int = 0
    missing: int = 0
    restarts: int = 0

    @property
    def rejected(self) -> int:
        """Messages refused by the codec, all kinds together."""
        return self.malformed + self.wrong_schema + self.oversized + self.unknown_type

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "rejected": self.rejected}


class RateLimitedLog:
    """Log at most one report per kind per interval, counting the ones held back."""

    def __init__(self, log: logging.Logger, interval_s: float = 1.0):
        self.log = log
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, kind: str, text: str, *args: Any) -> bool:
        """Log now unless ``kind`` was logged within the interval; True when logged."""
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        held = self._held.pop(kind, 0)
        suffix = f" ({held} more {kind} report(s) held back)" if held else ""
        self.log.warning(text + suffix, *args)
        self._last[kind] = now
        return True


class Receiver:
    """Decode, sequence-check and count; `accept` returns ``None`` for anything bad.

    Parameters
    ----------
    name
        Used in log lines (e.g. the component and socket it belongs to).
    max_bytes
        Messages larger than this are rejected as oversized.
    log_interval_s
        Minimum seconds between two log lines of the same kind.
    """

    def __init__(self, name: str = "receiver", *, max_bytes: int = MAX_MESSAGE_BYTES, log_interval_s: float = 1.0):
        self.name = name
        self.max_bytes = max_bytes
        self.stats = ReceiverStats()
        self.sequences = SequenceTracker()
        self.rejection: CodecError | None = None  # why the last rejected message was rejected
        self._log = RateLimitedLog(logger, log_interval_s)

    def accept(self, frames: Sequence[Any], *, peer: str = "") -> Decoded | None:
        """The decoded message, or ``None`` (counted and logged) when it is rejected.

        ``peer`` is the sender's authenticated identity ("" on a plain socket): sequence
        numbers are tracked per (identity, source name), so a peer naming itself after
        another cannot disturb that one's gap counts.
        """
        try:
            decoded = decode(frames, max_bytes=self.max_bytes)
        except CodecError as error:
            # kept and logged as a copy without its traceback: the traceback holds the decoder's
            # frames (the rejected message's buffers) in reference cycles that only the cyclic GC
            # frees, so a flood of large junk piled up gigabytes before it ran
            self._reject(CodecError(error.kind, error.message))
            return None
        self.stats.received += 1
        self.stats.bytes += decoded.nbytes
        self._check_sequence(decoded, peer)
        return decoded

    def _reject(self, rejection: CodecError) -> None:
        self.rejection = rejection
        kind = rejection.kind if rejection.kind in REJECTION_KINDS else "malformed"
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)
        self._log.warning(
            kind, "%s: rejected a message (%s); %d %s so far", self.name, rejection, getattr(self.stats, kind), kind
        )

    def _check_sequence(self, decoded: Decoded, peer: str) -> None:
        env = decoded.envelope
        result = self.sequences.observe(f"{env.source}@{peer}" if peer else env.source, env.seq, env.session)
        if result.status is SeqStatus.GAP:
            self.stats.gaps += 1
            self.stats.missing += result.missing
            self._log.warning(
                "gap",
                "%s: LOST %d message(s) from %r (expected seq %d, got %d); %d lost in %d gap(s) so far",
                self.name,
                result.missing,
                env.source,
                result.expected,
                env.seq,
                self.stats.missing,
                self.stats.gaps,
            )
        elif result.status is SeqStatus.RESTART:
            self.stats.restarts += 1
            self._log.warning(
                "restart",
                "%s: source %r restarted (seq %d, session %r; expected seq %d) — or two senders share its name",
                self.name,
                env.source,
                env.seq,
                env.session,
                result.expected,
            )
