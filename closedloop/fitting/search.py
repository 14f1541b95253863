"""Random hyper-parameter search on one tuning session (Kindel et al. 2019, §2.4; DESIGN §6).

Each trial samples layers, filters, kernel, pooling, dense width, dropout and learning
rate from a declared `SearchSpace`, fits the tuning session, and is scored on images
that neither the search nor the final evaluation uses for anything else.

Why that criterion: the session's seeded split sets aside 20 % of its images as the
*test* images that ``closedloop fit`` reports (same seed, same split).  The search
never sees them: it fits on the other 80 % only, which `fit_model` splits again into
training, stopping and *validation* images.  A trial's score is the mean Pearson r on
those validation images (Eq. 1 loss there breaks ties and is reported too).  The
stopping loss is not used because early stopping already chose the epoch that
minimises it, so it flatters every trial; the test images are not used because a
configuration picked on them would make the reported r optimistic.
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
from typing import Any, Callable

import numpy as np

from closedloop.data.dataset import ResponseDataset
from closedloop.errors import ClosedLoopError, DataFileError
from closedloop.model.model_config import ModelConfig

TrialCallback = Callable[[int, int, "TrialResult"], None]


@dataclass(frozen=True)
class SearchSpace:
    """Values each trial draws from (uniformly; learning rate log-uniformly).

    Every conv layer of a trial has the same kernel and the filters listed for its
    depth; pooling is (kernel, stride) after each conv layer.
    """

    layers: tuple[int, ...] = (1, 2, 3)
    filters: tuple[int, ...] = (8, 16, 32, 48)
    kernels: tuple[int, ...] = (3, 5, 7, 9)
    pooling: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (3, 2))
    dense_units: tuple[int, ...] = (50, 100, 200, 300, 500)
    dropout_keep: tuple[float, float] = (0.3, 0.9)
    learning_rate: tuple[float, float] = (1e-4, 1e-2)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _listed(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _listed(value: Any) -> Any:
    return [_listed(v) for v in value] if isinstance(value, tuple) else value


@dataclass
class TrialResult:
    """One trial: its configuration, validation score, or why it failed."""

    index: int
    config: ModelConfig
    val_r: float = float("nan")
    val_loss: float = float("nan")
    stop_loss: float = float("nan")
    epochs: int = 0
    seconds: float = 0.0
    error: str | None = None

    def row(self) -> dict[str, Any]:
        c = self.config
        return {
            "trial": self.index, "val_r": self.val_r, "val_loss": self.val_loss, "stop_loss": self.stop_loss,
            "layers": len(c.core_filters), "filters": "-".join(map(str, c.core_filters)),
            "kernel": c.core_kernels[0], "pool": f"{c.pool_kernel}/{c.pool_stride}",
            "dense": c.dense_units, "keep": round(c.dropout_keep, 3), "lr": float(f"{c.learning_rate:.3g}"),
            "epochs": self.epochs, "seconds": round(self.seconds, 2), "error": self.error or "",
        }


@dataclass
class SearchResult:
    """All trials sorted best first (failed ones last), and the seed of the split."""

    trials: list[TrialResult]
    seed: int
    source: str
    space: SearchSpace = field(default_factory=SearchSpace)

    @property
    def best(self) -> TrialResult:
        if not self.trials or self.trials[0].error is not None:
            raise ClosedLoopError(f"{self.source}: every search trial failed; see the results table")
        return self.trials[0]


def sample_config(base: ModelConfig, space: SearchSpace, rng: np.random.Generator, input_size: int,
                  max_tries: int = 100) -> ModelConfig:
    """Draw a configuration from ``space`` (other fields from ``base``) that fits ``input_size`` images."""
    from closedloop.model.networks import build_network

    for _ in range(max_tries):
        layers = int(rng.choice(space.layers))
        filters = tuple(int(rng.choice(space.filters)) for _ in range(layers))
        kernel = int(rng.choice(space.kernels))
        pool_kernel, pool_stride = space.pooling[int(rng.integers(len(space.pooling)))]
        low, high = np.log(space.learning_rate[0]), np.log(space.learning_rate[1])
        config = base.replace(
            architecture="kindel2017", core_filters=filters, core_kernels=(kernel,) * layers,
            pool_kernel=int(pool_kernel), pool_stride=int(pool_stride),
            dense_units=int(rng.choice(space.dense_units)),
            dropout_keep=float(rng.uniform(*space.dropout_keep)),
            learning_rate=float(np.exp(rng.uniform(low, high))), seed=None,
        )
        try:  # deep stacks of large kernels leave nothing of a 33×33 image with 'valid' padding
            build_network(config, 1, 1, input_size)
        except ValueError:
            continue
        return config
    raise ClosedLoopError(f"no configuration in the search space fits {input_size}×{input_size} images "
                          f"in {max_tries} draws; allow fewer layers or smaller kernels")


def fit_images_only(dataset: ResponseDataset, seed: int) -> ResponseDataset:
    """The dataset without the test images that ``fit`` with this seed holds out."""
    from closedloop.model.split import split_images

    keep = split_images(dataset.n_images, seed).fit
    return dataclasses.replace(dataset, images=dataset.images[keep], trial_rates=dataset.trial_rates[keep],
                               image_ids=dataset.image_ids[keep])


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
    """Run ``n_trials`` random configurations on ``dataset`` and rank them by validation r.

    Parameters
    ----------
    dataset
        The tuning session.
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
    from closedloop.model.metrics import pearson_r
    from closedloop.model.predict import predict
    from closedloop.model.train import ExcludedUnitsWarning, fit_model

    if n_trials < 1:
        raise ClosedLoopError(f"the search needs at least one trial, got {n_trials}")
    base = base or ModelConfig()
    space = space or SearchSpace()
    seed = int(seed) if seed is not None else secrets.randbelow(2**31)
    tuning = fit_images_only(dataset, seed)
    rng = np.random.default_rng(seed)
    trials = []
    for index in range(n_trials):
        config = sample_config(base, space, rng, int(dataset.images.shape[-1]))
        trial = TrialResult(index + 1, config)
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExcludedUnitsWarning)
                # One seed for all trials: the same validation images and initialisation stream,
                # so trials differ only by their configuration.
                fitted = fit_model(tuning, config, device=device, seed=seed)
            validation = fitted.split.held_out
            columns = [int(np.flatnonzero(tuning.unit_ids == u)[0]) for u in fitted.unit_ids]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                measured = tuning.mean_rates[validation][:, columns]
            predicted = predict(fitted.model, tuning.images[validation]).astype(np.float64)
            trial.val_r = _nan_mean(pearson_r(predicted, measured))
            variance = np.var(tuning.mean_rates[fitted.split.train][:, columns], axis=0)
            trial.val_loss = float(np.nanmean((predicted - measured) ** 2 / variance))
            trial.stop_loss = float(np.nanmin(fitted.history["stop_loss"]))
            trial.epochs = fitted.epochs_run
        except ClosedLoopError as error:
            trial.error = str(error)
        trial.seconds = time.perf_counter() - started
        trial.config = config.replace(seed=None)  # the YAML should not pin a trial's seed
        trials.append(trial)
        if on_trial is not None:
            on_trial(index + 1, n_trials, trial)
    trials.sort(key=_rank)
    return SearchResult(trials, seed, str(dataset.source), space)


def _nan_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _rank(trial: TrialResult) -> tuple:
    """Failed or undefined trials last; then higher validation r, then lower validation loss."""
    defined = trial.error is None and math.isfinite(trial.val_r)
    loss = trial.val_loss if math.isfinite(trial.val_loss) else math.inf
    return (not defined, -trial.val_r if defined else 0.0, loss, trial.index)


def results_table(result: SearchResult) -> str:
    """Plain-text table of the trials, best first (failed trials last, with their error)."""
    columns = ("trial", "val_r", "val_loss", "layers", "filters", "kernel", "pool", "dense", "keep", "lr",
               "epochs", "seconds")

    def text(name: str, value: Any) -> str:
        if name in ("val_r", "val_loss"):
            return f"{value:.3f}" if math.isfinite(value) else "–"
        return str(value)

    rows = [[text(name, trial.row()[name]) for name in columns] for trial in result.trials]
    widths = [max(len(cell) for cell in column) for column in zip(columns, *rows)]
    lines = ["  ".join(name.rjust(width) for name, width in zip(columns, widths)),
             "  ".join("-" * width for width in widths)]
    for trial, cells in zip(result.trials, rows):
        line = "  ".join(cell.rjust(width) for cell, width in zip(cells, widths))
        lines.append(line + (f"  FAILED: {trial.error}" if trial.error else ""))
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
