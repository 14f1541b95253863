"""Offline batch fitting of the data a replay sent, and how it compares with the online fit.

The offline dataset is what `closedloop.data.loader.load_dataset` gives for the archive
(same preprocessing, window and units as the replay), cut to the trials the replay
sent: the first *k* repeats of each image, *k* being how often the replay sent it
(`group_by_stimulus` keeps repeats in trial order).  For a full replay the cut changes
nothing.  `check_inputs` then compares it with the model server's own data: the
network input must be bit-identical and the trial rates equal.

The offline model is fitted with the server's model configuration on the server's
final split (each image keeps its online part, so the held-out images are the same),
and both models are scored by `closedloop.model.report.evaluate` on those held-out
images with one seed (rmax draws).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from closedloop.data.dataset import Preprocessing, ResponseDataset
from closedloop.data.loader import load_dataset
from closedloop.errors import ClosedLoopError
from closedloop.model.predict import predict
from closedloop.model.report import evaluate
from closedloop.model.split import DataSplit
from closedloop.model.train import ExcludedUnitsWarning, fit_model
from closedloop.replay.plan import Units


@dataclass(frozen=True)
class InputCheck:
    """Whether the server's data equal the offline loader's (see module notes)."""

    n_images_online: int
    n_images_offline: int
    same_image_ids: bool
    images_identical: bool
    max_image_difference: float
    rates_identical: bool
    max_mean_rate_difference_hz: float

    @property
    def ok(self) -> bool:
        return self.same_image_ids and self.images_identical and self.rates_identical

    def text(self) -> str:
        if self.ok:
            return (
                f"inputs: the server's {self.n_images_online} images and trial rates are identical to "
                "load_dataset's (bit for bit)"
            )
        return (
            f"inputs DIFFER: server {self.n_images_online} images, loader {self.n_images_offline}; same ids "
            f"{self.same_image_ids}; largest pixel difference {self.max_image_difference:.3g}; largest "
            f"mean-rate difference {self.max_mean_rate_difference_hz:.3g} Hz"
        )


@dataclass(frozen=True)
class ModelScores:
    """One model on the final held-out images."""

    unit_ids: np.ndarray
    r: np.ndarray
    r_mean: float
    r_median: float
    r_over_rmax_mean: float
    cc_norm_mean: float
    n_reliable: int

    def to_dict(self) -> dict:
        out = asdict(self)
        out["unit_ids"], out["r"] = self.unit_ids.tolist(), [float(v) for v in self.r]
        return out


@dataclass(frozen=True)
class Comparison:
    """The final online model against an offline batch fit of the same data."""

    online: ModelScores
    offline: ModelScores
    unit_r_correlation: float
    n_common_units: int
    n_heldout: int
    offline_fit_seconds: float
    offline_epochs: int
    seed: int

    def to_dict(self) -> dict:
        return {
            "online": self.online.to_dict(),
            "offline": self.offline.to_dict(),
            "unit_r_correlation": self.unit_r_correlation,
            "n_common_units": self.n_common_units,
            "n_heldout": self.n_heldout,
            "offline_fit_seconds": self.offline_fit_seconds,
            "offline_epochs": self.offline_epochs,
            "seed": self.seed,
        }


def offline_dataset(
    path, *, preprocessing: Preprocessing, window_s: tuple[float, float], units: Units, sent_repeats: dict[int, int]
) -> ResponseDataset:
    """`load_dataset` of the archive, cut to the trials the replay sent (see module notes)."""
    dataset = load_dataset(path, preprocessing=preprocessing, window_s=window_s, units=units)
    keep = np.flatnonzero([sent_repeats.get(int(i), 0) > 0 for i in dataset.image_ids])
    counts = np.array([sent_repeats[int(i)] for i in dataset.image_ids[keep]], dtype=np.int64)
    n = int(counts.max()) if counts.size else 0
    trial_rates = dataset.trial_rates[keep][:, :n].copy()
    trial_rates[np.arange(trial_rates.shape[1])[None, :] >= counts[:, None]] = np.nan
    return ResponseDataset(
        images=dataset.images[keep],
        trial_rates=trial_rates,
        unit_ids=dataset.unit_ids,
        image_ids=dataset.image_ids[keep],
        source=dataset.source,
        preprocessing=dataset.preprocessing,
        window_s=dataset.window_s,
        gratings=dataset.gratings,
    )


def check_inputs(online: ResponseDataset, offline: ResponseDataset) -> InputCheck:
    """Compare the server's data with the loader's: ids, network input, trial rates."""
    same_ids = np.array_equal(online.image_ids, offline.image_ids) and np.array_equal(online.unit_ids, offline.unit_ids)
    image_diff, images_equal, rates_equal, rate_diff = math.inf, False, False, math.inf
    if same_ids:
        image_diff = float(np.max(np.abs(online.images - offline.images), initial=0.0))
        images_equal = np.array_equal(online.images, offline.images)
        # repeats may arrive in another order: compare each image's sorted trials (NaN last)
        a, b = np.sort(online.trial_rates, axis=1), np.sort(offline.trial_rates, axis=1)
        width = max(a.shape[1], b.shape[1])
        a, b = (np.pad(x, ((0, 0), (0, width - x.shape[1]), (0, 0)), constant_values=np.nan) for x in (a, b))
        rates_equal = np.array_equal(a, b, equal_nan=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rate_diff = float(np.nanmax(np.abs(online.mean_rates - offline.mean_rates), initial=0.0))
    return InputCheck(
        online.n_images, offline.n_images, bool(same_ids), bool(images_equal), image_diff, bool(rates_equal), rate_diff
    )


def server_split(store, dataset: ResponseDataset) -> DataSplit:
    """The server's parts (by stimulus id) as positions into ``dataset``."""
    parts = np.array([store.part(int(i)) or "" for i in dataset.image_ids])
    unknown = dataset.image_ids[parts == ""]
    if unknown.size:
        raise ClosedLoopError(f"the model server never got image(s) {unknown[:8].tolist()} of the offline data")
    train, stop, held_out = (np.flatnonzero(parts == name) for name in ("train", "stop", "held_out"))
    return DataSplit(train, stop, held_out, seed=store.seed)


def compare_fits(
    online_model, dataset: ResponseDataset, split: DataSplit, config, *, device: str, seed: int
) -> Comparison:
    """Fit ``dataset`` offline on ``split`` and score both models on its held-out images.

    ``online_model`` is the server's final `closedloop.server.refit.ServedModel`.
    """
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExcludedUnitsWarning)  # the same units as online; reported there
        warnings.simplefilter("ignore", RuntimeWarning)
        offline = fit_model(dataset, config, device=device, seed=seed, split=split)
    seconds = time.perf_counter() - started
    online_scores = _scores(online_model.result.model, online_model.unit_ids, dataset, split, seed)
    offline_scores = _scores(offline.model, offline.unit_ids, dataset, split, seed)
    common, online_at, offline_at = np.intersect1d(online_scores.unit_ids, offline_scores.unit_ids, return_indices=True)
    a, b = online_scores.r[online_at], offline_scores.r[offline_at]
    finite = np.isfinite(a) & np.isfinite(b)
    correlation = float(np.corrcoef(a[finite], b[finite])[0, 1]) if finite.sum() >= 3 else float("nan")
    return Comparison(
        online_scores,
        offline_scores,
        correlation,
        int(common.size),
        int(len(split.held_out)),
        seconds,
        int(offline.epochs_run),
        int(seed),
    )


def _scores(model, unit_ids: np.ndarray, dataset: ResponseDataset, split: DataSplit, seed: int) -> ModelScores:
    position = {int(u): k for k, u in enumerate(dataset.unit_ids)}
    columns = np.asarray([position[int(u)] for u in unit_ids], dtype=np.int64)
    held = split.held_out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        report = evaluate(
            predict(model, dataset.images[held]), dataset.trial_rates[held][:, :, columns], unit_ids=unit_ids, seed=seed
        )

    def mean(values: np.ndarray, stat=np.mean) -> float:
        values = values[np.isfinite(values)]
        return float(stat(values)) if values.size else float("nan")

    return ModelScores(
        np.asarray(unit_ids, np.int64),
        np.asarray(report.r, np.float64),
        mean(report.r),
        mean(report.r, np.median),
        float(report.summary["mean_r_over_rmax_reliable"]),
        mean(report.cc_norm),
        int(np.sum(report.reliable)),
    )
