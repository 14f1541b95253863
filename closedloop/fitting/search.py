"""Hyper-parameter search on one tuning session (Kindel et al. 2019, §2.4): one trial.

Each trial takes a configuration drawn from a `SearchSpace` (`closedloop.fitting.search_space`),
fits the tuning session, and is scored on images that neither the search nor the final
evaluation uses for anything else.  `run_trial` is what a worker process or a Ray task
runs; `closedloop.fitting.search_run` schedules trials, writes each one as it finishes and
resumes a killed search.

Why that criterion: the session's seeded split sets aside 20 % of its images as the
*test* images that ``closedloop fit`` reports (same seed, same split).  The search
never sees them: it fits on the other 80 % only, which `fit_model` splits again into
training, stopping and *validation* images.  A trial's score is the mean Pearson r on
those validation images (Eq. 1 loss there breaks ties and is reported too).  The
stopping score is not used because early stopping already chose the epoch that
optimises it, so it flatters every trial; the test images are not used because a
configuration picked on them would make the reported r optimistic.

Pruning (optional, `PruningPlan`): at every stopping check a trial reports its best
stopping score so far (`ModelConfig.stop_metric`: Eq. 1 loss or minus mean r) to an
Optuna pruner (median or successive halving / ASHA) that knows the curves of the
trials finished before it was started; a trial the pruner calls hopeless stops there
and is recorded as pruned.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import secrets
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

from closedloop.data.dataset import ResponseDataset
from closedloop.errors import ClosedLoopError, DataFileError
from closedloop.fitting.options import PRUNERS
from closedloop.fitting.search_space import RandomSampler, SearchSpace, import_optuna, sample_config  # noqa: F401  (sample_config re-exported)
from closedloop.model.metrics import pearson_r
from closedloop.model.model_config import ModelConfig
from closedloop.model.split import split_images

TrialCallback = Callable[[int, int, "TrialResult"], None]


@dataclass
class TrialResult:
    """One trial: its configuration, validation score, or why it failed or was pruned.

    ``status`` is ``"ok"``, ``"failed"`` (``error`` says why) or ``"pruned"``;
    ``curve`` maps each stopping-check epoch to the best stopping score so far (lower is better).
    """

    index: int
    config: ModelConfig
    val_r: float = float("nan")
    val_loss: float = float("nan")
    stop_loss: float = float("nan")
    epochs: int = 0
    seconds: float = 0.0
    error: str | None = None
    status: str = "ok"
    params: dict[str, Any] = field(default_factory=dict)
    curve: dict[int, float] = field(default_factory=dict)

    @property
    def scored(self) -> bool:
        """Finished with a finite validation r (a candidate for the best)."""
        return self.status == "ok" and math.isfinite(self.val_r)

    def row(self) -> dict[str, Any]:
        c = self.config
        return {
            "trial": self.index,
            "val_r": self.val_r,
            "val_loss": self.val_loss,
            "stop_loss": self.stop_loss,
            "layers": len(c.core_filters),
            "filters": "-".join(map(str, c.core_filters)),
            "kernel": c.core_kernels[0],
            "pool": f"{c.pool_kernel}/{c.pool_stride}",
            "dense": c.dense_units,
            "keep": round(c.dropout_keep, 3),
            "lr": float(f"{c.learning_rate:.3g}"),
            "epochs": self.epochs,
            "seconds": round(self.seconds, 2),
            "status": self.status,
            "error": self.error or "",
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the trial's ``trial.json`` (`from_dict` reads it back)."""
        return {
            "index": self.index,
            "config": self.config.to_dict(),
            "val_r": self.val_r,
            "val_loss": self.val_loss,
            "stop_loss": self.stop_loss,
            "epochs": self.epochs,
            "seconds": self.seconds,
            "error": self.error,
            "status": self.status,
            "params": {key: list(v) if isinstance(v, tuple) else v for key, v in self.params.items()},
            "curve": {str(epoch): loss for epoch, loss in self.curve.items()},
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> TrialResult:
        def number(key: str) -> float:
            value = record.get(key)
            return float("nan") if value is None else float(value)

        params = {key: tuple(v) if isinstance(v, list) else v for key, v in dict(record.get("params") or {}).items()}
        return cls(
            index=int(record["index"]),
            config=ModelConfig.from_dict(record["config"]),
            val_r=number("val_r"),
            val_loss=number("val_loss"),
            stop_loss=number("stop_loss"),
            epochs=int(record.get("epochs") or 0),
            seconds=number("seconds"),
            error=record.get("error"),
            status=str(record.get("status", "ok")),
            params=params,
            curve={int(epoch): float(loss) for epoch, loss in dict(record.get("curve") or {}).items()},
        )


@dataclass
class SearchResult:
    """All trials sorted best first (failed and pruned ones last), and the seed of the split."""

    trials: list[TrialResult]
    seed: int
    source: str
    space: SearchSpace = field(default_factory=SearchSpace)

    @property
    def best(self) -> TrialResult:
        if not self.trials or not self.trials[0].scored:
            raise ClosedLoopError(f"{self.source}: no search trial finished with a score; see the results table")
        return self.trials[0]


def fit_images_only(dataset: ResponseDataset, seed: int) -> ResponseDataset:
    """The dataset without the test images that ``fit`` with this seed holds out."""
    keep = split_images(dataset.n_images, seed).fit
    return dataclasses.replace(
        dataset, images=dataset.images[keep], trial_rates=dataset.trial_rates[keep], image_ids=dataset.image_ids[keep]
    )


@dataclass(frozen=True)
class PruningPlan:
    """What a trial's pruner knows when it starts: the kind and the finished trials' curves."""

    kind: str
    curves: tuple[dict[int, float], ...] = ()
    min_trials: int = 3


class TrialPruned(Exception):
    """Raised from the progress callback to stop a trial the pruner gave up on."""


def _pruner_study(plan: PruningPlan):
    """An in-memory Optuna study holding the finished trials' stopping-score curves, with the pruner."""
    optuna = import_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if plan.kind == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=plan.min_trials, n_warmup_steps=0)
    elif plan.kind == "asha":
        pruner = optuna.pruners.SuccessiveHalvingPruner()
    else:
        raise ClosedLoopError(f"--pruner {plan.kind!r}: choose one of {', '.join(PRUNERS)}")
    study = optuna.create_study(direction="minimize", pruner=pruner)
    for curve in plan.curves:
        if curve:  # replayed as it ran, so the pruner records what it keeps (ASHA's rungs) as it would have
            past = study.ask()
            for epoch in sorted(curve):
                past.report(curve[epoch], epoch)
                past.should_prune()
            study.tell(past, min(curve.values()))
    return study, study.ask()


def run_trial(
    dataset: ResponseDataset,
    index: int,
    config: ModelConfig,
    seed: int,
    device: str,
    params: dict[str, Any] | None = None,
    pruning: PruningPlan | None = None,
) -> tuple[TrialResult, Any]:
    """Fit one configuration to the tuning images and score it (runs in a worker).

    Parameters
    ----------
    dataset
        The tuning session without its test images (`fit_images_only`).
    index
        1-based trial number.
    config
        The trial's configuration.
    seed
        The search seed: every trial gets the same validation images and initialisation
        stream, so trials differ only by their configuration.
    device
        Device string (``"auto"`` is resolved where the trial runs).
    params
        The sampler's values for this trial (recorded, for resuming a TPE search).
    pruning
        `PruningPlan`, or ``None`` to run every trial to its end.

    Returns
    -------
    (TrialResult, FitResult | None)
        The score, and the fitted model (on the CPU) unless the trial failed or was pruned.
    """
    # torch only when a trial runs, not to plan or resume a search
    from closedloop.model.train import ExcludedUnitsWarning, fit_model

    trial = TrialResult(index, config.replace(seed=None), params=dict(params or {}))
    started = time.perf_counter()
    pruner = None if pruning is None or pruning.kind == "none" else _pruner_study(pruning)

    def progress(epoch: int, max_epochs: int, best_loss: float) -> None:
        trial.curve[int(epoch)] = float(best_loss)
        trial.epochs = int(epoch)
        if pruner is not None and math.isfinite(best_loss):
            pruner[1].report(float(best_loss), int(epoch))
            if pruner[1].should_prune():
                raise TrialPruned

    fitted = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExcludedUnitsWarning)
            fitted = fit_model(dataset, config, device=device, seed=seed, progress=progress)
        score_trial(trial, fitted, dataset)
    except TrialPruned:
        trial.status, fitted = "pruned", None
        trial.stop_loss = min(trial.curve.values()) if trial.curve else float("nan")
    except ClosedLoopError as error:
        trial.status, trial.error, fitted = "failed", str(error), None
    trial.seconds = time.perf_counter() - started
    return trial, fitted


def score_trial(trial: TrialResult, fitted: Any, dataset: ResponseDataset) -> None:
    """Fill in ``trial``'s validation r and loss, stopping score and epochs from its fit.

    Parameters
    ----------
    trial
        The trial, changed in place.
    fitted
        Its `FitResult`; its model moves to the CPU (to be returned from a worker).
    dataset
        The tuning images the trial was fitted to (`fit_images_only`).
    """
    from closedloop.model.predict import predict  # torch only when a trial runs

    validation = fitted.split.held_out
    columns = [int(np.flatnonzero(dataset.unit_ids == u)[0]) for u in fitted.unit_ids]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        measured = dataset.mean_rates[validation][:, columns]
    predicted = predict(fitted.model, dataset.images[validation]).astype(np.float64)
    trial.val_r = _nan_mean(pearson_r(predicted, measured))
    variance = np.var(dataset.mean_rates[fitted.split.train][:, columns], axis=0)
    trial.val_loss = float(np.nanmean((predicted - measured) ** 2 / variance))
    trial.stop_loss = float(np.nanmin(fitted.history["stop_loss"]))
    trial.epochs = fitted.epochs_run
    fitted.model = fitted.model.cpu()


def random_search(
    dataset: ResponseDataset,
    n_trials: int,
    *,
    base: ModelConfig | None = None,
    space: SearchSpace | None = None,
    seed: int | None = None,
    device: str = "cpu",
    on_trial: TrialCallback | None = None,
) -> SearchResult:
    """Run ``n_trials`` random configurations one after another in this process, ranked by validation r.

    The scheduled, resumable search with files per trial is `closedloop.fitting.search_run.run_search`;
    this is the same search without files, for code that wants the ranking only.

    Parameters
    ----------
    dataset
        The tuning session (its test images are removed here).
    n_trials
        Number of configurations to try.
    base
        Settings not searched over (epochs, patience, ensemble size …).
    space
        What to sample; `SearchSpace` defaults otherwise.
    seed
        Seeds the split (the same as the final fit's when it uses this seed), the
        draws and every trial's split and initialisation; ``None`` draws one.
    device
        Resolved device string.
    on_trial
        Called as ``on_trial(done, n_trials, trial)`` after each trial.
    """
    base = base or ModelConfig()
    space = space or SearchSpace()
    seed = int(seed) if seed is not None else secrets.randbelow(2**31)
    tuning = fit_images_only(dataset, seed)
    sampler = RandomSampler(base, space, seed, int(dataset.images.shape[-1]))
    trials = []
    for index in range(1, n_trials + 1):
        params, config = sampler.next(index)
        trial, _ = run_trial(tuning, index, config, seed, device, params)
        trials.append(trial)
        if on_trial is not None:
            on_trial(index, n_trials, trial)
    return SearchResult(sorted(trials, key=rank), seed, str(dataset.source), space)


def _nan_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def rank(trial: TrialResult) -> tuple:
    """Sort key: failed, pruned or undefined trials last; then higher validation r, then lower validation loss."""
    defined = trial.scored
    loss = trial.val_loss if math.isfinite(trial.val_loss) else math.inf
    return (not defined, -trial.val_r if defined else 0.0, loss, trial.index)


def results_table(result: SearchResult) -> str:
    """Plain-text table of the trials, best first (failed trials last, with their error)."""
    columns = (
        "trial",
        "val_r",
        "val_loss",
        "layers",
        "filters",
        "kernel",
        "pool",
        "dense",
        "keep",
        "lr",
        "epochs",
        "seconds",
    )

    def text(name: str, value: Any) -> str:
        if name in ("val_r", "val_loss"):
            return f"{value:.3f}" if math.isfinite(value) else "–"
        return str(value)

    rows = [[text(name, trial.row()[name]) for name in columns] for trial in result.trials]
    widths = [max(len(cell) for cell in column) for column in zip(columns, *rows)]
    lines = [
        "  ".join(name.rjust(width) for name, width in zip(columns, widths)),
        "  ".join("-" * width for width in widths),
    ]
    for trial, cells in zip(result.trials, rows):
        line = "  ".join(cell.rjust(width) for cell, width in zip(cells, widths))
        note = f"  FAILED: {trial.error}" if trial.error else "  pruned" if trial.status == "pruned" else ""
        lines.append(line + note)
    return "\n".join(lines)


def write_results_csv(path: Path, result: SearchResult) -> Path:
    """All trials as CSV (best first), written atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            rows = [trial.row() for trial in result.trials]
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise DataFileError(path, f"cannot write the search results ({error.strerror or error})") from None
    return path
