"""Receiving a replayed recording: spikes, photodiode edges and the presenter's reports.

Unlike the runner's `closedloop.runner.collect.StreamCollector`, which takes everything
received when a block ends (the presenter shows nothing until asked, so nothing of the
next block can be there yet), a replay at full speed streams far ahead of the block
being processed.  So the edges of one block are cut out by time: everything before a
cut between this block's last trial and the next block's first, placed on the
acquisition clock with the presenter-to-acquisition clock offset.  Spikes are kept
until every window that may need them is counted.
"""

from __future__ import annotations

import logging

import numpy as np
import zmq

from closedloop.messages import Heartbeat, SpikeBatch, StimulusShown, SyncEvent
from closedloop.transport import Subscriber
from closedloop.transport.receiver import RateLimitedLog

logger = logging.getLogger(__name__)

_MAX_DRAIN = 2000  # messages per socket per poll: keeps one step short under a flood
_FINISHED = ("finished", "stopping")


class ReplayStreams:
    """The acquisition stream and the replayed presenter's `StimulusShown` reports.

    Parameters
    ----------
    spikes_endpoint, stimulus_endpoint
        The replay adapter's two PUB sockets, connected to.
    photodiode_line
        The sync line whose rising edges are stimulus onsets.
    name
        For log lines.
    """

    def __init__(self, spikes_endpoint: str, stimulus_endpoint: str, photodiode_line: int, name: str = "replay"):
        self.name = name
        self.line = int(photodiode_line)
        # every topic: SpikeBatch, SyncEvent and Heartbeat share one sequence (gap checks)
        self.acquisition = Subscriber(spikes_endpoint, name=f"{name} acquisition")
        self.stimulus = Subscriber(stimulus_endpoint, topics=[StimulusShown], name=f"{name} stimulus")
        self.reports: dict[int, StimulusShown] = {}
        self.horizon = -np.inf  # newest spike or sync time received (acquisition clock)
        self.finished = False  # the adapter said it has sent everything
        self.received = 0
        self._units: list[np.ndarray] = []
        self._times: list[np.ndarray] = []
        self._edges: list[float] = []
        self._log = RateLimitedLog(logger, 2.0)

    def sockets(self) -> list[zmq.Socket]:
        return [self.acquisition.socket, self.stimulus.socket]

    def close(self) -> None:
        self.acquisition.close()
        self.stimulus.close()

    @property
    def lost(self) -> int:
        """Acquisition messages missing from the sequence so far."""
        return int(self.acquisition.stats.missing)

    def poll(self) -> int:
        """Take in what is queued on both sockets (no waiting); returns the messages taken."""
        count = 0
        for decoded in self.acquisition.drain(_MAX_DRAIN):
            count += 1
            message = decoded.message
            if isinstance(message, SpikeBatch):
                if message.times.size:
                    self._units.append(np.asarray(message.unit_ids, dtype=np.int64))
                    self._times.append(np.asarray(message.times, dtype=np.float64))
                    self.horizon = max(self.horizon, float(message.times.max()))
            elif isinstance(message, SyncEvent):
                if message.line == self.line and message.state == 1:
                    self._edges.append(float(message.time))
                self.horizon = max(self.horizon, float(message.time))
            elif isinstance(message, Heartbeat):
                self.finished = self.finished or message.state in _FINISHED
        for decoded in self.stimulus.drain(_MAX_DRAIN):
            count += 1
            message = decoded.message
            if message.trial in self.reports:
                self._log.warning("duplicate", "%s: trial %d reported twice; the last report counts", self.name,
                                  message.trial)
            self.reports[message.trial] = message
        self.received += count
        return count

    # --- edges and spikes ------------------------------------------------------------

    def first_edge(self) -> float | None:
        """The earliest rising edge not yet taken by a block."""
        return self._edges[0] if self._edges else None

    def take_edges(self, before: float) -> np.ndarray:
        """Rising edges earlier than ``before``, in the order received; they are removed."""
        edges = np.asarray(self._edges, dtype=np.float64)
        taken = edges < before
        self._edges = edges[~taken].tolist()
        return edges[taken]

    def spikes(self) -> tuple[np.ndarray, np.ndarray]:
        """(unit ids, times) of every spike kept."""
        if len(self._times) > 1:
            self._units, self._times = [np.concatenate(self._units)], [np.concatenate(self._times)]
        if not self._times:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        return self._units[0], self._times[0]

    def forget_spikes(self, before: float) -> None:
        """Drop spikes earlier than ``before`` (no window left to count needs them)."""
        units, times = self.spikes()
        keep = times >= before
        self._units, self._times = [units[keep]], [times[keep]]
