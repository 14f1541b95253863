"""Search trials of one network shape trained together (``fit --search N --fuse-trials``).

Trials whose configurations differ only in settings that can act per member of one
fused network (`closedloop.model.member_settings.PER_MEMBER_FIELDS`: learning rate,
weight decay, L1, dropout, epochs, patience) form a group, and a group is one task:
one fused training on one device (`closedloop.model.multi_trial.fit_trials`), after
which each trial is scored and written as if it had run alone.  Grouping needs the
configurations first, so every remaining trial is drawn when the search starts (a TPE
sampler then learns only from trials of earlier runs).  Trials in a group run to their
own ends together, so they are not pruned (the fit command refuses ``--pruner`` with
``--fuse-trials``).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from closedloop.data.dataset import ResponseDataset
from closedloop.errors import ClosedLoopError
from closedloop.fitting.search import TrialResult, run_trial, score_trial
from closedloop.model.model_config import ModelConfig

Drawn = tuple[int, dict[str, Any], ModelConfig]
"""A drawn trial: (1-based index, the sampler's values, configuration)."""


def fusion_groups(drawn: list[Drawn]) -> list[list[Drawn]]:
    """Trials grouped by network shape, in the order of each group's first trial.

    A trial that cannot fuse (the linear model, z-scored inputs) is a group of its own.
    """
    from closedloop.model.member_settings import fusion_key  # torch only when trials are drawn

    groups: dict[Any, list[Drawn]] = {}
    for position, trial in enumerate(drawn):
        key = fusion_key(trial[2])
        groups.setdefault(("alone", position) if key is None else key, []).append(trial)
    return list(groups.values())


def run_trial_group(
    dataset: ResponseDataset, group: list[Drawn], seed: int, device: str
) -> list[tuple[TrialResult, Any]]:
    """Fit a group of trials as one fused training and score each (runs in a worker).

    Parameters
    ----------
    dataset
        The tuning session without its test images (`fit_images_only`).
    group
        Trials of one `fusion_groups` group.
    seed
        The search seed (as `run_trial`'s).
    device
        Device string (``"auto"`` is resolved where the group runs).

    Returns
    -------
    list of (TrialResult, FitResult | None)
        In the order of ``group``; each trial's ``seconds`` is its share of the group's
        time.  A group that fails fails every trial in it, with the same error.
    """
    if len(group) == 1:
        index, params, config = group[0]
        return [run_trial(dataset, index, config, seed, device, params)]
    # torch only when a group runs, not to plan or resume a search
    from closedloop.model.multi_trial import fit_trials
    from closedloop.model.train import ExcludedUnitsWarning

    started = time.perf_counter()
    trials = [TrialResult(index, config.replace(seed=None), params=dict(params)) for index, params, config in group]
    fits: list[Any] = [None] * len(group)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExcludedUnitsWarning)
            fits = list(fit_trials(dataset, [config for _, _, config in group], seed=seed, device=device))
    except ClosedLoopError as error:
        for trial in trials:
            trial.status, trial.error = "failed", str(error)
    for trial, fitted in zip(trials, fits):
        if fitted is not None:
            score_trial(trial, fitted, dataset)
            trial.curve = stop_curve(fitted.history["stop_loss"], fitted.best_epoch, fitted.config)
    share = (time.perf_counter() - started) / len(group)
    for trial in trials:
        trial.seconds = share
    return list(zip(trials, fits))


def stop_curve(stop_loss: np.ndarray, best_epoch: np.ndarray, config: ModelConfig) -> dict[int, float]:
    """The stopping-score curve a trial trained alone reports (`run_trial`'s ``curve``), from its history.

    At every stopping check, the best stopping score of any member so far, where a member's
    best stops moving once its patience has run out (`Trainer.epoch`).  ``stop_loss`` is
    (epochs run, members), ``best_epoch`` (members,).
    """
    curve = {}
    for epoch in range(1, len(stop_loss) + 1):
        if epoch % config.stop_check_every == 0 or epoch == config.max_epochs:
            windows = [stop_loss[: min(epoch, int(best) + config.patience + 1), m] for m, best in enumerate(best_epoch)]
            curve[epoch] = float(min(np.nanmin(window) for window in windows))
    return curve
