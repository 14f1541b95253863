"""Several configurations of one network shape fitted to one dataset as one fused training.

Search trials (`closedloop.fitting.search`) fit one dataset with one seed, so they share
the split, the fitted units and the member seeds; trials whose configurations also
share everything that fixes the network's shape (`fusion_key`) train as one fused
network whose members are every trial's members, as a fused ensemble's are
(`closedloop.model.trainer`).  What differs between them acts per member
(`MemberSettings`): the Adam step size, the L2 weight decay, the L1 strength, the
dropout keep probability, the patience and the epoch limit.  Each trial then comes
out as `fit_model` would return it alone: same initial weights, epochs kept and
stopping point, to rounding.  Dropout draws differ (one draw for the batch), as in a
fused ensemble.

One fused training costs about one trial's kernel launches for all trials and the sum
of their arithmetic, which is what a GPU that one small network leaves idle absorbs; on
a CPU it saves only per-epoch overhead.  Rounding differences grow over long trainings,
as between a fused and an independent ensemble (Adam's normalised steps amplify them).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from closedloop.data.dataset import ResponseDataset
from closedloop.model.device import describe_device, resolve_device
from closedloop.model.fused_split import member_block_result
from closedloop.model.member_settings import MemberSettings, fusion_key
from closedloop.model.model_config import ModelConfig
from closedloop.model.train import FitResult, ProgressCallback, _fit_members, _member_subsets, fit_model, prepare_fit


def fit_trials(
    dataset: ResponseDataset,
    configs: list[ModelConfig],
    *,
    seed: int,
    device: str | torch.device | None = "auto",
    progress: ProgressCallback | None = None,
) -> list[FitResult]:
    """Fit every configuration to ``dataset`` with ``seed``, all in one fused training.

    Parameters
    ----------
    dataset
        The data every configuration is fitted to.
    configs
        Configurations with one `fusion_key` (not ``None``); they may differ in the
        `closedloop.model.member_settings.PER_MEMBER_FIELDS`.
    seed
        Seed of every fit (their ``seed`` fields are ignored): one split, one set of units.
    device
        Where the fused network trains.
    progress
        Called at every stopping check with the best stopping score of any member.

    Returns
    -------
    list of FitResult
        In the order of ``configs``, each as ``fit_model(dataset, config, seed=seed)``
        would return it (``fit_seconds`` is the fused training's time, shared).

    Raises
    ------
    ValueError
        The configurations do not share one fusion key, or cannot fuse.
    ClosedLoopError
        As `fit_model`.
    """
    keys = {fusion_key(config) for config in configs}
    if not configs or len(keys) != 1 or None in keys:
        raise ValueError("fit_trials needs configurations of one network shape that can fuse (fusion_key)")
    if len(configs) == 1:
        return [fit_model(dataset, configs[0], device=device, seed=seed, progress=progress)]
    started = time.perf_counter()
    torch_device = resolve_device(device)
    prepared = [prepare_fit(dataset, config, seed=seed) for config in configs]
    first = prepared[0]
    members_each = first.config.ensemble_size
    subsets = _member_subsets(first.split, first.config)
    # As fit_model: members train on different images only with rotating stop sets.
    rotating = first.config.stop_sets == "rotating" and members_each > 1
    group_config = first.config.replace(
        max_epochs=max(c.max_epochs for c in configs), patience=max(c.patience for c in configs)
    )
    model, history, best_epoch, _ = _fit_members(
        first.images,
        first.rates,
        subsets * len(configs) if rotating else subsets[:1],
        group_config,
        [member_seed for prep in prepared for member_seed in prep.seeds],
        first.seed,
        torch_device,
        progress,
        members=MemberSettings.of_configs([prep.config for prep in prepared], members_each),
    )
    seconds = time.perf_counter() - started
    described = describe_device(torch_device)
    return [
        member_block_result(
            prep,
            model,
            slice(k * members_each, (k + 1) * members_each),
            history,
            np.asarray(best_epoch),
            seconds,
            torch_device,
            described,
        )
        for k, prep in enumerate(prepared)
    ]
