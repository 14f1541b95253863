"""The base every acquisition adapter derives from (docs/architecture.md: Components, Messages, Clocks).

A subclass implements one method, `AcquisitionAdapter.acquire`: return what arrived
(or became due) since the last call as an `Acquired` chunk.  The base class does the
rest, the same way for every adapter:

- publishes on one PUB endpoint, with sequence numbers per source (`Publisher`);
- batches spikes: a `SpikeBatch` goes out when ``batch_spikes`` are waiting or the
  oldest waiting spike has waited ``batch_ms`` (wall clock), so the message rate stays
  far below the high-water mark whatever the spike rate;
- keeps time order on the stream: waiting spikes earlier than a sync event are sent
  before it;
- sends a `Heartbeat` every ``heartbeat_s`` (a quiet stream is told apart from a dead one);
- counts what it sent and logs a summary at teardown (``stats``).

Consumers should subscribe to *every* topic of the acquisition stream
(``Subscriber(endpoint)`` without topics): SpikeBatch, SyncEvent and Heartbeat share
one sequence, so a topic filter would make the sequence look gappy.

With ``lossless=True`` (the default for "as fast as possible" playback) the PUB
socket gets ``XPUB_NODROP``: instead of dropping for a lagging subscriber it makes us
wait, so a replay at maximal speed loses nothing.  A send that stays blocked for
``lossless_timeout_s`` is dropped *with* a sequence number, so receivers still see
the gap.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from closedloop.messages import Heartbeat, Message, SpikeBatch, SyncEvent
from closedloop.runtime.clocks import NS_PER_S
from closedloop.runtime.component import Component
from closedloop.transport import DEFAULT_SNDHWM, Publisher
from closedloop.transport.receiver import RateLimitedLog

logger = logging.getLogger(__name__)

_EMPTY_IDS = np.zeros(0, dtype=np.int64)
_EMPTY_TIMES = np.zeros(0, dtype=np.float64)


@dataclass
class Acquired:
    """What an adapter's `acquire` returns: new spikes and sync edges, in time order.

    Attributes
    ----------
    unit_ids, times
        (n,) spike units and times (seconds on the acquisition clock).
    channels
        Optional (n,) electrode channel per spike.
    sync
        ``(line, state, time)`` edges.
    finished
        True when the source has nothing more to give (end of a replay).
    """

    unit_ids: np.ndarray = field(default_factory=lambda: _EMPTY_IDS)
    times: np.ndarray = field(default_factory=lambda: _EMPTY_TIMES)
    channels: np.ndarray | None = None
    sync: list[tuple[int, int, float]] = field(default_factory=list)
    finished: bool = False


class PlaybackClock:
    """The acquisition clock of a simulated or replayed source: 0 at `start`, ``speed`` × wall time.

    ``speed == 0`` means "as fast as possible": `now_s` is +inf, so everything is due.
    """

    def __init__(self, speed: float = 1.0):
        if not np.isfinite(speed) or speed < 0:
            raise ValueError(f"speed must be >= 0 (0 = as fast as possible), got {speed!r}")
        self.speed = float(speed)
        self._start_ns: int | None = None

    def start(self) -> None:
        self._start_ns = time.monotonic_ns()

    def now_s(self) -> float:
        if self.speed == 0:
            return float("inf")
        if self._start_ns is None:
            raise RuntimeError("PlaybackClock.start() was not called")
        return (time.monotonic_ns() - self._start_ns) / NS_PER_S * self.speed


@dataclass
class AdapterStats:
    """What an adapter has published (input counters live in the subclass)."""

    spikes: int = 0
    batches: int = 0
    sync_events: int = 0
    heartbeats: int = 0
    dropped_messages: int = 0
    refused_events: int = 0  # spikes and sync edges at a time that is not a number (never published)


class AcquisitionAdapter(Component):
    """Base of the simulated array, replay and Open Ephys adapters.

    Parameters
    ----------
    name
        Component name and the stream's ``source``.
    endpoint
        Where the spike stream is published (bound unless ``bind=False``).
    session
        Recording-session id carried in every envelope.
    batch_ms, batch_spikes
        Flush waiting spikes after this long (wall clock) or at this many spikes.
    heartbeat_s
        Interval of the `Heartbeat` messages on the stream.
    lossless
        Block on a lagging subscriber instead of dropping (see module notes).
    sndhwm
        PUB high-water mark in messages.
    """

    def __init__(
        self,
        name: str,
        endpoint: str,
        *,
        session: str = "",
        batch_ms: float = 5.0,
        batch_spikes: int = 2000,
        heartbeat_s: float = 0.5,
        lossless: bool = False,
        lossless_timeout_s: float = 5.0,
        sndhwm: int = DEFAULT_SNDHWM,
        bind: bool = True,
        wait_for_subscriber_s: float = 0.0,
    ):
        super().__init__(name, heartbeat_interval_s=heartbeat_s)
        if batch_ms <= 0 or batch_spikes < 1:
            raise ValueError(f"{name}: batch_ms must be > 0 and batch_spikes >= 1, got {batch_ms}, {batch_spikes}")
        self.endpoint = endpoint
        self.session = session
        self.batch_ms = float(batch_ms)
        self.batch_spikes = int(batch_spikes)
        self.heartbeat_s = float(heartbeat_s)
        self.lossless = bool(lossless)
        self.lossless_timeout_s = float(lossless_timeout_s)
        self.sndhwm = int(sndhwm)
        self.bind = bool(bind)
        self.wait_for_subscriber_s = float(wait_for_subscriber_s)
        self.stats = AdapterStats()
        self.publisher: Publisher | None = None
        self._reset_buffer()

    # --- what subclasses implement ----------------------------------------------

    def open(self) -> None:
        """Open the adapter's inputs (sockets, files); called by `setup` after the publisher."""

    def acquire(self) -> Acquired:
        """Return what arrived or became due since the last call; wait at most ~10 ms."""
        raise NotImplementedError(f"{type(self).__name__}.acquire")

    def close(self) -> None:
        """Release the adapter's inputs; must cope with `open` having failed part-way."""

    def input_stats(self) -> dict[str, int]:
        """Counters of the adapter's inputs (rejected frames, late stimuli…) for the log."""
        return {}

    # --- the lifecycle ----------------------------------------------------------

    def setup(self) -> None:
        self.publisher = Publisher(
            self.endpoint, source=self.name, session=self.session, bind=self.bind, sndhwm=self.sndhwm
        )
        self.endpoint = self.publisher.endpoint  # the port actually bound for tcp://host:*
        if self.lossless:
            self.publisher.socket.setsockopt(zmq.XPUB_NODROP, 1)
            self.publisher.socket.setsockopt(zmq.SNDTIMEO, 100)
        self._log = RateLimitedLog(logger, 2.0)
        self._last_heartbeat = 0.0
        self._gate = SubscriberGate(self.publisher.socket, self.wait_for_subscriber_s)
        self.open()
        self._send(Heartbeat(state="running", steps=0))

    def step(self) -> bool:
        if not self._gate.open():
            return True  # a replay at full speed would start before anyone listens
        chunk = self.acquire()
        self.publish(chunk)
        if chunk.finished:
            self.flush()
            self._send(Heartbeat(state="finished", steps=self.stats.batches))
            return False
        now = time.monotonic()
        if self._pending and (now - self._oldest_wait) * 1000.0 >= self.batch_ms:
            self.flush()
        if now - self._last_heartbeat >= self.heartbeat_s:
            self._send(Heartbeat(state="running", steps=self.stats.batches))
        return True

    def teardown(self) -> None:
        gate = getattr(self, "_gate", None)
        if gate is not None:
            gate.close()
        try:
            if self.publisher is not None:
                self.flush()
                self._send(Heartbeat(state="stopping", steps=self.stats.batches))
        finally:
            try:
                self.close()
            finally:
                if self.publisher is not None:
                    self.publisher.close()
                logger.info("%s: sent %s; inputs %s", self.name, vars(self.stats), self.input_stats())

    # --- publishing -------------------------------------------------------------

    def publish(self, chunk: Acquired) -> None:
        """Queue a chunk's spikes and send its sync edges, keeping time order."""
        times = np.asarray(chunk.times, dtype=np.float64)
        units = np.asarray(chunk.unit_ids, dtype=np.int64)
        channels = None if chunk.channels is None else np.asarray(chunk.channels, dtype=np.int32)
        if len(times) != len(units) or (channels is not None and len(channels) != len(times)):
            raise ValueError(f"{self.name}: acquire() returned arrays of different lengths")
        finite = np.isfinite(times)
        if not finite.all():  # a NaN time would break the stream's time order for every consumer
            units, times = units[finite], times[finite]
            channels = None if channels is None else channels[finite]
            self._refuse(int((~finite).sum()), "spike")
        sync = [edge for edge in chunk.sync if np.isfinite(edge[2])]
        if len(sync) != len(chunk.sync):
            self._refuse(len(chunk.sync) - len(sync), "sync edge")
        sync = sorted(sync, key=lambda edge: edge[2])
        start = 0
        for line, state, at in sync:
            stop = start + int(np.searchsorted(times[start:], at, side="left"))
            self._queue(units[start:stop], times[start:stop], None if channels is None else channels[start:stop])
            self.flush()
            self._send(SyncEvent(line=int(line), state=int(state), time=float(at)))
            self.stats.sync_events += 1
            start = stop
        self._queue(units[start:], times[start:], None if channels is None else channels[start:])

    def _refuse(self, count: int, what: str) -> None:
        self.stats.refused_events += count
        self._log.warning(
            "refused",
            "%s: refused %d %s(s) whose time is not a number; %d so far",
            self.name,
            count,
            what,
            self.stats.refused_events,
        )

    def flush(self) -> None:
        """Send every waiting spike now (in batches of at most ``batch_spikes``)."""
        if not self._pending:
            return
        units = np.concatenate(self._queued_units)
        times = np.concatenate(self._queued_times)
        channels = np.concatenate(self._queued_channels) if self._channels_known else None
        self._reset_buffer()
        for start in range(0, len(times), self.batch_spikes):
            part = slice(start, start + self.batch_spikes)
            batch = SpikeBatch(
                unit_ids=units[part], times=times[part], channels=None if channels is None else channels[part]
            )
            if self._send(batch):
                self.stats.spikes += len(batch.times)
                self.stats.batches += 1

    def _queue(self, units: np.ndarray, times: np.ndarray, channels: np.ndarray | None) -> None:
        if len(times) == 0:
            return
        if not self._pending:
            self._oldest_wait = time.monotonic()
            self._channels_known = channels is not None
        elif self._channels_known != (channels is not None):
            self.flush()  # one batch has channels for all its spikes or for none
            self._queue(units, times, channels)
            return
        self._queued_units.append(units)
        self._queued_times.append(times)
        if channels is not None:
            self._queued_channels.append(channels)
        self._pending += len(times)
        if self._pending >= self.batch_spikes:
            self.flush()

    def _reset_buffer(self) -> None:
        self._queued_units: list[np.ndarray] = []
        self._queued_times: list[np.ndarray] = []
        self._queued_channels: list[np.ndarray] = []
        self._channels_known = False
        self._pending: int = 0  # spikes queued
        self._oldest_wait = 0.0

    def _send(self, message: Message) -> bool:
        """Publish one message; in lossless mode wait (bounded) for a lagging subscriber."""
        assert self.publisher is not None, "setup() was not called"
        if isinstance(message, Heartbeat):
            self._last_heartbeat = time.monotonic()
            self.stats.heartbeats += 1
        started = time.monotonic()
        while True:
            try:
                self.publisher.send(message)
                return True
            except zmq.Again:  # only with XPUB_NODROP + SNDTIMEO: a subscriber is full
                if time.monotonic() - started < self.lossless_timeout_s:
                    continue
                self.publisher.seq += 1  # dropped, but numbered: receivers see the gap
                self.stats.dropped_messages += 1
                self._log.warning(
                    "dropped",
                    "%s: a subscriber stayed full for %.1f s; dropped a %s (%d so far)",
                    self.name,
                    self.lossless_timeout_s,
                    message.type_name(),
                    self.stats.dropped_messages,
                )
                return False


class SubscriberGate:
    """Holds the stream back until a first subscriber has connected, or ``wait_s`` passed.

    Watches the PUB socket's monitor for a finished ZMTP handshake (tcp and ipc), then
    allows a short grace for the subscription itself to arrive.
    """

    GRACE_S = 0.05

    def __init__(self, socket: zmq.Socket | None, wait_s: float):
        self._socket = socket
        self._deadline = time.monotonic() + wait_s
        self._opened_at: float | None = None if wait_s > 0 else 0.0
        self._monitor: zmq.Socket | None = None
        if wait_s > 0:
            if socket is None:
                raise ValueError("waiting for a subscriber needs the publishing socket")
            self._monitor = socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.timed_out = False

    def open(self) -> bool:
        if self._opened_at is None:
            assert self._monitor is not None  # still waiting: the monitor is open
            if self._monitor.poll(10):
                self._monitor.recv_multipart()
                self._opened_at = time.monotonic()
            elif time.monotonic() > self._deadline:
                logger.warning("no subscriber connected in time; streaming anyway")
                self.timed_out = True
                self._opened_at = 0.0
            return False
        if time.monotonic() - self._opened_at < self.GRACE_S:
            time.sleep(0.005)
            return False
        self.close()
        return True

    def close(self) -> None:
        if self._monitor is not None:
            self._monitor.close(0)
            self._monitor = None
            if self._socket is not None and not self._socket.closed:
                self._socket.disable_monitor()
