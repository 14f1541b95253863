"""Several sessions fitted as one batched training: one fused network on one device.

Fused ensembles (`closedloop.model.trainer`) already train N members as one network
whose layers hold every member's weights, with per-member image masks when members
train on different images.  Sessions are fitted the same way: every member of every
session is a member of one network, and each member convolves its own session's
images (the first layer is a grouped convolution over a (batch, members, side, side)
input, sessions zero-padded to the longest one and masked out of the loss and the
batch-norm statistics).  Sessions with fewer units than the widest are padded with
units whose loss weight is zero and whose weights start and stay at zero, and the loss
and the L1 penalty average over each member's own units, so each session trains as it
would alone: same split, units, seeds, initial weights, epochs kept (each member stops
on its own patience), to rounding.  Dropout draws differ (one draw for the batch), as
in a fused ensemble.

One fused training costs about one session's kernel launches for all sessions and
about the sum of their arithmetic (plus the padding to the longest session), which is
what a GPU that one small network leaves idle absorbs; on a CPU it saves nothing.

Not fused (fitted one by one instead): the linear baseline (closed form),
z-scored inputs (every member of a fused network sees the same input scaling) and
blends of two ensembles (`ModelConfig.partner`).
Sessions of different image sizes form separate groups.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from closedloop.data.dataset import ResponseDataset
from closedloop.model.device import describe_device, resolve_device
from closedloop.model.fused_split import member_block_result
from closedloop.model.model_config import ModelConfig
from closedloop.model.cores import MemberConv2d, typed_modules
from closedloop.model.networks import CoreReadoutNetwork, build_network
from closedloop.model.readouts import FactorisedReadout
from closedloop.model.train import FitResult, PreparedFit, ProgressCallback, _member_subsets, fit_model, prepare_fit
from closedloop.model.trainer import Trainer, member_data


def can_fuse(config: ModelConfig) -> bool:
    """Whether sessions fitted with ``config`` can share one fused training (not a blend of two ensembles)."""
    return config.architecture != "linear" and config.input_normalisation != "zscore" and config.partner is None


def fit_sessions(
    datasets: list[ResponseDataset],
    config: ModelConfig,
    *,
    seeds: list[int | None] | None = None,
    device: str | torch.device | None = "auto",
    progress: ProgressCallback | None = None,
) -> list[FitResult]:
    """Fit ``config`` to every dataset in one fused training per image size.

    Parameters
    ----------
    datasets
        The sessions.
    config
        Model and training settings, the same for every session.
    seeds
        Per session (``None`` entries draw one), as ``fit_model``'s ``seed``.
    device
        Where the fused network trains.
    progress
        Called at every stopping check with the best stopping score of any member.

    Returns
    -------
    list of FitResult
        In the order of ``datasets``, each as `fit_model` would return it for that
        session alone (``fit_seconds`` is the fused training's time, shared).

    Raises
    ------
    ClosedLoopError
        As `fit_model`, for the first session that cannot be fitted.
    """
    seeds = list(seeds) if seeds is not None else [None] * len(datasets)
    if not can_fuse(config) or len(datasets) < 2:
        return [
            fit_model(dataset, config, device=device, seed=seed, progress=progress)
            for dataset, seed in zip(datasets, seeds)
        ]
    torch_device = resolve_device(device)
    prepared = [prepare_fit(dataset, config, seed=seed) for dataset, seed in zip(datasets, seeds)]
    results: dict[int, FitResult] = {}
    for side in sorted({p.images.shape[1] for p in prepared}):
        group = [i for i, p in enumerate(prepared) if p.images.shape[1] == side]
        for index, result in zip(group, _fit_group([prepared[i] for i in group], config, torch_device, progress)):
            results[index] = result
    return [results[index] for index in range(len(datasets))]


def _member_images(prepared: list[PreparedFit], members_each: int) -> np.ndarray:
    """(longest session, members, side, side): every member's own session's images, zero-padded."""
    longest = max(len(p.images) for p in prepared)
    side = prepared[0].images.shape[1]
    images = np.zeros((longest, members_each * len(prepared), side, side), np.float32)
    for s, prep in enumerate(prepared):
        images[: len(prep.images), s * members_each : (s + 1) * members_each] = prep.images[:, None]
    return images


def _fit_group(
    prepared: list[PreparedFit], config: ModelConfig, device: torch.device, progress: ProgressCallback | None
) -> list[FitResult]:
    started = time.perf_counter()
    members_each = config.ensemble_size
    images = _member_images(prepared, members_each)
    n_members, side = images.shape[1], images.shape[-1]
    widths = [len(p.kept) for p in prepared]
    n_units = max(widths)
    rates = np.zeros((n_members, len(images), n_units))
    train = np.zeros((n_members, len(images)), np.float32)
    stop, fit = np.zeros_like(train), np.zeros_like(train)
    weight = np.zeros((n_members, n_units))
    for s, prep in enumerate(prepared):
        for k, (train_k, stop_k) in enumerate(_member_subsets(prep.split, prep.config)):
            m = s * members_each + k
            rates[m, : len(prep.rates), : widths[s]], weight[m, : widths[s]] = prep.rates, 1.0
            train[m, train_k], stop[m, stop_k], fit[m, prep.split.fit] = 1.0, 1.0, 1.0
    units = torch.as_tensor(np.repeat(widths, members_each), dtype=torch.float32, device=device)

    def initial_network() -> CoreReadoutNetwork:
        network = build_network(config, n_units, n_members, side)
        if not isinstance(network, CoreReadoutNetwork):  # can_fuse leaves the linear model out
            raise ValueError(f"architecture {config.architecture!r} cannot fit sessions fused")
        first_layer = typed_modules(network.core.layers, MemberConv2d)[0]
        first_layer.shared_input = False  # each member convolves its own images
        state = network.state_dict()
        for s, prep in enumerate(prepared):
            single = build_network(prep.config, widths[s], members_each, side)
            for k, seed in enumerate(prep.seeds):
                single.init_member(k, torch.Generator().manual_seed(seed))
            _embed(state, single.state_dict(), slice(s * members_each, (s + 1) * members_each))
        return network

    def train_once(data, refit_epochs=None):
        network = initial_network()
        network.set_output_statistics(data.mean_rate, data.std_rate)
        network.to(device)
        # A Gabor bank's standardisation and a contrast gain's typical variance: each member's own
        # training images, as alone.
        network.set_feature_statistics(data.train_images, data.train_mask)
        if isinstance(network.readout, FactorisedReadout):
            network.readout.units_per_member = units
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(prepared[0].config.seed)
            trainer = Trainer(network, data, config, refit_epochs)
            return trainer.run(progress if refit_epochs is None else None)

    model, history, best_epoch, _ = train_once(member_data(images, rates, train, stop, weight, device))
    if config.refit:
        model, refit_history, _, _ = train_once(
            member_data(images, rates, fit, None, weight, device), refit_epochs=best_epoch + 1
        )
        history = history | refit_history
    if isinstance(model.readout, FactorisedReadout):
        model.readout.units_per_member = None
    seconds = time.perf_counter() - started
    described = describe_device(device)
    blocks = [slice(s * members_each, (s + 1) * members_each) for s in range(len(prepared))]
    return [
        member_block_result(prep, model, members, history, best_epoch, seconds, device, described)
        for prep, members in zip(prepared, blocks)
    ]


def _embed(target: dict[str, torch.Tensor], source: dict[str, torch.Tensor], members: slice) -> None:
    """Copy one session's state into members ``members`` of the fused state, zero in the padding."""
    with torch.no_grad():
        for key, value in source.items():
            block = target[key][members]
            if block.shape != value.shape:
                block.zero_()
                block = block[tuple(slice(0, n) for n in value.shape)]
            block.copy_(value)
