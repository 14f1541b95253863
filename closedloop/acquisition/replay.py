"""Replay an archived recording as if it were being recorded now (docs/architecture.md).

Spikes and sync edges are published in their recorded order on the recorded acquisition
clock, in real time (``speed`` 1), N× faster, or as fast as possible (``speed`` 0, with
back-pressure so nothing is dropped).  There is no presenter in a replay, so the adapter
also plays the presenter's part: with ``stimulus_endpoint`` it publishes a
`StimulusShown` for each trial when the trial's onset is published.

Session files are replayed as written: the ``spikes`` and ``sync`` tables and the
``trials`` table (stimulus id, block, flip time, frames, dropped frames).

pvc-8 files hold binned counts per stimulus and repeat, not a timeline.  They are laid
out as the experiment ran them: repeat by repeat, stimuli in index order, each trial
``T`` ms of stimulus (``resp_train``) followed by its blank (``resp_train_blk`` when the
file has it, else ``blank_s`` without spikes).  A spike in 1 ms bin ``j`` is placed at the
bin's centre; the photodiode rises at each onset and falls at each offset.  Stimulus ids
are the 0-based stimulus indices, blocks the repeat index, ``n_frames`` the stimulus
duration at ``refresh_hz``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from closedloop.acquisition.base import AcquisitionAdapter, Acquired, PlaybackClock, SubscriberGate
from closedloop.config.rig import PHOTODIODE_LINE
from closedloop.data.formats import detect_format
from closedloop.data.pvc8 import read_pvc8
from closedloop.data.session import SessionReader
from closedloop.errors import DataFileError
from closedloop.messages import StimulusShown
from closedloop.sim.archive_spec import PHOTODIODE_LAG_S
from closedloop.transport import Publisher

logger = logging.getLogger(__name__)

#: At speed 0 one step publishes at most this many spikes (keeps steps short).
SPIKES_PER_STEP = 20_000
PVC8_BIN_S = 0.001


@dataclass
class Timeline:
    """A recording as events in time order (``trials`` is a structured array)."""

    unit_ids: np.ndarray
    times: np.ndarray
    sync: np.ndarray  # structured: time_s, line, state
    trials: np.ndarray  # structured: stimulus_id, block, onset_s, flip_s, n_frames, dropped_frames


_SYNC = np.dtype([("time_s", "f8"), ("line", "i4"), ("state", "i1")])
_TRIALS = np.dtype(
    [
        ("stimulus_id", "i8"),
        ("block", "i8"),
        ("onset_s", "f8"),
        ("flip_s", "f8"),
        ("n_frames", "i4"),
        ("dropped_frames", "i4"),
    ]
)
_SYNC_FIELDS: tuple[str, ...] = _SYNC.names or ()  # a structured dtype always has names
_TRIALS_FIELDS: tuple[str, ...] = _TRIALS.names or ()


def session_timeline(path: Path) -> Timeline:
    """The timeline of a session file, as recorded."""
    with SessionReader(path) as reader:
        spikes, sync, trials = reader.spikes, reader.sync, reader.trials
    order = np.argsort(spikes["time_s"], kind="stable")
    sync_out = np.zeros(len(sync), _SYNC)
    for name in _SYNC_FIELDS:
        sync_out[name] = sync[name]
    trials_out = np.zeros(len(trials), _TRIALS)
    for name in _TRIALS_FIELDS:
        trials_out[name] = trials[name]
    return Timeline(
        spikes["unit_id"][order].astype(np.int64),
        spikes["time_s"][order].astype(np.float64),
        np.sort(sync_out, order="time_s", kind="stable"),
        trials_out,
    )


def pvc8_timeline(path: Path, *, blank_s: float, refresh_hz: float, photodiode_line: int) -> Timeline:
    """A pvc-8 file laid out as a recording (see module notes)."""
    try:
        recording = read_pvc8(path, load_blank=True)
    except DataFileError as error:
        if "resp_train_blk" not in str(error):
            raise
        recording = read_pvc8(path)
    train, blank = recording.resp_train, recording.resp_train_blk
    n_units, n_stimuli, n_repeats, n_bins = train.shape
    stimulus_s = n_bins * PVC8_BIN_S
    period = stimulus_s + (blank.shape[3] * PVC8_BIN_S if blank is not None else blank_s)
    # Trial k = repeat r, stimulus s with k = r * n_stimuli + s.
    onsets = np.arange(n_stimuli * n_repeats) * period
    units, times = [], []
    for counts, start in ((train, 0.0), (blank, stimulus_s)):
        if counts is None:
            continue
        unit, stim, rep, step = np.nonzero(counts)
        n = counts[unit, stim, rep, step].astype(np.int64)
        trial = rep * n_stimuli + stim
        units.append(np.repeat(unit, n))
        times.append(np.repeat(onsets[trial] + start + (step + 0.5) * PVC8_BIN_S, n))
    unit_index = np.concatenate(units)
    spike_times = np.concatenate(times)
    order = np.argsort(spike_times, kind="stable")
    sync = np.zeros(2 * len(onsets), _SYNC)
    sync["time_s"] = np.stack([onsets, onsets + stimulus_s], axis=1).ravel()
    sync["line"] = photodiode_line
    sync["state"] = np.tile([1, 0], len(onsets))
    trials = np.zeros(len(onsets), _TRIALS)
    trials["stimulus_id"] = np.tile(np.arange(n_stimuli), n_repeats)
    trials["block"] = np.repeat(np.arange(n_repeats), n_stimuli)
    trials["onset_s"] = onsets
    trials["flip_s"] = onsets - PHOTODIODE_LAG_S
    trials["n_frames"] = max(1, int(round(stimulus_s * refresh_hz)))
    return Timeline(recording.unit_ids[unit_index[order]], spike_times[order], sync, trials)


class ReplayAdapter(AcquisitionAdapter):
    """Publish an archived recording (session file or pvc-8) as a live stream.

    Parameters
    ----------
    endpoint
        Where the spike stream is published.
    archive
        Session ``.h5`` or pvc-8 ``.mat`` (told apart by content).
    speed
        1 = real time, N = N× faster, 0 = as fast as possible.
    stimulus_endpoint
        Where to publish the presenter's `StimulusShown` reports (``None``: don't).
    blank_s, refresh_hz, photodiode_line
        pvc-8 only: see module notes.
    """

    def __init__(
        self,
        endpoint: str,
        archive: str | Path,
        *,
        name: str = "replay",
        speed: float = 1.0,
        stimulus_endpoint: str | None = None,
        blank_s: float = 0.2,
        refresh_hz: float = 100.0,
        photodiode_line: int = PHOTODIODE_LINE,
        **adapter_options,
    ):
        adapter_options.setdefault("lossless", speed == 0)
        super().__init__(name, endpoint, **adapter_options)
        self.archive = str(archive)
        self.clock = PlaybackClock(speed)
        self.stimulus_endpoint = stimulus_endpoint
        self.blank_s = float(blank_s)
        self.refresh_hz = float(refresh_hz)
        self.photodiode_line = int(photodiode_line)
        self.stimulus_publisher: Publisher | None = None

    def open(self) -> None:
        path = Path(self.archive)
        if detect_format(path) == "pvc8":
            self.timeline = pvc8_timeline(
                path, blank_s=self.blank_s, refresh_hz=self.refresh_hz, photodiode_line=self.photodiode_line
            )
        else:
            self.timeline = session_timeline(path)
        t = self.timeline
        firsts = [a[0] for a in (t.times, t.sync["time_s"], t.trials["onset_s"]) if len(a)]
        self._start_s = min(firsts) if firsts else 0.0
        self._spike, self._sync, self._trial = 0, 0, 0
        if self.stimulus_endpoint:
            self.stimulus_publisher = Publisher(
                self.stimulus_endpoint, source=f"{self.name}-presenter", session=self.session
            )
            self.stimulus_endpoint = self.stimulus_publisher.endpoint
        # The runner listens to both streams: hold back until it is on this one too.
        self._stimulus_gate = SubscriberGate(
            self.stimulus_publisher.socket if self.stimulus_publisher else None,
            self.wait_for_subscriber_s if self.stimulus_publisher else 0.0,
        )
        logger.info(
            "%s: replaying %s: %d spikes, %d sync edges, %d trials at speed %g",
            self.name,
            path,
            len(t.times),
            len(t.sync),
            len(t.trials),
            self.clock.speed,
        )
        self.clock.start()

    def close(self) -> None:
        gate = getattr(self, "_stimulus_gate", None)
        if gate is not None:
            gate.close()
        if self.stimulus_publisher is not None:
            self.stimulus_publisher.close()

    def input_stats(self) -> dict[str, int]:
        return {"spikes_replayed": getattr(self, "_spike", 0), "trials_replayed": getattr(self, "_trial", 0)}

    def _until(self) -> float:
        """Recording time up to which everything is due now."""
        if self.clock.speed > 0:
            return self._start_s + self.clock.now_s()
        times, cursor = self.timeline.times, self._spike
        if cursor + SPIKES_PER_STEP >= len(times):
            return np.inf
        until = times[cursor + SPIKES_PER_STEP]
        return until if until > times[cursor] else np.nextafter(times[cursor], np.inf)

    def acquire(self) -> Acquired:
        if not self._stimulus_gate.open():
            return Acquired()
        t = self.timeline
        until = self._until()
        stop = int(np.searchsorted(t.times, until, side="left"))
        sync_stop = int(np.searchsorted(t.sync["time_s"], until, side="left"))
        trial_stop = int(np.searchsorted(t.trials["onset_s"], until, side="left"))
        chunk = Acquired(
            unit_ids=t.unit_ids[self._spike : stop],
            times=t.times[self._spike : stop],
            sync=[(int(e["line"]), int(e["state"]), float(e["time_s"])) for e in t.sync[self._sync : sync_stop]],
        )
        idle = stop == self._spike and sync_stop == self._sync and trial_stop == self._trial
        for trial in t.trials[self._trial : trial_stop]:
            self._report(self._trial, trial)
            self._trial += 1
        self._spike, self._sync = stop, sync_stop
        chunk.finished = stop == len(t.times) and sync_stop == len(t.sync) and self._trial == len(t.trials)
        if idle and not chunk.finished:
            time.sleep(0.001)  # real time: nothing due yet
        return chunk

    def _report(self, index: int, trial: np.void) -> None:
        if self.stimulus_publisher is None:
            return
        flip = float(trial["flip_s"])
        if not np.isfinite(flip):
            flip = float(trial["onset_s"]) - PHOTODIODE_LAG_S
        self.stimulus_publisher.send(
            StimulusShown(
                stimulus_id=int(trial["stimulus_id"]),
                trial=int(index),
                block=max(int(trial["block"]), 0),
                flip_time=flip,
                n_frames=max(int(trial["n_frames"]), 0),
                dropped_frames=max(int(trial["dropped_frames"]), 0),
            )
        )
