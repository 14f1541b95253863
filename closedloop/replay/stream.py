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

from closedloop.acquisition.buffer import MAX_DRAIN, AcquisitionBuffer
from closedloop.messages import StimulusShown
from closedloop.transport import Subscriber
from closedloop.transport.receiver import RateLimitedLog

logger = logging.getLogger(__name__)


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
        self.acquisition = AcquisitionBuffer(spikes_endpoint, name)
        self.stimulus = Subscriber(stimulus_endpoint, topics=[StimulusShown], name=f"{name} stimulus")
        self.reports: dict[int, StimulusShown] = {}
        self.received = 0
        self._edges: list[float] = []
        self._log = RateLimitedLog(logger, 2.0)

    def sockets(self) -> list[zmq.Socket]:
        return [self.acquisition.socket, self.stimulus.socket]

    def close(self) -> None:
        self.acquisition.close()
        self.stimulus.close()

    @property
    def horizon(self) -> float:
        """Newest spike or sync time received (acquisition clock)."""
        return self.acquisition.horizon

    @property
    def finished(self) -> bool:
        """The adapter said it has sent everything."""
        return self.acquisition.finished

    @property
    def lost(self) -> int:
        """Acquisition messages missing from the sequence so far."""
        return int(self.acquisition.stats.missing)

    def poll(self) -> int:
        """Take in what is queued on both sockets (no waiting); returns the messages taken."""
        count = self.acquisition.poll()
        times, lines, states = self.acquisition.take_sync()  # only the onset edges are kept
        self._edges.extend(times[(lines == self.line) & (states == 1)].tolist())
        for decoded in self.stimulus.drain(MAX_DRAIN):
            count += 1
            message = decoded.message
            if not isinstance(message, StimulusShown):  # subscribed to StimulusShown only
                continue
            if message.trial in self.reports:
                self._log.warning(
                    "duplicate", "%s: trial %d reported twice; the last report counts", self.name, message.trial
                )
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
        return self.acquisition.spikes()

    def forget_spikes(self, before: float) -> None:
        """Drop spikes earlier than ``before`` (no window left to count needs them)."""
        self.acquisition.forget_spikes(before)
