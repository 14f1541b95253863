"""Monotonic clocks in integer nanoseconds.

``time.monotonic_ns`` is CLOCK_MONOTONIC on Linux: one clock for the whole machine,
so a ``t_ns`` stamped by one process can be subtracted from another's reading.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

NS_PER_S = 1_000_000_000


def now_ns() -> int:
    """The monotonic clock in nanoseconds."""
    return time.monotonic_ns()


def ns_to_s(ns: int) -> float:
    return ns / NS_PER_S


def s_to_ns(seconds: float) -> int:
    return int(round(seconds * NS_PER_S))


def elapsed_s(since_ns: int) -> float:
    """Seconds from ``since_ns`` to now."""
    return (time.monotonic_ns() - since_ns) / NS_PER_S


@dataclass(frozen=True)
class Deadline:
    """A point on the monotonic clock; ``at_ns=None`` never expires."""

    at_ns: int | None

    @classmethod
    def after_ms(cls, timeout_ms: int | float | None) -> Deadline:
        """Expires ``timeout_ms`` from now (``None``: never)."""
        return cls(None if timeout_ms is None else time.monotonic_ns() + int(timeout_ms * 1_000_000))

    @classmethod
    def after_s(cls, timeout_s: float | None) -> Deadline:
        return cls.after_ms(None if timeout_s is None else timeout_s * 1000)

    def remaining_ms(self) -> int | None:
        """Whole milliseconds left, rounded up, never negative (None: no limit)."""
        if self.at_ns is None:
            return None
        return max(0, -(-(self.at_ns - time.monotonic_ns()) // 1_000_000))

    def remaining_s(self) -> float | None:
        if self.at_ns is None:
            return None
        return max(0.0, (self.at_ns - time.monotonic_ns()) / NS_PER_S)

    def expired(self) -> bool:
        return self.at_ns is not None and time.monotonic_ns() >= self.at_ns


class Pacer:
    """Paces a loop at ``rate_hz`` on average: `due` says how many ticks are owed now.

    Catching up in bursts (rather than sleeping a fixed period) keeps the average rate
    exact even when the OS wakes us late.
    """

    def __init__(self, rate_hz: float):
        if rate_hz <= 0:
            raise ValueError(f"rate must be positive, got {rate_hz}")
        self.period_ns = NS_PER_S / rate_hz
        self.start_ns = time.monotonic_ns()
        self.ticks = 0

    def due(self) -> int:
        """Ticks owed since the start minus those already taken (call `take` for each)."""
        return int((time.monotonic_ns() - self.start_ns) / self.period_ns) + 1 - self.ticks

    def take(self, n: int = 1) -> None:
        self.ticks += n

    def sleep_until_due(self, max_sleep_s: float = 0.001) -> None:
        """Sleep until the next tick is owed (at most ``max_sleep_s``)."""
        next_ns = self.start_ns + self.ticks * self.period_ns
        wait = (next_ns - time.monotonic_ns()) / NS_PER_S
        if wait > 0:
            time.sleep(min(wait, max_sleep_s))
