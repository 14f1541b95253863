"""Raster and PSTH of one chosen unit, aligned to photodiode onsets, in bounded memory.

With 100+ units spiking at tens of Hz the monitor cannot keep every spike, so it keeps

- every spike of the *chosen* unit (a ring of ``unit_capacity`` spikes),
- the spikes of *all* units over the last ``window_s`` seconds (a ring of at most
  ``window_capacity``), so picking another unit shows its recent activity at once,
- the last ``onset_capacity`` photodiode onsets (SyncEvent state 1 on the photodiode line).

A PSTH counts only onsets whose whole window lies inside the stretch of time for which
every spike of the chosen unit is kept (``coverage_start`` … newest spike time), so a
trial whose spikes have not all arrived yet, or were dropped from a ring, never biases it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from closedloop.monitor.buffers import Ring

_SPIKE = np.dtype([("unit", np.int64), ("time", np.float64)])


@dataclass(frozen=True)
class PsthSettings:
    """Window around onset and bin width, seconds; ``raster_rows`` trials in the raster."""

    pre_s: float = 0.1
    post_s: float = 0.3
    bin_s: float = 0.01
    raster_rows: int = 40

    def edges(self) -> np.ndarray:
        n = int(round((self.pre_s + self.post_s) / self.bin_s))
        return np.linspace(-self.pre_s, -self.pre_s + n * self.bin_s, n + 1)


@dataclass(frozen=True)
class SpikeView:
    """What the raster and PSTH panels draw (copies)."""

    unit: int | None
    edges: np.ndarray  # (n_bins + 1,) s relative to onset
    counts: np.ndarray  # (n_bins,) spikes summed over ``n_onsets``
    rate_hz: np.ndarray  # (n_bins,) counts / (n_onsets × bin)
    n_onsets: int
    raster_times: np.ndarray  # spike times relative to their onset
    raster_rows: np.ndarray  # row of each (0 = oldest shown onset)
    row_onsets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # onset number (1 = first) per row


class SpikeWindow:
    """Keeps what the raster/PSTH of the chosen unit needs (see module docstring)."""

    def __init__(
        self,
        *,
        photodiode_line: int = 1,
        unit_capacity: int = 200_000,
        window_s: float = 30.0,
        window_capacity: int = 200_000,
        onset_capacity: int = 5_000,
        settings: PsthSettings = PsthSettings(),
    ):
        self.photodiode_line = int(photodiode_line)
        self.window_s = float(window_s)
        self.settings = settings
        self.unit: int | None = None
        self.unit_spikes = Ring(unit_capacity, np.float64)
        self.recent = Ring(window_capacity, _SPIKE)
        self.onsets = Ring(onset_capacity, np.float64)
        self.n_onsets_seen = 0  # photodiode onsets ever added (numbers the raster rows)
        self.latest_time = -np.inf
        self.coverage_start = np.inf
        self._recent_start = -np.inf  # from here on `recent` holds every spike

    # ------------------------------------------------------------------ input
    def add_spikes(self, unit_ids: np.ndarray, times: np.ndarray) -> None:
        """A batch of spikes (any units, acquisition clock)."""
        if len(times) == 0:
            return
        unit_ids = np.asarray(unit_ids, dtype=np.int64)
        times = np.asarray(times, dtype=np.float64)
        if self._recent_start == -np.inf:
            self._recent_start = float(times.min())
        if self.unit is not None:
            if self.coverage_start == np.inf:
                self.coverage_start = float(times.min())
            mine = times[unit_ids == self.unit]
            before = self.unit_spikes.dropped
            self.unit_spikes.append(mine)
            if self.unit_spikes.dropped > before:
                self.coverage_start = max(self.coverage_start, float(self.unit_spikes.oldest()))
        self.latest_time = max(self.latest_time, float(times.max()))
        self._append_recent(unit_ids, times)

    def _append_recent(self, unit_ids: np.ndarray, times: np.ndarray) -> None:
        keep = times >= self.latest_time - self.window_s
        rows = np.empty(int(keep.sum()), dtype=_SPIKE)
        rows["unit"], rows["time"] = unit_ids[keep], times[keep]
        before = self.recent.dropped
        self.recent.append(rows)
        if not keep.all():
            self._recent_start = max(self._recent_start, self.latest_time - self.window_s)
        if self.recent.dropped > before:
            self._recent_start = max(self._recent_start, float(self.recent.oldest()["time"]))

    def add_sync(self, line: int, state: int, time: float) -> bool:
        """A sync event; True when it is an onset (photodiode line, state 1)."""
        if int(line) != self.photodiode_line or int(state) != 1:
            return False
        self.onsets.append(np.array([time], dtype=np.float64))
        self.n_onsets_seen += 1
        return True

    def choose(self, unit: int | None) -> None:
        """Follow another unit, starting from the spikes kept for the last ``window_s``."""
        if unit == self.unit:
            return
        self.unit = None if unit is None else int(unit)
        self.unit_spikes.clear()
        self.coverage_start = np.inf
        if self.unit is None or len(self.recent) == 0:
            return
        recent = self.recent.values()
        window_start = max(self._recent_start, self.latest_time - self.window_s)
        mine = recent["time"][(recent["unit"] == self.unit) & (recent["time"] >= window_start)]
        self.unit_spikes.append(np.sort(mine))
        self.coverage_start = window_start

    def replace_unit_spikes(self, unit: int, times: np.ndarray, covered_from: float) -> None:
        """Every spike of ``unit`` since ``covered_from`` (a session file re-read for it)."""
        self.unit = int(unit)
        self.unit_spikes.clear()
        times = np.sort(np.asarray(times, dtype=np.float64))
        self.unit_spikes.append(times)
        kept = self.unit_spikes.values()
        self.coverage_start = float(covered_from) if len(kept) == len(times) else float(kept[0])
        if len(times):
            self.latest_time = max(self.latest_time, float(times[-1]))

    # ----------------------------------------------------------------- output
    def complete_onsets(self) -> np.ndarray:
        """Onsets whose whole PSTH window is covered by the kept spikes of the chosen unit."""
        return self._complete()[0]

    def _complete(self) -> tuple[np.ndarray, np.ndarray]:
        """`complete_onsets` and each one's number since the start (1 = the first onset seen)."""
        onsets = self.onsets.values()
        numbers = self.n_onsets_seen - onsets.size + 1 + np.arange(onsets.size, dtype=np.int64)
        s = self.settings
        keep = (onsets - s.pre_s >= self.coverage_start) & (onsets + s.post_s <= self.latest_time)
        return onsets[keep], numbers[keep]

    def view(self) -> SpikeView:
        s = self.settings
        edges = s.edges()
        onsets, numbers = self._complete() if self.unit is not None else (np.zeros(0), np.zeros(0, np.int64))
        spikes = np.sort(self.unit_spikes.values())
        counts = np.zeros(edges.size - 1, dtype=np.int64)
        # spikes around each onset via searchsorted: cheap for thousands of onsets
        lo = np.searchsorted(spikes, onsets - s.pre_s, side="left")
        hi = np.searchsorted(spikes, onsets + s.post_s, side="left")
        n_each = hi - lo
        raster_times: np.ndarray
        raster_rows: np.ndarray
        if n_each.sum():
            which = np.repeat(np.arange(onsets.size), n_each)
            first = np.cumsum(n_each) - n_each
            index = np.repeat(lo, n_each) + np.arange(n_each.sum()) - np.repeat(first, n_each)
            relative = spikes[index] - onsets[which]
            counts = np.histogram(relative, bins=edges)[0]
            first_row = max(0, onsets.size - s.raster_rows)
            shown = which >= first_row
            raster_times, raster_rows = relative[shown], which[shown] - first_row
        else:
            raster_times = raster_rows = np.zeros(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = counts / (onsets.size * s.bin_s) if onsets.size else np.zeros(counts.size)
        row_onsets = numbers[max(0, onsets.size - s.raster_rows) :]
        return SpikeView(
            self.unit,
            edges,
            counts,
            rate,
            int(onsets.size),
            raster_times,
            np.asarray(raster_rows, dtype=np.int64),
            row_onsets,
        )

    @property
    def nbytes(self) -> int:
        return self.unit_spikes.nbytes + self.recent.nbytes + self.onsets.nbytes
