"""Digital twin: a fitted model plus an archive's noise statistics, as a brain (docs/methods.md, Simulation).

For images that were never recorded, the twin's expected rate in the response window
is the fitted ensemble's prediction (images preprocessed as for fitting).  Everything
else comes from the archived recording the model was fitted to, per unit:

- spontaneous rate: the mean PSTH over the first ``SPONTANEOUS_S`` after onset (before
  any V1 latency), or the blank's mean rate when a pvc-8 file has ``resp_train_blk``;
- time course: the mean PSTH over all stimuli and repeats (1 ms bins), minus the
  spontaneous rate, scaled to mean 1 over the response window.  So
  ``rate(t) = spont + (predicted − spont) · shape(t)``: the archive's average response
  shape, scaled per image by the model.  The shape is the archive's whatever the
  stimulus duration; after its end the unit is spontaneous.  A unit whose PSTH does not
  rise above spontaneous in the window (< ``MIN_EVOKED_HZ``) gets the standard course;
- trial-to-trial variability: the gamma-gain variance ``φ`` of the window counts
  (Var = μ + φ μ², pooled over images: ``φ = Σ(var − mean) / Σ mean²``, at least 0),
  so the twin's Fano factors match the archive's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from closedloop.acquisition.spike_sources import RESPONSE_WINDOW_S, RateSource, standard_shape
from closedloop.data.formats import detect_format
from closedloop.data.loader import load_dataset
from closedloop.data.pvc8 import read_pvc8
from closedloop.data.session import SessionReader
from closedloop.errors import DataFileError
from closedloop.model.saved import checkpoint_preprocessing, predict_pixels

SPONTANEOUS_S = 0.03
PSTH_S = 0.3  # session files: PSTH length after each onset
MIN_EVOKED_HZ = 0.5
_UTAH_CHANNELS = 96


@dataclass
class ArchiveStatistics:
    """Per-unit noise statistics of an archive (arrays in ``unit_ids`` order)."""

    unit_ids: np.ndarray
    channels: np.ndarray
    spontaneous_hz: np.ndarray
    overdispersion: np.ndarray
    shape: np.ndarray  # (n_units, n_steps), mean 1 over window_s
    window_s: tuple[float, float]


def archive_statistics(path: str | Path, window_s: tuple[float, float] = RESPONSE_WINDOW_S) -> ArchiveStatistics:
    """Spontaneous rate, time course and overdispersion of every unit of an archive."""
    path = Path(path)
    pvc8 = detect_format(path) == "pvc8"
    if pvc8:
        psth, spont, unit_ids, channels = _pvc8_psth(path)
    else:
        psth, spont, unit_ids, channels = _session_psth(path)
    # Every pvc-8 unit; session files always give all units (and take the default).
    units: Literal["indcent", "all"] = "all" if pvc8 else "indcent"
    dataset = load_dataset(path, window_s=window_s, units=units)
    counts = dataset.trial_rates.astype(np.float64) * (window_s[1] - window_s[0])  # (images, repeats, units)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(counts, axis=1)
        var = np.nanvar(counts, axis=1, ddof=1)
    usable = np.isfinite(var)
    excess = np.where(usable, var - mean, 0.0).sum(axis=0)
    power = np.where(usable, mean**2, 0.0).sum(axis=0)
    overdispersion = np.where(power > 0, np.maximum(excess, 0.0) / np.maximum(power, 1e-12), 0.0)
    return ArchiveStatistics(unit_ids, channels, spont, overdispersion, _shape(psth, spont, window_s), window_s)


def _shape(psth: np.ndarray, spont: np.ndarray, window_s: tuple[float, float]) -> np.ndarray:
    start, stop = (int(round(t * 1000)) for t in window_s)
    evoked = psth[:, start:stop].mean(axis=1) - spont
    fallback = standard_shape(0.1, window_s)
    n_steps = max(psth.shape[1], len(fallback))
    shape = np.zeros((len(psth), n_steps))
    for u in range(len(psth)):
        if evoked[u] >= MIN_EVOKED_HZ:
            shape[u, : psth.shape[1]] = (psth[u] - spont[u]) / evoked[u]
        else:
            shape[u, : len(fallback)] = fallback
    return shape


def _pvc8_psth(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        recording = read_pvc8(path, load_blank=True)
    except DataFileError:
        recording = read_pvc8(path)
    trains = [recording.resp_train] + ([recording.resp_train_blk] if recording.resp_train_blk is not None else [])
    psth = np.concatenate([t.mean(axis=(1, 2), dtype=np.float64) for t in trains], axis=1) / 0.001
    if recording.resp_train_blk is not None:
        spont = recording.resp_train_blk.mean(axis=(1, 2, 3), dtype=np.float64) / 0.001
    else:
        spont = psth[:, : int(SPONTANEOUS_S * 1000)].mean(axis=1)
    unit_ids = recording.unit_ids
    return psth, spont, unit_ids, ((unit_ids - 1) % _UTAH_CHANNELS).astype(np.int32)


def _session_psth(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with SessionReader(path) as reader:
        spikes, onsets = reader.spikes, np.sort(reader.trials["onset_s"])
        unit_ids, channels = reader.unit_ids, reader.channels.astype(np.int32)
    n_bins = int(round(PSTH_S * 1000))
    trial = np.searchsorted(onsets, spikes["time_s"], side="right") - 1
    ok = trial >= 0
    relative = spikes["time_s"][ok] - onsets[trial[ok]]
    bins = np.floor(relative * 1000).astype(np.int64)
    unit_index = np.searchsorted(unit_ids, spikes["unit_id"][ok])
    inside = (bins < n_bins) & (unit_index < len(unit_ids))
    histogram = np.zeros((len(unit_ids), n_bins))
    np.add.at(histogram, (unit_index[inside], bins[inside]), 1.0)
    # Each 1 ms bin after an onset exists only when the next onset is later.
    gaps = np.append(np.diff(onsets), np.inf)
    covered = (gaps[:, None] > np.arange(n_bins)[None, :] * 0.001).sum(axis=0)
    psth = histogram / np.maximum(covered, 1)[None, :] / 0.001
    spont = psth[:, : int(SPONTANEOUS_S * 1000)].mean(axis=1)
    return psth, spont, unit_ids, channels


class DigitalTwin:
    """A fitted model acting as a brain: ``twin(images)`` → (n, n_units) expected rates.

    Parameters
    ----------
    checkpoint
        A loaded `closedloop.model.checkpoint.Checkpoint`.
    statistics
        `archive_statistics` of the recording it was fitted to.
    """

    def __init__(self, checkpoint, statistics: ArchiveStatistics):
        self.checkpoint = checkpoint
        self.unit_ids = np.asarray(checkpoint.unit_ids, dtype=np.int64)
        where = {int(u): i for i, u in enumerate(statistics.unit_ids)}
        missing = [int(u) for u in self.unit_ids if int(u) not in where]
        if missing:
            raise DataFileError(
                checkpoint.path,
                f"model units {missing[:10]} are not in the archive; give the archive the model was fitted to",
            )
        rows = np.array([where[int(u)] for u in self.unit_ids], dtype=np.int64)
        self.channels = statistics.channels[rows]
        self.spontaneous_hz = statistics.spontaneous_hz[rows]
        self.overdispersion = statistics.overdispersion[rows]
        self.shape = statistics.shape[rows]
        self.window_s = statistics.window_s
        self.preprocessing = checkpoint_preprocessing(checkpoint)

    @classmethod
    def from_files(cls, checkpoint: str | Path, archive: str | Path, device: str = "cpu") -> DigitalTwin:
        """Load a checkpoint and the statistics of the archive it was fitted to."""
        # torch: only a twin built from a checkpoint needs it; archive_statistics does not
        from closedloop.model.checkpoint import load_checkpoint

        loaded = load_checkpoint(checkpoint, device=device)
        return cls(loaded, archive_statistics(archive, RESPONSE_WINDOW_S))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.maximum(predict_pixels(self.checkpoint, images), 0.0)

    def source(self) -> RateSource:
        """The twin as the simulated array's spike source."""
        return RateSource(
            self,
            self.unit_ids,
            self.channels,
            self.spontaneous_hz,
            self.overdispersion,
            self.shape,
            window_s=self.window_s,
        )
