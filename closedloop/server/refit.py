"""One refit, run in the server's background thread: fit, evaluate on held-out images, save.

Torch releases the GIL while it computes, so the component's own thread keeps answering
requests from the previous model meanwhile.  A refit starts from the newest model's
weights (warm start) when it was fitted to the same units; the split is the store's,
so held-out images stay held out across refits.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import warnings
from dataclasses import dataclass
from collections.abc import Callable

import numpy as np
import torch

from closedloop.data.dataset import ResponseDataset
from closedloop.errors import ClosedLoopError
from closedloop.model.checkpoint import save_checkpoint
from closedloop.model.metrics import heldout_error_over_spread, heldout_interval_sds, heldout_top_ratio
from closedloop.model.predict import predict_with_spread
from closedloop.model.report import evaluate
from closedloop.model.saved import model_path
from closedloop.model.split import DataSplit
from closedloop.model.train import ExcludedUnitsWarning, FitResult, fit_model, select_fittable_units
from closedloop.server.settings import ServerSettings
from closedloop.synth.contrast import contrast_statistics, natural_bounds
from closedloop.synth.starts import StartImages
from closedloop.synth.plan import natural_rate_range

logger = logging.getLogger(__name__)


class Cancelled(Exception):
    """The server is shutting down; background work stopped at its next check."""


@dataclass(frozen=True, eq=False)
class ServedModel:
    """A finished refit: what Predict and Synthesize answer from.

    Attributes
    ----------
    version
        Model version (1, 2, …).
    result
        The fit (model on the server's device, unit ids, split, rate statistics).
    metrics
        Summary numbers published in `ModelUpdated` (`refit_metrics`).
    heldout_r
        (n_units,) held-out Pearson r per fitted unit.
    scale_hz
        (n_units,) natural-image rate range per unit, weighing synthesis losses.
    contrast_bound
        RMS-contrast cap of synthesized images, from the fit images (`closedloop.synth.contrast`).
    contrast_floor
        RMS-contrast floor of synthesized images, from the fit images.
    starts
        The fit images with their measured rates, where rate targets start
        (`closedloop.synth.starts`); kept only when the server starts them there.
    """

    version: int
    result: FitResult
    metrics: dict[str, float]
    heldout_r: np.ndarray
    scale_hz: np.ndarray
    contrast_bound: float | None = None
    contrast_floor: float | None = None
    starts: StartImages | None = None

    @property
    def unit_ids(self) -> np.ndarray:
        return self.result.unit_ids


@dataclass(frozen=True, eq=False)
class RefitJob:
    """A refit to run: the data as they were when it started, and what asked for it."""

    version: int
    block: int
    requested_by: int | None  # seq of the FitRequest, for Error.in_reply_to
    dataset: ResponseDataset
    split: DataSplit
    previous: ServedModel | None
    activity: Callable[[str], None] | None = None  # told the epoch as the fit advances
    core: torch.nn.Module | None = None  # a fixed core to fit readouts on (ServerSettings.core_from)


def refit_seed(seed: int, version: int) -> int:
    """Each version's fit seed (dropout, initialisation of a cold start), from the server seed."""
    return int(np.random.SeedSequence([int(seed), int(version)]).generate_state(1)[0] >> 1)


def run_refit(
    job: RefitJob, settings: ServerSettings, device: torch.device, cancel: threading.Event
) -> tuple[ServedModel, Callable[[], str | None] | None]:
    """Fit and evaluate one model version; also returns how to save it (``settings.out_dir``), or ``None``.

    Saving is left to the caller so the new version can be announced first: writing
    the checkpoint takes tens of milliseconds the loop need not wait for.  ``job.activity``
    is told the epoch as the fit advances (for the supervisor's messages).

    Raises
    ------
    ClosedLoopError
        The fit failed (no fittable unit, a configuration that does not fit the images…).
    Cancelled
        ``cancel`` was set.
    """
    started = time.perf_counter()
    dataset, split = job.dataset, job.split

    def progress(epoch: int, max_epochs: int, best_loss: float) -> None:
        if job.activity is not None:
            job.activity(f"fitting model v{job.version}, epoch {epoch}/{max_epochs}")
        if cancel.is_set():
            raise Cancelled(f"refit to version {job.version} cancelled at epoch {epoch}")

    seed = refit_seed(settings.seed, job.version)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExcludedUnitsWarning)  # reported in the metrics instead
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean over a unit's missing repeats
        initial = _warm_start_model(job)
        result = fit_model(
            dataset,
            settings.model,
            device=device,
            seed=seed,
            progress=progress,
            split=split,
            initial_model=initial,
            core_from=job.core,
            fixed_core=settings.fixed_core,
        )
    position = {int(unit): column for column, unit in enumerate(dataset.unit_ids)}
    columns = np.asarray([position[int(unit)] for unit in result.unit_ids], dtype=np.int64)
    held = split.held_out
    prediction, spread = predict_with_spread(result.model, dataset.images[held])
    trials = dataset.trial_rates[held][:, :, columns]
    report = evaluate(prediction, trials, unit_ids=result.unit_ids, seed=seed)
    metrics = refit_metrics(report, result, dataset, job, time.perf_counter() - started)
    # how far the held-out trial means miss in units of the members' spread (1: an honest error bar)
    metrics["heldout_error_over_spread"] = heldout_error_over_spread(prediction, spread, trials)
    metrics["heldout_interval_sds"] = heldout_interval_sds(prediction, spread, trials)
    metrics["heldout_top_ratio"] = heldout_top_ratio(prediction, trials)
    cap, floor = natural_bounds(contrast_statistics(dataset.images[split.fit]))
    served = ServedModel(
        job.version,
        result,
        metrics,
        np.asarray(report.r, dtype=np.float64),
        natural_rate_range(result.rate_statistics.percentiles),
        contrast_bound=cap,
        contrast_floor=floor,
        starts=StartImages.from_dataset(dataset, split.fit, result.unit_ids)
        if settings.synthesis_start == "natural"
        else None,
    )
    if settings.out_dir is None:
        return served, None
    return served, functools.partial(_save, settings.out_dir, served, report, seed, job.block)


def refit_metrics(report, result: FitResult, dataset: ResponseDataset, job: RefitJob, seconds: float) -> dict:
    """The numbers `ModelUpdated` carries (NaN where undefined).

    ``r_mean``/``r_median`` over fitted units; ``r_over_rmax_mean`` over reliable
    units; sizes of the data and split; timings; ``warm_start`` 1 or 0; ``block``.
    """

    def mean(values: np.ndarray, stat=np.mean) -> float:
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        return float(stat(values)) if values.size else float("nan")

    summary = report.summary
    return {
        "r_mean": mean(report.r),
        "r_median": mean(report.r, np.median),
        "r_over_rmax_mean": float(summary["mean_r_over_rmax_reliable"]),
        "rmax_mean": mean(report.rmax),
        "cc_norm_mean": mean(report.cc_norm),
        "frac_within_10pct_rmax": float(summary["frac_within_10pct_rmax"]),
        "n_reliable": float(np.sum(report.reliable)),
        "n_images": float(dataset.n_images),
        "n_trials": float(np.sum(~np.isnan(dataset.trial_rates[:, :, 0]))),
        "n_units": float(len(result.unit_ids)),
        "n_units_excluded": float(len(result.excluded_units)),
        "n_train": float(len(result.split.train)),
        "n_stop": float(len(result.split.stop)),
        "n_heldout": float(len(result.split.held_out)),
        "epochs_run": float(result.epochs_run),
        "warm_start": float(result.warm_started),
        "fit_seconds": float(result.fit_seconds),
        "refit_seconds": float(seconds),
        "block": float(job.block),
    }


def _warm_start_model(job: RefitJob) -> torch.nn.Module | None:
    """The previous model, if this refit will fit exactly its units (fit_model checks the rest)."""
    previous = job.previous
    if previous is None:
        return None
    kept, _ = select_fittable_units(job.dataset.mean_rates.astype(np.float64), job.split.train, job.dataset.unit_ids)
    if not np.array_equal(job.dataset.unit_ids[kept], previous.unit_ids):
        logger.info("refit to version %d starts cold: the fittable units changed", job.version)
        return None
    return previous.result.model


def _save(out_dir: str, served: ServedModel, report, seed: int, block: int) -> str | None:
    """``out_dir/model_vNNN.pt``; a failure is logged (the model is still served)."""
    path = model_path(out_dir, served.version)
    record = {
        "metrics": report.to_dict(),
        "summary": served.metrics,
        # for closedloop synth, as a fit records them
        "heldout_error_over_spread": served.metrics["heldout_error_over_spread"],
        "heldout_interval_sds": served.metrics["heldout_interval_sds"],
        "heldout_top_ratio": served.metrics["heldout_top_ratio"],
        "seed": int(seed),
        "block": int(block),
        "source": "model server",
    }
    try:
        save_checkpoint(path, served.result, metrics=record, model_version=served.version)
    except (OSError, ClosedLoopError, TypeError) as error:
        logger.error("model version %d not saved to %s: %s", served.version, path, error)
        return None
    return str(path)
