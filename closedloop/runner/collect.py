"""Gathering what acquisition and the presenter send, block by block.

`StreamCollector` drains the acquisition stream (SpikeBatch, SyncEvent, Heartbeat, in
a `closedloop.acquisition.buffer.AcquisitionBuffer`) and the presenter's StimulusShown
reports on every runner step, so no socket backs up while the runner waits for a fit.  Spikes and sync events
pile up until a block takes
them (`StreamCollector.take`): every one received is stored with some block, so
nothing between blocks is lost.  StimulusShown reports are kept per block number.

A presentation block is complete (`StreamCollector.block_complete`) once every trial
has been reported and acquisition has delivered data past the last onset plus the
end of the response window, on the acquisition's own clock — or, when the stream has
gone quiet, once a heartbeat arrives ``settle_s`` after the last report (a stream
keeps its order, so everything before that heartbeat is in).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from closedloop.acquisition.buffer import MAX_DRAIN, AcquisitionBuffer, StreamData
from closedloop.messages import StimulusShown
from closedloop.transport import Subscriber
from closedloop.transport.receiver import RateLimitedLog

logger = logging.getLogger(__name__)

__all__ = ["ShownTrials", "StreamCollector", "StreamData"]


@dataclass
class ShownTrials:
    """The StimulusShown reports of one block, by trial index."""

    by_trial: dict[int, StimulusShown] = field(default_factory=dict)
    duplicates: int = 0
    last_received: float = 0.0  # time.monotonic() of the newest report

    def ordered(self) -> list[StimulusShown]:
        return [self.by_trial[k] for k in sorted(self.by_trial)]


class StreamCollector:
    """Buffers the acquisition stream and the presenter's reports (see module notes).

    Parameters
    ----------
    spikes_endpoint, stimulus_endpoint
        Acquisition PUB and presenter PUB, connected to.
    name
        For log lines.
    """

    def __init__(self, spikes_endpoint: str, stimulus_endpoint: str, name: str = "runner"):
        self.name = name
        self.acquisition = AcquisitionBuffer(
            spikes_endpoint, name, on_other=lambda message: self._unexpected(message, "acquisition")
        )
        self.stimulus = Subscriber(stimulus_endpoint, topics=[StimulusShown], name=f"{name} stimulus")
        self._log = RateLimitedLog(logger, 2.0)
        self.shown: dict[int, ShownTrials] = {}
        self.unexpected = 0

    @property
    def horizon(self) -> float:
        """Newest spike/sync time received (acquisition clock)."""
        return self.acquisition.horizon

    @property
    def heartbeats(self) -> int:
        return self.acquisition.heartbeats

    @property
    def last_heartbeat(self) -> float:
        """``time.monotonic()`` when the newest heartbeat arrived."""
        return self.acquisition.last_heartbeat

    def close(self) -> None:
        self.acquisition.close()
        self.stimulus.close()

    # --- receiving ----------------------------------------------------------------

    def poll(self) -> None:
        """Take in everything already queued on both sockets (without waiting)."""
        self.acquisition.poll()
        for decoded in self.stimulus.drain(MAX_DRAIN):
            message = decoded.message
            if isinstance(message, StimulusShown):
                trials = self.shown.setdefault(message.block, ShownTrials())
                if message.trial in trials.by_trial:
                    trials.duplicates += 1
                trials.by_trial[message.trial] = message
                trials.last_received = time.monotonic()
            else:
                self._unexpected(message, "stimulus")

    def _unexpected(self, message, where: str) -> None:
        self.unexpected += 1
        self._log.warning(
            "unexpected",
            "%s: ignored a %s on the %s stream (%d unexpected so far)",
            self.name,
            message.type_name(),
            where,
            self.unexpected,
        )

    # --- blocks -------------------------------------------------------------------

    def trials_of(self, block: int) -> ShownTrials:
        return self.shown.setdefault(block, ShownTrials())

    def forget(self, block: int) -> None:
        self.shown.pop(block, None)

    def pending_edges(self, line: int) -> np.ndarray:
        """Rising edges on ``line`` received since the last `take`."""
        return self.acquisition.pending_edges(line)

    def block_complete(self, block: int, n_trials: int, line: int, window_stop_s: float, settle_s: float) -> bool:
        """Every trial reported and acquisition past the last response window (see module notes)."""
        shown = self.trials_of(block)
        if len(shown.by_trial) < n_trials:
            return False
        edges = self.pending_edges(line)
        if edges.size >= n_trials:
            flips = [m.flip_time for m in shown.ordered()]
            last_onset = max(edges[n_trials - 1], edges[0] + (flips[-1] - flips[0]))
            if self.horizon >= last_onset + window_stop_s:
                return True
        return self.last_heartbeat >= shown.last_received + settle_s

    def pending_units(self) -> np.ndarray:
        """Unit ids of the spikes received since the last `take`."""
        return self.acquisition.spikes()[0]

    def take(self) -> StreamData:
        """Everything received since the last take, for one block to store."""
        return self.acquisition.take()

    def stats(self) -> dict[str, int]:
        """Stream counters, for the log at teardown."""
        return {
            "acquisition_gaps": self.acquisition.stats.gaps,
            "acquisition_missing": self.acquisition.stats.missing,
            "acquisition_rejected": self.acquisition.stats.rejected,
            "stimulus_gaps": self.stimulus.stats.gaps,
            "heartbeats": self.heartbeats,
            "unexpected": self.unexpected,
        }
