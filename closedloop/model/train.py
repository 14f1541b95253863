"""Fitting a model to a `ResponseDataset` (docs/methods.md, Model, Kindel et al. 2019 Eq. 1).

Loss (Eq. 1): per unit ``L_n = Σ_i (y_ni − A_ni)² / var_i(A_n)``, summed over units,
where ``A`` are measured mean rates and the variance is over the training images.
`eq1_loss` computes it exactly; the optimiser minimises the same quantity divided by
(images × units) — Adam is indifferent to that scale, and it makes the weight-decay and
L1 strengths mean the same for any dataset size.  Histories report this *normalised*
loss: 1.0 is what predicting each unit's mean rate scores (less with ``loss_weights``
"rate", whose weights are at most 1).

Speed (the epoch loop, CUDA graphs, fused ensembles): `closedloop.model.trainer`.

Using the stopping images too (`ModelConfig.stop_sets`, `ModelConfig.refit`): with
rotating stop sets member k stops on its own block of the fit images and trains on the
rest; with a refit each member is retrained from its initial weights on all fit images
for the epochs early stopping chose.  Either way the held-out images are never touched.

Online refits (the model server) pass their own ``split`` (an image keeps its part as
data accumulate) and the previous fit's model as ``initial_model``: every member then
starts from that model's weights for the same member (a warm start) instead of a fresh
initialisation, when the architecture, member count and output units agree.

Determinism: a fit seeds its own RNG streams (``torch.random.fork_rng``, so the
caller's global RNG is untouched); on the CPU the same seed gives bit-identical
weights.  On CUDA, cuDNN's convolution and max-pool backward kernels accumulate
with atomics, so repeated GPU fits agree only to float tolerance.
"""

from __future__ import annotations

import secrets
import time
import warnings
from dataclasses import dataclass, field, replace
from collections.abc import Callable

import numpy as np
import torch

from closedloop.data.dataset import ResponseDataset
from closedloop.errors import ClosedLoopError
from closedloop.model.blend import BlendedNetwork
from closedloop.model.device import describe_device, resolve_device
from closedloop.model.ensemble import member_structure, stack_members, unstack_members
from closedloop.model.given_core import StartingCore, check_core_source, install_core, starting_core
from closedloop.model.linear import LinearPixelModel, fit_ridge
from closedloop.model.member_settings import MemberSettings
from closedloop.model.metrics import trial_noise_per_hz
from closedloop.model.model_config import ModelConfig
from closedloop.model.networks import CoreReadoutNetwork, Network, build_network, build_spec, member_seeds
from closedloop.model.split import DataSplit, split_images
from closedloop.model.trainer import DeviceData, Trainer

ProgressCallback = Callable[[int, int, float], None]
"""Called as ``progress(epoch, max_epochs, best_stop_score)`` at every stopping check."""

PERCENTILES = np.arange(101)
#: Epochs over which a warm-started fit ramps its step size up to the learning rate.
WARM_START_RAMP_EPOCHS = 10
#: Most epochs a warm-started fit goes on without improving on its stopping images.  It
#: begins at the previous model's optimum: in the closed loop on the six simulated brains
#: (protocols/demo.yaml, 4 members) warm refits kept epoch 0–17 and got worse from there
#: on, so the protocol's patience (30 there) only cost time: 50 epochs per refit instead of 30.
WARM_START_PATIENCE = 10


class ExcludedUnitsWarning(UserWarning):
    """Some units cannot be fitted (no variance, never fired, or missing responses)."""


@dataclass(frozen=True)
class ExcludedUnit:
    unit_id: int
    reason: str


@dataclass
class RateStatistics:
    """Per-unit distribution of mean rates over the fit (train + stop) images.

    ``percentiles[k]`` is the k-th percentile (k = 0..100) of each unit's mean rate,
    shape (101, n_units); synthesis turns percentile targets into Hz with it.
    ``noise_per_hz`` is each unit's trial variance per Hz of mean rate
    (`closedloop.model.metrics.noise_per_hz`), from which synthesis gives a mean over a number of
    presentations its standard error; ``None`` for a model saved before it was recorded.
    """

    mean: np.ndarray
    std: np.ndarray
    percentiles: np.ndarray
    noise_per_hz: np.ndarray | None = None


@dataclass
class FitResult:
    """A fitted model and everything needed to reproduce, evaluate and save it.

    Attributes
    ----------
    model
        The fitted network (all members), in eval mode, on the training device.
    config
        The configuration, with the concrete ``seed`` that was used.
    unit_ids
        (n_fitted,) ids of the model's output units, in output order.
    excluded_units
        Units of the dataset that were not fitted, with the reason.
    split
        Which images trained, stopped and were held out.  With rotating stop sets this
        is member 0's; member k's are `_member_subsets`' (same held-out images).
    history
        For CNNs: ``train_loss``, (epochs_run, n_members) normalised Eq. 1 loss per
        epoch, and ``stop_loss``, the stopping score per epoch (each member's on its own
        stopping set; Eq. 1 loss, or minus the mean r with ``stop_metric`` correlation);
        with a refit also ``refit_loss`` (training loss on all fit images; NaN after a
        member's chosen epochs).  For the linear model: ``ridge_alpha``, ``train_loss``,
        ``stop_loss`` per candidate penalty.
    best_epoch
        (n_members,) 0-based epoch whose weights were kept (linear: index of the alpha).
    epochs_run
        Epochs trained before stopping (linear: 0).
    warm_started
        Whether the members started from ``initial_model``'s weights (`fit_model`).
    fit_seconds
        Wall time of the fit.
    device
        `describe_device` of the training device.
    """

    model: Network
    config: ModelConfig
    unit_ids: np.ndarray
    excluded_units: list[ExcludedUnit]
    split: DataSplit
    history: dict[str, np.ndarray]
    best_epoch: np.ndarray
    epochs_run: int
    fit_seconds: float
    device: str
    image_ids: np.ndarray
    preprocessing: dict
    rate_statistics: RateStatistics
    input_size: int
    member_seeds: list[int] = field(default_factory=list)
    warm_started: bool = False


def eq1_loss(prediction: torch.Tensor, rates: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """Kindel et al. Eq. 1: Σ_n Σ_i (y_ni − A_ni)² / var_i(A_n).

    ``prediction`` and ``rates`` are (..., n_images, n_units), ``variance`` (n_units,);
    the sum runs over the last two axes.
    """
    return ((prediction - rates) ** 2 / variance).sum(dim=(-2, -1))


def select_fittable_units(
    mean_rates: np.ndarray, train_index: np.ndarray, unit_ids: np.ndarray, partial_units: bool = False
) -> tuple[np.ndarray, list[ExcludedUnit]]:
    """Positions of units that can be fitted, and the others with the reason.

    A unit is excluded when any image lacks a response (NaN mean rate), when it never
    fired, or when its mean rate does not vary over the training images (Eq. 1 would
    divide by zero).  With ``partial_units`` (sessions pooled under one core) a unit is
    judged on the images it has responses to.  A warning lists the excluded units.
    """
    kept, excluded = [], []
    for position, unit_id in enumerate(unit_ids):
        rates = mean_rates[:, position]
        finite = np.isfinite(rates)
        train = train_index[finite[train_index]] if partial_units else train_index
        if not partial_units and not np.all(finite):
            reason = f"missing responses (NaN) for {int(np.sum(~finite))} image(s)"
        elif len(train) < 2:
            reason = f"responses to only {len(train)} training image(s)"
        elif np.all(rates[finite] == 0):
            reason = "never fired"
        elif np.var(rates[train]) <= 1e-12 * max(1.0, float(np.mean(rates[train] ** 2))):
            reason = "zero variance over the training images"
        else:
            kept.append(position)
            continue
        excluded.append(ExcludedUnit(int(unit_id), reason))
    if excluded:
        listing = "; ".join(f"unit {u.unit_id}: {u.reason}" for u in excluded)
        warnings.warn(
            f"{len(excluded)} of {len(unit_ids)} units excluded from fitting: {listing}",
            ExcludedUnitsWarning,
            stacklevel=3,
        )
    return np.asarray(kept, dtype=np.int64), excluded


def fit_model(
    dataset: ResponseDataset,
    config: ModelConfig,
    *,
    device: str | torch.device | None = "auto",
    seed: int | None = None,
    progress: ProgressCallback | None = None,
    split: DataSplit | None = None,
    initial_model: torch.nn.Module | None = None,
    core_from: torch.nn.Module | None = None,
    fixed_core: bool = False,
    partial_units: bool = False,
) -> FitResult:
    """Fit ``config`` (one network or an ensemble) to ``dataset``.

    Parameters
    ----------
    dataset
        Images and responses.
    config
        Architecture and training settings.
    device
        ``"auto" | "cpu" | "cuda" | "cuda:N"`` or a `torch.device` (`resolve_device`).
    seed
        Overrides ``config.seed``; if both are ``None`` a seed is drawn and recorded in
        ``result.config.seed``.  Same seed, same device, same result.
    progress
        Called at every stopping check (see `ProgressCallback`).
    split
        Which images train, stop and are held out (positions into ``dataset``);
        ``None`` draws one from the seed (`split_images`).
    initial_model
        A previous fit's model to start from (warm start): member k starts from its
        member k.  Used only when it has the same architecture, member count, input
        size and number of fitted units (the caller checks that the unit *ids* agree);
        otherwise the fit starts cold.  ``result.warm_started`` says which.  A warm
        start ramps the step size up over `WARM_START_RAMP_EPOCHS` epochs and stops after at
        most `WARM_START_PATIENCE` epochs without improvement.  Ignored by the
        linear model (closed form).
    core_from
        A fitted network (e.g. one session's share of a shared core,
        `closedloop.model.shared_core`) whose core every member starts from
        (`closedloop.model.given_core`).  Its core must match ``config``'s.
    fixed_core
        With ``core_from``: keep the core as it is, so only the readouts and output
        nonlinearities train; ``False`` trains it on from there with the rest.
    partial_units
        Units may lack responses (NaN) to some images: each is fitted on the images it
        has (sessions of different images pooled under one core,
        `closedloop.model.shared_core`).  Otherwise such a unit is excluded.

    Raises
    ------
    ClosedLoopError
        Too few images, bad images, a split that does not fit the dataset, no
        fittable unit, an architecture that does not fit the image size, or a
        ``core_from`` whose core differs from ``config``'s.
    """
    started = time.perf_counter()
    torch_device = resolve_device(device)
    prepared = prepare_fit(dataset, config, seed=seed, split=split, partial_units=partial_units)
    config, images, split, rates = prepared.config, prepared.images, prepared.split, prepared.rates
    model: Network
    if config.partner is not None and core_from is not None:
        raise ClosedLoopError(
            "a blended model (two ensembles, `partner`) cannot start from a given core; "
            "choose a single-network preset such as gabor-wide to use --core-from"
        )
    core_source = None if core_from is None else check_core_source(core_from, config, images.shape[1])

    def starting(members: list[int]) -> StartingCore | None:
        return None if core_source is None else starting_core(core_source, members, fixed_core)

    if config.partner is not None:
        model, history, best_epoch, epochs_run, warm_started = _fit_blend(
            prepared, torch_device, progress, initial_model
        )
    elif config.architecture == "linear":
        variance = np.var(rates[split.train], axis=0)
        ridge = fit_ridge(
            images[split.train],
            rates[split.train],
            images[split.stop],
            rates[split.stop],
            1.0 / variance,
            config.ridge_alphas,
        )
        model = ridge.model
        model.build_spec = build_spec(config, len(prepared.kept), 1, images.shape[1])
        history = {"ridge_alpha": ridge.alphas, "train_loss": ridge.train_loss, "stop_loss": ridge.stop_loss}
        best_epoch, epochs_run, warm_started = np.array([ridge.best_index]), 0, False
        model = model.to(torch_device)
    else:
        warm = (
            None
            if initial_model is None
            else _warm_start_states(initial_model, config, len(prepared.kept), images.shape[1])
        )
        model, history, best_epoch, epochs_run = _fit_cnn(prepared, config, torch_device, progress, warm, starting)
        warm_started = warm is not None
    return prepared.result(
        model,
        history,
        best_epoch,
        epochs_run,
        time.perf_counter() - started,
        describe_device(torch_device),
        warm_started=warm_started,
    )


def _fit_cnn(
    prepared: PreparedFit,
    config: ModelConfig,
    device: torch.device,
    progress: ProgressCallback | None,
    warm: tuple | None,
    starting: Callable[[list[int]], StartingCore | None],
):
    """Train ``config``'s ensemble on ``prepared``'s split: fused or member by member.

    Returns the model, history, best epochs and epochs run (`_train_members`).
    """
    images, rates, seeds = prepared.images, prepared.rates, prepared.seeds
    fused = config.ensemble_mode == "fused" or (config.ensemble_mode == "auto" and device.type == "cuda")
    subsets = _member_subsets(prepared.split, config)
    if fused or config.ensemble_size == 1:
        # Rotating stop sets fused: one batch of all fit images, per-member masks.
        rotating = config.stop_sets == "rotating" and config.ensemble_size > 1
        return _fit_members(
            images,
            rates,
            subsets if rotating else subsets[:1],
            config,
            seeds,
            prepared.seed,
            device,
            progress,
            None if warm is None else warm[0],
            core=starting(list(range(len(seeds)))),
        )
    members, histories, bests, runs = [], [], [], []
    for index, (member_seed, subset) in enumerate(zip(seeds, subsets)):
        # Each member's dropout stream follows its own seed.
        fitted = _fit_members(
            images,
            rates,
            [subset],
            config,
            [member_seed],
            member_seed,
            device,
            progress,
            None if warm is None else warm[1][index],
            core=starting([index]),
        )
        members.append(fitted[0])
        histories.append(fitted[1])
        bests.append(fitted[2])
        runs.append(fitted[3])
    epochs_run = max(runs)
    history = {key: _stack_ragged([h[key] for h in histories], epochs_run) for key in histories[0]}
    return stack_members(members), history, np.concatenate(bests), epochs_run


def _fit_blend(
    prepared: PreparedFit,
    device: torch.device,
    progress: ProgressCallback | None,
    initial_model: torch.nn.Module | None,
):
    """Both ensembles of a ``partner`` configuration on one split, blended per unit (`closedloop.model.blend`).

    Returns the model, history and best epochs (the first ensemble's members, then the
    second's), epochs run, and whether both ensembles started warm from ``initial_model``'s.
    """
    config = prepared.config
    n_units, input_size = len(prepared.kept), prepared.images.shape[1]
    part_configs = (config.replace(partner=None), config.partner_config())
    # Each ensemble starts from its counterpart when that has its structure (`_warm_start_states`).
    warm_parts = (
        (initial_model.first, initial_model.second) if isinstance(initial_model, BlendedNetwork) else (None, None)
    )
    parts, histories, bests, runs, warm_started = [], [], [], [], True
    for part_config, initial in zip(part_configs, warm_parts):
        assert part_config is not None  # config.partner is set
        warm = None if initial is None else _warm_start_states(initial, part_config, n_units, input_size)
        warm_started &= warm is not None
        fitted = _fit_cnn(prepared, part_config, device, progress, warm, lambda members: None)
        parts.append(fitted[0])
        histories.append(fitted[1])
        bests.append(fitted[2])
        runs.append(fitted[3])
    model = BlendedNetwork(parts[0], parts[1])
    model.build_spec = build_spec(config, n_units, config.ensemble_size, input_size)
    stop_sets = [stop for _, stop in _member_subsets(prepared.split, config)]
    model.choose_weights(prepared.images, prepared.rates, stop_sets)
    epochs_run = max(runs)
    history = {key: _stack_ragged([h[key] for h in histories], epochs_run) for key in histories[0]}
    return model, history, np.concatenate(bests), epochs_run, warm_started


@dataclass
class PreparedFit:
    """What a fit needs before training: the checked images, split, fittable units and seeds.

    `fit_model` and the fused fit of several sessions (`closedloop.model.multi_session`)
    both start from it and finish with `result`, so a session fitted either way is
    selected, split and recorded the same way.
    """

    dataset: ResponseDataset
    config: ModelConfig
    images: np.ndarray
    split: DataSplit
    kept: np.ndarray
    excluded: list[ExcludedUnit]
    rates: np.ndarray
    seeds: list[int]

    @property
    def seed(self) -> int:
        """The fit's seed, ``config.seed`` (which `prepare_fit` always sets)."""
        if self.config.seed is None:
            raise ValueError("a prepared fit's configuration must have a seed (prepare_fit sets one)")
        return self.config.seed

    def result(
        self,
        model: Network,
        history: dict,
        best_epoch,
        epochs_run: int,
        seconds: float,
        device: str,
        warm_started: bool = False,
    ) -> FitResult:
        """The `FitResult` of a model trained from this preparation."""
        model.eval()
        return FitResult(
            model=model,
            config=self.config,
            unit_ids=np.asarray(self.dataset.unit_ids)[self.kept].astype(np.int64),
            excluded_units=self.excluded,
            split=self.split,
            history=history,
            best_epoch=np.asarray(best_epoch, dtype=np.int64),
            epochs_run=int(epochs_run),
            fit_seconds=seconds,
            device=device,
            image_ids=np.asarray(self.dataset.image_ids, dtype=np.int64),
            preprocessing=self.dataset.preprocessing.to_dict(),
            rate_statistics=_rate_statistics(
                self.rates[self.split.fit], self.dataset.trial_rates[self.split.fit][:, :, self.kept]
            ),
            input_size=int(self.images.shape[1]),
            member_seeds=self.seeds,
            warm_started=warm_started,
        )


def prepare_fit(
    dataset: ResponseDataset,
    config: ModelConfig,
    *,
    seed: int | None = None,
    split: DataSplit | None = None,
    partial_units: bool = False,
) -> PreparedFit:
    """Check the images, draw the split, select the fittable units and the member seeds.

    ``seed`` overrides ``config.seed``; with neither, one is drawn and recorded in the
    returned configuration; ``partial_units`` as `fit_model`'s.  Raises `ClosedLoopError`
    as `fit_model` documents.
    """
    if seed is None:
        seed = config.seed if config.seed is not None else secrets.randbelow(2**31)
    seed = int(seed)
    config = config.replace(seed=seed)
    images = _checked_images(dataset)
    split = split_images(dataset.n_images, seed) if split is None else _checked_split(split, dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN column
        mean_rates = dataset.mean_rates.astype(np.float64)
    kept, excluded = select_fittable_units(mean_rates, split.train, dataset.unit_ids, partial_units)
    if kept.size == 0:
        raise ClosedLoopError(f"{dataset.source}: no unit can be fitted ({len(excluded)} excluded, see warning)")
    return PreparedFit(
        dataset,
        config,
        images,
        split,
        kept,
        excluded,
        mean_rates[:, kept],
        member_seeds(seed, config.ensemble_size),
    )


def _checked_split(split: DataSplit, dataset: ResponseDataset) -> DataSplit:
    """A caller's split must cover every image exactly once, with no empty part."""
    parts = np.concatenate([split.train, split.stop, split.held_out])
    if not np.array_equal(np.sort(parts), np.arange(dataset.n_images)):
        raise ClosedLoopError(
            f"{dataset.source}: the split does not list each of the {dataset.n_images} images exactly once "
            f"(train {len(split.train)}, stop {len(split.stop)}, held out {len(split.held_out)})"
        )
    if min(len(split.train), len(split.stop), len(split.held_out)) < 1:
        raise ClosedLoopError(
            f"{dataset.source}: {dataset.n_images} images give an empty part (train {len(split.train)}, "
            f"stop {len(split.stop)}, held out {len(split.held_out)}); record more images"
        )
    return split


def _warm_start_states(initial_model: object, config: ModelConfig, n_units: int, input_size: int):
    """(whole-ensemble state, per-member states) of ``initial_model``, or None when it does not fit.

    The previous model must have been built for the same architecture, output units,
    input size and member count, or its weights mean nothing to the new network.
    """
    spec = getattr(initial_model, "build_spec", None)
    if spec is None or not isinstance(initial_model, CoreReadoutNetwork | LinearPixelModel):
        return None
    wanted = {"config": config.to_dict(), "n_units": n_units, "input_size": input_size}
    if member_structure(spec) != member_structure(wanted) or spec["n_members"] != config.ensemble_size:
        return None
    whole = {key: value.detach().clone() for key, value in initial_model.state_dict().items()}
    return whole, [member.state_dict() for member in unstack_members(initial_model)]


def _member_subsets(split: DataSplit, config: ModelConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, stop) image positions of every member; all the split's unless stop sets rotate.

    Rotating: the fit images in a fixed order (the split's stopping images first, then
    its training images shuffled by the split seed) are cut into consecutive blocks of
    the stopping-set size, wrapping around; member k stops on block k.
    """
    if config.stop_sets == "shared":
        return [(split.train, split.stop)] * config.ensemble_size
    shuffled = np.random.default_rng(split.seed).permutation(split.train)
    order = np.concatenate([split.stop, shuffled])
    n_stop = len(split.stop)
    subsets = []
    for member in range(config.ensemble_size):
        positions = (member * n_stop + np.arange(n_stop)) % len(order)
        stop = np.sort(order[positions])
        subsets.append((np.setdiff1d(order, stop), stop))
    return subsets


def _fit_members(
    images,
    rates,
    subsets,
    config: ModelConfig,
    seeds: list[int],
    rng_seed: int,
    device: torch.device,
    progress,
    initial_state: dict | None = None,
    members: MemberSettings | None = None,
    core: StartingCore | None = None,
):
    """Early-stopped training of ``len(seeds)`` fused members, then the refit if configured.

    ``subsets`` is one (train, stop) pair shared by every member, or one per member.
    ``members``: training settings that differ per member (fused search trials).
    ``core``: a core every member starts from (`given_core.starting_core`).
    """
    model, history, best_epoch, epochs_run = _train_members(
        DeviceData(images, rates, subsets, device),
        config,
        seeds,
        rng_seed,
        progress,
        initial_state=initial_state,
        members=members,
        core=core,
    )
    if not config.refit:
        return model, history, best_epoch, epochs_run
    # Same initial weights and dropout stream, every fit image, each member for its chosen epochs.
    fit_images = np.sort(np.concatenate(subsets[0]))
    model, refit_history, _, _ = _train_members(
        DeviceData(images, rates, [(fit_images, None)], device),
        config,
        seeds,
        rng_seed,
        None,
        refit_epochs=best_epoch + 1,
        initial_state=initial_state,
        members=members,
        core=core,
    )
    return model, history | refit_history, best_epoch, epochs_run


def _train_members(
    data: DeviceData,
    config: ModelConfig,
    seeds: list[int],
    rng_seed: int,
    progress,
    refit_epochs: np.ndarray | None = None,
    initial_state: dict | None = None,
    members: MemberSettings | None = None,
    core: StartingCore | None = None,
):
    """Train one fused network of ``len(seeds)`` members; returns model, history, best epochs, epochs.

    With ``refit_epochs`` (per member) there is no stopping set: member m keeps its
    weights after ``refit_epochs[m]`` epochs.  With ``initial_state`` (a warm start)
    every parameter and buffer starts from it, output, input and feature statistics included,
    so training begins from exactly the previous model's predictions.
    """
    try:
        model = build_network(config, data.train_rates.shape[1], len(seeds), data.input_size)
    except ValueError as error:
        raise ClosedLoopError(
            f"model configuration does not fit {data.input_size}×{data.input_size} images: {error}"
        ) from None
    if not isinstance(model, CoreReadoutNetwork):  # the linear model is fitted in closed form (fit_ridge)
        raise ValueError(f"architecture {config.architecture!r} is not trained by gradient descent")
    for member, member_seed in enumerate(seeds):
        model.init_member(member, torch.Generator().manual_seed(member_seed))
    model.set_output_statistics(data.mean_rate, data.std_rate)
    if config.input_normalisation == "zscore":
        model.set_input_statistics(float(data.train_images.mean()), float(data.train_images.std()))
    model.to(data.device)
    model.set_feature_statistics(data.train_images, data.train_mask)
    if core is not None:
        install_core(model, core)
    if initial_state is not None:
        model.load_state_dict(initial_state)
    if members is not None:
        members.apply_to(model, data.device)
    fork_devices = [data.device] if data.device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(rng_seed)
        ramp = WARM_START_RAMP_EPOCHS if initial_state else 0
        if initial_state is not None:
            config = replace(config, patience=min(config.patience, WARM_START_PATIENCE))
        trainer = Trainer(model, data, config, refit_epochs, ramp_epochs=ramp, members=members)
        return trainer.run(progress)


def _checked_images(dataset: ResponseDataset) -> np.ndarray:
    images = np.asarray(dataset.images)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ClosedLoopError(f"{dataset.source}: images must be (n, side, side), got {images.shape}")
    if not np.all(np.isfinite(images)):
        raise ClosedLoopError(f"{dataset.source}: images contain NaN or infinite pixels")
    return images.astype(np.float32, copy=False)


def _rate_statistics(rates: np.ndarray, trials: np.ndarray) -> RateStatistics:
    """``rates`` (n_images, n_units) trial means of ``trials`` (n_images, n_repeats, n_units)."""
    noise = trial_noise_per_hz(trials)
    if np.all(np.isfinite(rates)):
        return RateStatistics(rates.mean(axis=0), rates.std(axis=0), np.percentile(rates, PERCENTILES, axis=0), noise)
    # pooled sessions (`fit_model`'s ``partial_units``): each unit over the images it has
    return RateStatistics(
        np.nanmean(rates, axis=0), np.nanstd(rates, axis=0), np.nanpercentile(rates, PERCENTILES, axis=0), noise
    )


def _stack_ragged(arrays: list[np.ndarray], length: int) -> np.ndarray:
    """(epochs_k, members_k) histories of different lengths → (length, Σ members_k), NaN-padded."""
    out = np.full((length, sum(array.shape[1] for array in arrays)), np.nan)
    column = 0
    for array in arrays:
        out[: len(array), column : column + array.shape[1]] = array
        column += array.shape[1]
    return out


def fit_ensemble(dataset, config: ModelConfig, *, n_members: int, mode: str = "fused", **fit_options):
    """Fit ``n_members`` networks (fused or independent) and return their `FitResult`.

    A convenience over `fit_model` with the ensemble fields of ``config`` replaced;
    ``fit_options`` are passed on (``device``, ``seed``, ``progress``).
    """
    return fit_model(dataset, config.replace(ensemble_size=n_members, ensemble_mode=mode), **fit_options)
