"""Draining an acquisition stream: spikes and sync events kept until taken, heartbeats noted.

The runner (`closedloop.runner.collect`) and replay (`closedloop.replay.stream`) both
subscribe to an acquisition PUB (SpikeBatch, SyncEvent, Heartbeat on one sequence) and
must drain it on every step so nothing backs up; `AcquisitionBuffer` is that loop.  The
runner takes everything when a block ends (`take`); replay, streaming far ahead of the
block it processes, takes sync events as they come and drops spikes by time
(`forget_spikes`).  Storage grows only until the owner takes or forgets it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from closedloop.messages import Heartbeat, Message, SpikeBatch, SyncEvent
from closedloop.transport import Subscriber
from closedloop.transport.receiver import ReceiverStats

MAX_DRAIN = 2000  # messages per socket per poll: keeps one step short under a flood
_FINISHED = ("finished", "stopping")


@dataclass
class StreamData:
    """Spikes and sync events taken for one block (acquisition clock)."""

    spike_units: np.ndarray
    spike_times: np.ndarray
    sync_times: np.ndarray
    sync_lines: np.ndarray
    sync_states: np.ndarray

    @property
    def empty(self) -> bool:
        return self.spike_times.size == 0 and self.sync_times.size == 0

    def rising_edges(self, line: int) -> np.ndarray:
        """Times of rising edges (state 1) on ``line``, in the order received."""
        return self.sync_times[(self.sync_lines == line) & (self.sync_states == 1)]


class AcquisitionBuffer:
    """The acquisition stream of one subscriber (see module notes).

    Parameters
    ----------
    endpoint
        The acquisition PUB, connected to.
    name
        For log lines (the subscriber is named ``"NAME acquisition"``).
    on_other
        Called with any message that is not a spike batch, sync event or heartbeat
        (default: ignored).

    Attributes
    ----------
    horizon
        Newest spike or sync time received (acquisition clock).
    heartbeats, last_heartbeat
        Heartbeats received, and ``time.monotonic()`` when the newest arrived.
    finished
        A heartbeat said the source has sent everything (``finished`` or ``stopping``).
    """

    def __init__(self, endpoint: str, name: str, on_other: Callable[[Message], None] | None = None):
        # Every topic: SpikeBatch, SyncEvent and Heartbeat share one sequence (gap checks).
        self.subscriber = Subscriber(endpoint, name=f"{name} acquisition")
        self.on_other = on_other
        self.horizon = -np.inf
        self.heartbeats = 0
        self.last_heartbeat = 0.0
        self.finished = False
        self._units: list[np.ndarray] = []
        self._times: list[np.ndarray] = []
        self._sync: list[tuple[float, int, int]] = []

    @property
    def socket(self):
        return self.subscriber.socket

    @property
    def stats(self) -> ReceiverStats:
        return self.subscriber.stats

    def close(self) -> None:
        self.subscriber.close()

    def poll(self, limit: int = MAX_DRAIN) -> int:
        """Take in up to ``limit`` queued messages (no waiting); returns how many."""
        count = 0
        for decoded in self.subscriber.drain(limit):
            count += 1
            message = decoded.message
            if isinstance(message, SpikeBatch):
                if message.times.size:
                    self._units.append(np.asarray(message.unit_ids, dtype=np.int64))
                    self._times.append(np.asarray(message.times, dtype=np.float64))
                    self.horizon = max(self.horizon, float(message.times.max()))
            elif isinstance(message, SyncEvent):
                self._sync.append((float(message.time), int(message.line), int(message.state)))
                self.horizon = max(self.horizon, float(message.time))
            elif isinstance(message, Heartbeat):
                self.last_heartbeat = time.monotonic()
                self.heartbeats += 1
                self.finished = self.finished or message.state in _FINISHED
            elif self.on_other is not None:
                self.on_other(message)
        return count

    # --- sync events ------------------------------------------------------------------

    def pending_edges(self, line: int) -> np.ndarray:
        """Rising edges on ``line`` received and not yet taken."""
        return np.array([t for t, li, state in self._sync if li == line and state == 1], dtype=np.float64)

    def take_sync(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times, lines, states) of every sync event not yet taken; they are removed."""
        sync = np.array(self._sync, dtype=np.float64).reshape(-1, 3)
        self._sync = []
        return sync[:, 0].copy(), sync[:, 1].astype(np.int32), sync[:, 2].astype(np.int8)

    # --- spikes -----------------------------------------------------------------------

    def spikes(self) -> tuple[np.ndarray, np.ndarray]:
        """(unit ids, times) of every spike kept, in the order received."""
        if len(self._times) > 1:
            self._units, self._times = [np.concatenate(self._units)], [np.concatenate(self._times)]
        if not self._times:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        return self._units[0], self._times[0]

    def take_spikes(self) -> tuple[np.ndarray, np.ndarray]:
        """(unit ids, times) of every spike kept; they are removed."""
        units, times = self.spikes()
        self._units, self._times = [], []
        return units, times

    def forget_spikes(self, before: float) -> None:
        """Drop spikes earlier than ``before``."""
        units, times = self.spikes()
        keep = times >= before
        self._units, self._times = [units[keep]], [times[keep]]

    def take(self) -> StreamData:
        """Every spike and sync event kept, for one block to store; they are removed."""
        units, times = self.take_spikes()
        return StreamData(units, times, *self.take_sync())
