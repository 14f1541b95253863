"""Gathering what acquisition and the presenter send, block by block.

`StreamCollector` drains the acquisition stream (SpikeBatch, SyncEvent, Heartbeat)
and the presenter's StimulusShown reports on every runner step, so no socket backs up
while the runner waits for a fit.  Spikes and sync events pile up until a block takes
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

from closedloop.messages import Heartbeat, SpikeBatch, StimulusShown, SyncEvent
from closedloop.transport import Subscriber
from closedloop.transport.receiver import RateLimitedLog

logger = logging.getLogger(__name__)

_MAX_DRAIN = 2000  # messages per socket per step: keeps a step short under a flood


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
        # Every topic: SpikeBatch, SyncEvent and Heartbeat share one sequence (gap checks).
        self.acquisition = Subscriber(spikes_endpoint, name=f"{name} acquisition")
        self.stimulus = Subscriber(stimulus_endpoint, topics=[StimulusShown], name=f"{name} stimulus")
        self._log = RateLimitedLog(logger, 2.0)
        self._reset()
        self.shown: dict[int, ShownTrials] = {}
        self.horizon = -np.inf  # newest spike/sync time received (acquisition clock)
        self.last_heartbeat = 0.0  # time.monotonic() when the newest heartbeat arrived
        self.heartbeats = 0
        self.unexpected = 0

    def close(self) -> None:
        self.acquisition.close()
        self.stimulus.close()

    def _reset(self) -> None:
        self._units: list[np.ndarray] = []
        self._times: list[np.ndarray] = []
        self._sync: list[tuple[float, int, int]] = []

    # --- receiving ----------------------------------------------------------------

    def poll(self) -> None:
        """Take in everything already queued on both sockets (without waiting)."""
        for decoded in self.acquisition.drain(_MAX_DRAIN):
            message = decoded.message
            if isinstance(message, SpikeBatch):
                if message.times.size:
                    self._units.append(np.asarray(message.unit_ids, dtype=np.int64))
                    self._times.append(np.asarray(message.times, dtype=np.float64))
                    self.horizon = max(self.horizon, float(message.times.max()))
            elif isinstance(message, SyncEvent):
                self._sync.append((message.time, message.line, message.state))
                self.horizon = max(self.horizon, message.time)
            elif isinstance(message, Heartbeat):
                self.last_heartbeat = time.monotonic()
                self.heartbeats += 1
            else:
                self._unexpected(message, "acquisition")
        for decoded in self.stimulus.drain(_MAX_DRAIN):
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
        self._log.warning("unexpected", "%s: ignored a %s on the %s stream (%d unexpected so far)",
                          self.name, message.type_name(), where, self.unexpected)

    # --- blocks -------------------------------------------------------------------

    def trials_of(self, block: int) -> ShownTrials:
        return self.shown.setdefault(block, ShownTrials())

    def forget(self, block: int) -> None:
        self.shown.pop(block, None)

    def pending_edges(self, line: int) -> np.ndarray:
        """Rising edges on ``line`` received since the last `take`."""
        return np.array([t for t, li, state in self._sync if li == line and state == 1], dtype=np.float64)

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
        return np.concatenate(self._units) if self._units else np.zeros(0, np.int64)

    def take(self) -> StreamData:
        """Everything received since the last take, for one block to store."""
        units = np.concatenate(self._units) if self._units else np.zeros(0, np.int64)
        times = np.concatenate(self._times) if self._times else np.zeros(0, np.float64)
        sync = np.array(self._sync, dtype=np.float64).reshape(-1, 3)
        self._reset()
        return StreamData(units, times, sync[:, 0].copy(), sync[:, 1].astype(np.int32), sync[:, 2].astype(np.int8))

    def stats(self) -> dict[str, int]:
        """Stream counters, for the log at teardown."""
        return {"acquisition_gaps": self.acquisition.stats.gaps, "acquisition_missing": self.acquisition.stats.missing,
                "acquisition_rejected": self.acquisition.stats.rejected, "stimulus_gaps": self.stimulus.stats.gaps,
                "heartbeats": self.heartbeats, "unexpected": self.unexpected}
