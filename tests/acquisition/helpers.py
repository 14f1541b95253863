"""Shared test helpers: collect a stream until a condition holds."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from closedloop.messages import Heartbeat, SpikeBatch, SyncEvent
from closedloop.transport import Subscriber


class Collected:
    """Everything received on an acquisition stream, in arrival order."""

    def __init__(self) -> None:
        self.batches: list[SpikeBatch] = []
        self.sync: list[SyncEvent] = []
        self.heartbeats: list[Heartbeat] = []
        self.order: list[str] = []  # message types in arrival order
        self.stream_times: list[float] = []  # every spike and sync time in arrival order

    @property
    def unit_ids(self) -> np.ndarray:
        return np.concatenate([b.unit_ids for b in self.batches]) if self.batches else np.zeros(0, np.int64)

    @property
    def times(self) -> np.ndarray:
        return np.concatenate([b.times for b in self.batches]) if self.batches else np.zeros(0)

    def onsets(self, line: int, state: int = 1) -> np.ndarray:
        return np.array([e.time for e in self.sync if e.line == line and e.state == state])

    def add(self, message) -> None:
        self.order.append(message.type_name())
        if isinstance(message, SpikeBatch):
            self.batches.append(message)
            self.stream_times.extend(message.times.tolist())
        elif isinstance(message, SyncEvent):
            self.sync.append(message)
            self.stream_times.append(message.time)
        elif isinstance(message, Heartbeat):
            self.heartbeats.append(message)


def collect(
    sub: Subscriber, done: Callable[[Collected], bool], timeout_s: float = 20.0, into: Collected | None = None
) -> Collected:
    """Receive until ``done(collected)`` or the timeout (then fail)."""
    got = into or Collected()
    deadline = time.monotonic() + timeout_s
    while not done(got):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out: {len(got.batches)} batches, {len(got.sync)} sync events, {len(got.heartbeats)} heartbeats"
            )
        decoded = sub.recv(100)
        if decoded is not None:
            got.add(decoded.message)
    return got


def wait_for_heartbeat(sub: Subscriber, timeout_s: float = 30.0) -> Collected:
    return collect(sub, lambda c: len(c.heartbeats) > 0, timeout_s)
