"""Everything the monitor shows, as plain Python and numpy (no Qt), in bounded memory.

Receivers (the stream thread, the session-file reader) call `MonitorState.ingest` with
messages; the window calls `MonitorState.view` ~10 times a second and draws the copy it
gets.  One lock guards both, and each call holds it briefly, so receiving never waits
for drawing.  Every buffer has a cap (`Caps`); a session of any length uses the same
memory once the caps are reached.

Predicted vs measured: `Predictions` and `Responses` are matched by stimulus id; the
measured value is the mean over that stimulus's trials so far, the predicted value the
newest prediction for it (from whichever model version made it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from closedloop.messages import types as msg
from closedloop.messages.base import Message
from closedloop.monitor.buffers import ImageCache, Ring, StimulusTable, TrialTable, UnitColumns
from closedloop.monitor.correlation import correlations, pearson
from closedloop.monitor.health import StreamHealth
from closedloop.monitor.spikes import PsthSettings, SpikeView, SpikeWindow
from closedloop.model.metrics import mean_standard_errors, noise_per_hz
from closedloop.monitor.synthesis import SynthTracker, synthesized_intervals, synthesized_promises

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caps:
    """Upper bounds of every buffer (see `MonitorState`)."""

    units: int = 1024
    stimuli: int = 4096  # stimuli with measured/predicted means (least recently updated dropped)
    trials: int = 5000  # trials in the per-trial plot
    images: int = 256  # pixels cached for "on screen now"
    unit_spikes: int = 200_000  # spikes of the chosen unit
    window_spikes: int = 200_000  # spikes of all units in the last window_s
    window_s: float = 30.0
    onsets: int = 5000
    synthesized: int = 2000
    history: int = 2000  # points of the correlation and model-version histories
    population_points: int = 5_000  # points drawn in the population scatter (r uses all)
    statuses: int = 50


#: Message type -> the area of the view it changes; panels redraw only when theirs changed.
AREAS = {
    "Responses": "rates",
    "Predictions": "rates",
    "ModelUpdated": "model",
    "SynthesizeResult": "synth",
    "BlockRequest": "synth",
    "BlockStatus": "synth",
    "StimulusShown": "now",
    "SpikeBatch": "spikes",
    "SyncEvent": "spikes",
    "Error": "status",
}


@dataclass(frozen=True)
class PresentedNow:
    """The newest `StimulusShown`."""

    stimulus_id: int
    trial: int
    block: int
    dropped_frames: int


@dataclass(frozen=True)
class MonitorView:
    """A consistent copy of what the panels draw (see `MonitorState.view`)."""

    unit: int | None
    unit_ids: np.ndarray
    unit_points: dict[str, np.ndarray]  # measured, predicted, stimulus_id of the chosen unit
    unit_r: float
    population_points: dict[str, np.ndarray]  # measured, predicted, unit_id (subsampled)
    population_r: float
    median_unit_r: float
    per_unit_r: np.ndarray  # online r of each unit (NaN below 3 pairs)
    n_pairs: int
    correlation_history: np.ndarray  # rows: trials so far, pooled r, median unit r
    trials: dict[str, np.ndarray]  # trial, block, stimulus, measured, predicted (chosen unit)
    spikes: SpikeView
    now: PresentedNow | None
    image: np.ndarray | None
    model_version: int
    model_metrics: dict[str, float]
    heldout_r: np.ndarray  # per unit in unit_ids order, NaN when unknown
    model_history: np.ndarray  # rows: version, r_mean, r_median
    iteration: int
    block_status: Any
    synthesized: dict[str, np.ndarray]  # SynthTracker.arrays() + measured_hz
    health: dict[str, StreamHealth]
    dropped_frames: int
    dropped_last_block: int
    last_error: str
    counts: dict[str, int] = field(default_factory=dict)
    revisions: dict[str, int] = field(default_factory=dict)  # area -> changes so far (see AREAS)


class MonitorState:
    """The monitor's model of the session (thread-safe).

    Parameters
    ----------
    caps
        Buffer sizes.
    photodiode_line
        Sync line whose rising edges (state 1) are stimulus onsets.
    unit
        Unit to show first; ``None`` picks the first unit seen.
    psth
        PSTH window and bins.
    """

    def __init__(
        self,
        caps: Caps = Caps(),
        *,
        photodiode_line: int = 1,
        unit: int | None = None,
        psth: PsthSettings = PsthSettings(),
    ):
        self.caps = caps
        self._lock = threading.RLock()
        self.unit = unit
        self.units = UnitColumns(caps.units)
        self.stimuli = StimulusTable(caps.stimuli)
        self.trials = TrialTable(caps.trials)
        self.images = ImageCache(caps.images)
        self.spikes = SpikeWindow(
            photodiode_line=photodiode_line,
            unit_capacity=caps.unit_spikes,
            window_s=caps.window_s,
            window_capacity=caps.window_spikes,
            onset_capacity=caps.onsets,
            settings=psth,
        )
        self.spikes.choose(unit)
        self.synth = SynthTracker(caps.synthesized)
        self.correlation_history = Ring(
            caps.history, [("trials", np.float64), ("pooled", np.float64), ("median", np.float64)]
        )
        self.model_history = Ring(
            caps.history, [("version", np.float64), ("r_mean", np.float64), ("r_median", np.float64)]
        )
        self.health: dict[str, StreamHealth] = {}
        self.statuses: deque = deque(maxlen=caps.statuses)
        self.now: PresentedNow | None = None
        self.model_version = 0
        self.model_metrics: dict[str, float] = {}
        self._heldout: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros(0))
        self.iteration = 0
        self.dropped_frames = 0
        self._dropped_by_block: dict[int, int] = {}
        self.last_error = ""
        self.n_trials = 0
        self.unusable: Counter[str] = Counter()  # well-formed messages without what the monitor needs
        self._correlations = (np.nan, np.nan, np.zeros(0), 0)
        self._rates_changed = False
        self.revisions: Counter = Counter()

    # ------------------------------------------------------------------ input
    def stream(self, name: str, endpoint: str = "") -> StreamHealth:
        """The health record of a stream (created on first use)."""
        with self._lock:
            if name not in self.health:
                self.health[name] = StreamHealth(name, endpoint)
            elif endpoint:
                self.health[name].endpoint = endpoint
            return self.health[name]

    def update_transport(self, name: str, stats: dict[str, int]) -> None:
        """Copy a subscriber's `ReceiverStats` counters into the stream's health."""
        with self._lock:
            transport = self.stream(name).transport
            for key in transport:
                transport[key] = int(stats.get(key, transport[key]))

    def ingest(self, stream: str, message: Message) -> None:
        """Take one message from ``stream``; anything the monitor has no use for is counted."""
        with self._lock:
            health = self.stream(stream)
            health.last_message = time.monotonic()
            kind = message.type_name()
            health.by_type[kind] += 1
            handler = getattr(self, f"_on_{kind}", None)
            if handler is None:
                health.ignored[kind] += 1
                return
            self.revisions[AREAS.get(kind, "status")] += 1
            try:
                handler(message)
            except (ValueError, IndexError, TypeError) as error:
                # a valid message that still does not fit (e.g. ids beyond what we track)
                self.unusable[f"{kind} not shown"] += 1
                logger.warning("monitor: could not show a %s from %s (%s)", kind, stream, error)

    def choose_unit(self, unit: int | None) -> None:
        """Show another unit (by id)."""
        with self._lock:
            self.unit = None if unit is None else int(unit)
            self.spikes.choose(self.unit)
            self.revisions["unit"] += 1

    def has_unit(self, unit: int) -> bool:
        """Whether any message has named ``unit`` yet."""
        with self._lock:
            return self.units.column(unit) >= 0

    # -------------------------------------------------------------- handlers
    def _columns(self, unit_ids: np.ndarray) -> np.ndarray:
        columns = self.units.columns(unit_ids)
        self.stimuli.ensure_columns(len(self.units))
        self.trials.ensure_columns(len(self.units))
        if self.unit is None and len(self.units):
            self.choose_unit(int(self.units.ids[0]))
        return columns

    def _on_Responses(self, m: msg.Responses) -> None:
        all_columns = self._columns(m.unit_ids)
        valid = all_columns >= 0
        rates = np.asarray(m.rates, dtype=np.float64)[:, valid]
        columns = all_columns[valid]
        slots = self.stimuli.slots(m.stimulus_ids)
        finite = np.isfinite(rates)
        rows = np.broadcast_to(slots[:, None], rates.shape)[finite]
        cols = np.broadcast_to(columns[None, :], rates.shape)[finite]
        self.stimuli.add(rows, cols, rates[finite])
        self.trials.append(m.trial_ids, m.stimulus_ids, m.block, all_columns, m.rates)
        self.n_trials += len(m.trial_ids)
        self._rates_changed = True

    def _on_Predictions(self, m: msg.Predictions) -> None:
        if m.stimulus_ids is None:
            self.unusable["Predictions without stimulus ids"] += 1
            return
        columns = self._columns(m.unit_ids)
        valid = columns >= 0
        slots = self.stimuli.slots(m.stimulus_ids)
        self.stimuli.predicted[np.ix_(slots, columns[valid])] = np.asarray(m.rates)[:, valid]
        self._rates_changed = True

    def mark_correlation(self) -> None:
        """Add a point to the running correlation now (a session file read block by block)."""
        with self._lock:
            self._update_correlations()

    def _update_correlations(self) -> None:
        """Recompute the correlations if rates changed since the last view.

        Done when a view is taken (≤ 10 Hz), not per message, so a burst of blocks costs
        one computation; the history gets one point per view that saw new data.
        """
        if not self._rates_changed:
            return
        self._rates_changed = False
        used = self.stimuli.used_slots()
        n = len(self.units)
        measured = self.stimuli.measured_mean()[used, :n]
        predicted = self.stimuli.predicted[used, :n]
        self._correlations = correlations(measured, predicted)
        pooled, median, _, n_pairs = self._correlations
        if n_pairs >= 3:
            self.correlation_history.append(
                np.array([(self.n_trials, pooled, median)], dtype=self.correlation_history._data.dtype)
            )

    def _on_ModelUpdated(self, m: msg.ModelUpdated) -> None:
        self.model_version = int(m.version)
        self.model_metrics = dict(m.metrics)
        if m.unit_ids is not None:
            self._heldout = (np.array(m.unit_ids, dtype=np.int64), np.array(m.heldout_r, dtype=np.float64))
            self._columns(m.unit_ids)
        self.synth.add_model(m.version, m.metrics)
        row = (m.version, m.metrics.get("r_mean", np.nan), m.metrics.get("r_median", np.nan))
        self.model_history.append(np.array([row], dtype=self.model_history._data.dtype))

    def _on_SynthesizeResult(self, m: msg.SynthesizeResult) -> None:
        self.synth.add_result(
            m.unit_ids, m.targets, m.achieved, m.images, m.model_version, self.iteration, spread=m.spread
        )

    def _on_BlockRequest(self, m: msg.BlockRequest) -> None:
        if m.image_ids is None or m.pixels is None:  # a BlockRequest has both or neither
            return
        for stimulus_id, pixels in zip(np.asarray(m.image_ids).tolist(), m.pixels):
            self.images.put(stimulus_id, pixels)
        self.synth.add_presented(m.kind, m.image_ids, m.pixels)

    def _on_BlockStatus(self, m: msg.BlockStatus) -> None:
        self.iteration = int(m.iteration)
        self.statuses.append(m)

    def _on_StimulusShown(self, m: msg.StimulusShown) -> None:
        self.now = PresentedNow(int(m.stimulus_id), int(m.trial), int(m.block), int(m.dropped_frames))
        self.dropped_frames += int(m.dropped_frames)
        self._dropped_by_block[int(m.block)] = self._dropped_by_block.get(int(m.block), 0) + int(m.dropped_frames)
        while len(self._dropped_by_block) > 2:  # only the current and the previous block are shown
            self._dropped_by_block.pop(min(self._dropped_by_block))

    def _on_SpikeBatch(self, m: msg.SpikeBatch) -> None:
        self.spikes.add_spikes(m.unit_ids, m.times)

    def _on_SyncEvent(self, m: msg.SyncEvent) -> None:
        self.spikes.add_sync(m.line, m.state, m.time)

    def _on_Error(self, m: msg.Error) -> None:
        self.last_error = f"{m.code}: {m.message}"

    # ---------------------------------------------------------------- session files
    def add_synthesized(
        self,
        stimulus_ids: np.ndarray,
        unit_ids: np.ndarray,
        targets: np.ndarray,
        achieved: np.ndarray,
        model_versions: np.ndarray,
        spread: np.ndarray | None = None,
    ) -> None:
        """Synthesized stimuli whose ids are known (from a session file's provenance).

        ``spread`` is the ensemble's std of each ``achieved`` rate (NaN or ``None``: unknown).
        """
        with self._lock:
            self.synth.add_known(stimulus_ids, unit_ids, targets, achieved, model_versions, spread)
            self.revisions["synth"] += 1

    def error_from(self, stream: str, text: str) -> None:
        """Show a problem a source had (e.g. a session file caught mid-write)."""
        with self._lock:
            self.last_error = f"{stream}: {text}"

    def put_image(self, stimulus_id: int, pixels: np.ndarray) -> None:
        with self._lock:
            self.images.put(stimulus_id, pixels)
            self.revisions["now"] += 1

    def replace_unit_spikes(self, unit: int, times: np.ndarray, covered_from: float) -> None:
        """Every spike of ``unit`` since ``covered_from`` (re-read from a session file)."""
        with self._lock:
            if unit == self.unit:
                self.spikes.replace_unit_spikes(unit, times, covered_from)
                self.revisions["spikes"] += 1

    # ----------------------------------------------------------------- output
    def view(self) -> MonitorView:
        """A copy of everything drawn, taken under the lock."""
        with self._lock:
            return self._view()

    def _view(self) -> MonitorView:
        self._update_correlations()
        n = len(self.units)
        unit_ids = self.units.ids.copy()
        column = self.units.column(self.unit) if self.unit is not None else -1
        used = self.stimuli.used_slots()
        measured = self.stimuli.measured_mean()[used, :n]
        predicted = self.stimuli.predicted[used, :n]
        pooled, median, per_unit, n_pairs = self._correlations
        unit_points, unit_r = _unit_points(measured, predicted, self.stimuli.ids[used], column)
        meta, rates = self.trials.values()
        chosen = rates[:, column].astype(np.float64) if column >= 0 else np.full(len(meta), np.nan)
        trial_slots = self.stimuli.lookup(meta["stimulus"])
        trial_predicted = np.full(len(meta), np.nan)
        if column >= 0:
            known = trial_slots >= 0
            trial_predicted[known] = self.stimuli.predicted[trial_slots[known], column]
        heldout = np.full(n, np.nan)
        ids, r = self._heldout
        columns = np.array([self.units.column(u) for u in ids.tolist()], dtype=np.int64)
        heldout[columns[columns >= 0]] = r[columns >= 0]
        synth = self.synth.arrays()
        synth["measured_hz"], synth["measured_se_hz"] = self._synth_measured(synth)
        synth["promised_hz"] = synthesized_promises(synth, self.synth.top_ratios)
        synth["interval_sds"], synth["interval_hz"] = synthesized_intervals(synth, self.synth.photographs_k)
        return MonitorView(
            unit=self.unit,
            unit_ids=unit_ids,
            unit_points=unit_points,
            unit_r=unit_r,
            population_points=_population_points(measured, predicted, unit_ids, self.caps.population_points),
            population_r=pooled,
            median_unit_r=median,
            per_unit_r=np.array(per_unit),
            n_pairs=n_pairs,
            correlation_history=self.correlation_history.values(),
            trials={
                "trial": meta["trial"],
                "block": meta["block"],
                "stimulus": meta["stimulus"],
                "measured": chosen,
                "predicted": trial_predicted,
            },
            spikes=self.spikes.view(),
            now=self.now,
            image=None if self.now is None else self.images.get(self.now.stimulus_id),
            model_version=self.model_version,
            model_metrics=dict(self.model_metrics),
            heldout_r=heldout,
            model_history=self.model_history.values(),
            iteration=self.iteration,
            block_status=self.statuses[-1] if self.statuses else None,
            synthesized=synth,
            health={name: h.copy() for name, h in self.health.items()},
            dropped_frames=self.dropped_frames,
            dropped_last_block=self._dropped_by_block.get(self.now.block, 0) if self.now else 0,
            last_error=self.last_error,
            counts=self._counts(),
            revisions=dict(self.revisions),
        )

    def _synth_measured(self, synth: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Each synthesized image's measured mean so far and its standard error (NaN: not shown)."""
        stimuli = self.stimuli
        slots = np.array([stimuli.slot(s) if s >= 0 else -1 for s in synth["stimulus_id"].tolist()], dtype=np.int64)
        columns = np.array([self.units.column(u) for u in synth["unit_id"].tolist()], dtype=np.int64)
        known = (slots >= 0) & (columns >= 0)
        measured, se = np.full(slots.size, np.nan), np.full(slots.size, np.nan)
        if not known.any():
            return measured, se
        wanted, index = np.unique(columns[known], return_inverse=True)  # only the driven units' columns
        used = stimuli.used_slots()
        means, variances = stimuli.measured_mean(wanted), stimuli.measured_variance(wanted)
        counts = stimuli.count[:, wanted]
        noise = noise_per_hz(means[used], variances[used], counts[used])
        rows = slots[known]
        measured[known] = means[rows, index]
        se[known] = mean_standard_errors(
            measured[known], variances[rows, index], counts[rows, index], synth["achieved_hz"][known], noise[index]
        )
        return measured, se

    def _counts(self) -> dict[str, int]:
        return {
            "trials": self.n_trials,
            "stimuli_kept": len(self.stimuli),
            "stimuli_dropped": self.stimuli.evicted,
            "units": len(self.units),
            "units_refused": self.units.refused,
            "synth_by_pixels": self.synth.matched_by_pixels,
            "synth_by_order": self.synth.matched_by_order,
            **{f"unusable: {k}": v for k, v in self.unusable.items()},
        }

    def sizes(self) -> dict[str, int]:
        """Rows held in each buffer (each is at most its cap in `Caps`)."""
        with self._lock:
            return {
                "stimuli": len(self.stimuli),
                "trials": len(self.trials),
                "images": len(self.images),
                "unit_spikes": len(self.spikes.unit_spikes),
                "window_spikes": len(self.spikes.recent),
                "onsets": len(self.spikes.onsets),
                "synthesized": len(self.synth.records),
                "correlation_history": len(self.correlation_history),
                "model_history": len(self.model_history),
                "statuses": len(self.statuses),
            }

    def nbytes(self) -> int:
        """Bytes held by the numpy buffers."""
        with self._lock:
            return (
                self.stimuli.nbytes
                + self.trials.nbytes
                + self.images.nbytes
                + self.spikes.nbytes
                + self.correlation_history.nbytes
                + self.model_history.nbytes
            )


def _unit_points(
    measured: np.ndarray, predicted: np.ndarray, stimulus_ids: np.ndarray, column: int
) -> tuple[dict[str, np.ndarray], float]:
    if column < 0 or column >= measured.shape[1]:
        empty = np.zeros(0)
        return {"measured": empty, "predicted": empty, "stimulus_id": empty.astype(np.int64)}, np.nan
    m, p = measured[:, column], predicted[:, column]
    both = np.isfinite(m) & np.isfinite(p)
    return ({"measured": m[both], "predicted": p[both], "stimulus_id": stimulus_ids[both]}, pearson(m[both], p[both]))


def _population_points(
    measured: np.ndarray, predicted: np.ndarray, unit_ids: np.ndarray, cap: int
) -> dict[str, np.ndarray]:
    both = np.isfinite(measured) & np.isfinite(predicted)
    rows, cols = np.nonzero(both)
    if rows.size > cap:
        # the newest stimuli (used slots are oldest first), all their units
        keep = np.argsort(rows, kind="stable")[-cap:]
        rows, cols = rows[keep], cols[keep]
    return {"measured": measured[rows, cols], "predicted": predicted[rows, cols], "unit_id": unit_ids[cols]}
