"""One core for several sessions: all their units fitted together, each with its own readout.

A network's core (its convolutional layers) is what every unit of a session shares; fitted
on one session it learns from that session's images and few dozen units only.  Fitted on
several sessions at once it learns from all their images and units, while each unit keeps
its own readout, output scaling and output nonlinearity (Klindt et al. 2017; Lurz et al.
2021 train one core on many recordings the same way).

The sessions' images are pooled: an image several sessions showed (pixel for pixel after
preprocessing, as pvc-8's sessions show one image set) is one image whose responses are
every such session's units'; a unit has no response to the images its session did not
show, and the loss leaves those out (`closedloop.model.trainer.DeviceData`).  One split is
drawn over the pooled images, so an image is held out in every session that showed it and
no session's held-out image trains the core.  Then each session gets a network of its own:
the shared core and its own units' readouts — saved, predicted with and synthesized from
like any other fit.  Sessions must have one input size (the core's).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np
import torch

from closedloop.data.dataset import ResponseDataset
from closedloop.errors import ClosedLoopError
from closedloop.model.model_config import ModelConfig
from closedloop.model.networks import Network, build_network
from closedloop.model.split import DataSplit
from closedloop.model.train import FitResult, ProgressCallback, fit_model, prepare_fit


@dataclass(frozen=True)
class PooledSessions:
    """Several sessions as one dataset.

    Attributes
    ----------
    dataset
        Every distinct image once; every session's units side by side (ids: their
        positions), NaN where a unit's session did not show the image.
    positions
        Per session, (n_images,) the pooled position of each of its images.
    unit_offsets
        Per session, the pooled position of its first unit.
    """

    dataset: ResponseDataset
    positions: list[np.ndarray]
    unit_offsets: list[int]


def group_by_input_size(datasets: list[ResponseDataset]) -> list[list[int]]:
    """Positions of the sessions that can share a core (one network input size), in order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, dataset in enumerate(datasets):
        groups.setdefault(tuple(dataset.images.shape[1:]), []).append(index)
    return list(groups.values())


def pool_sessions(datasets: list[ResponseDataset]) -> PooledSessions:
    """Pool ``datasets`` (`PooledSessions`); an image shown by several sessions is pooled once.

    Raises
    ------
    ClosedLoopError
        Sessions whose network inputs differ in size.
    """
    shapes = {tuple(dataset.images.shape[1:]) for dataset in datasets}
    if len(shapes) > 1:
        raise ClosedLoopError(
            f"sessions with network inputs of different sizes {sorted(shapes)} cannot share a core "
            "(group_by_input_size)"
        )
    pooled: dict[tuple[bytes, int], int] = {}
    images: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    for dataset in datasets:
        seen: dict[bytes, int] = {}
        own: list[int] = []
        for image in np.asarray(dataset.images, dtype=np.float32):
            digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()
            # A session showing one image twice: its second showing pairs with another's second.
            key = (digest, seen.get(digest, 0))
            seen[digest] = key[1] + 1
            if key not in pooled:
                pooled[key] = len(images)
                images.append(image)
            own.append(pooled[key])
        positions.append(np.asarray(own, dtype=np.int64))
    repeats = max(dataset.trial_rates.shape[1] for dataset in datasets)
    offsets = np.cumsum([0] + [dataset.n_units for dataset in datasets]).tolist()
    trial_rates = np.full((len(images), repeats, offsets[-1]), np.nan, np.float32)
    for dataset, where, offset in zip(datasets, positions, offsets):
        block = trial_rates[:, :, offset : offset + dataset.n_units]
        block[where, : dataset.trial_rates.shape[1]] = dataset.trial_rates
    first = datasets[0]
    combined = ResponseDataset(
        images=np.stack(images),
        trial_rates=trial_rates,
        unit_ids=np.arange(offsets[-1], dtype=np.int64),
        image_ids=np.arange(len(images), dtype=np.int64),
        source=" + ".join(str(dataset.source) for dataset in datasets),
        preprocessing=first.preprocessing,
        window_s=first.window_s,
    )
    return PooledSessions(combined, positions, offsets[:-1])


def fit_shared_core(
    datasets: list[ResponseDataset],
    config: ModelConfig,
    *,
    seed: int | None = None,
    device: str | torch.device | None = "auto",
    progress: ProgressCallback | None = None,
) -> list[FitResult]:
    """Fit one network to the units of every session, then split it into one network per session.

    Parameters
    ----------
    datasets
        Sessions with one network input size (their images may differ or overlap).
    config
        The architecture and training; its readout gets every session's units.
    seed
        The one seed of the joint fit (split, initial weights); as `fit_model`'s.
    device
        Where the network trains.
    progress
        As `fit_model`'s.

    Returns
    -------
    list of FitResult
        One per session, in order: its own units, excluded units, rate statistics and
        split (its images' parts of the pooled split), a network holding the shared core
        and its units' readouts, and the joint training's history and kept epochs;
        ``fit_seconds`` is the joint training's time divided among the sessions.

    Raises
    ------
    ClosedLoopError
        Input sizes that differ, the linear architecture (it has no core), a session
        whose images leave a part of its split empty, or anything `fit_model` raises
        for the pooled units.
    """
    if config.architecture == "linear":
        raise ClosedLoopError("the linear model has no core to share; choose a CNN preset or configuration")
    if config.partner is not None:
        raise ClosedLoopError(
            "a blend of two ensembles (`partner`) has two cores and cannot share one; "
            "choose a single-network preset such as gabor-wide"
        )
    started = time.perf_counter()
    pooled = pool_sessions(datasets)
    joint = fit_model(pooled.dataset, config, device=device, seed=seed, progress=progress, partial_units=True)
    joint_seed = int(joint.config.seed) if joint.config.seed is not None else 0
    seconds = (time.perf_counter() - started) / len(datasets)
    results = []
    for dataset, positions, offset in zip(datasets, pooled.positions, pooled.unit_offsets):
        prep = prepare_fit(dataset, joint.config, seed=joint_seed, split=_session_split(joint.split, positions))
        own = np.searchsorted(joint.unit_ids, offset + prep.kept)
        if not np.array_equal(joint.unit_ids[np.minimum(own, len(joint.unit_ids) - 1)], offset + prep.kept):
            raise ClosedLoopError(f"{dataset.source}: the joint fit left out units the session alone keeps")
        model = units_of(joint.model, own)
        results.append(prep.result(model, joint.history, joint.best_epoch, joint.epochs_run, seconds, joint.device))
    return results


def _session_split(pooled: DataSplit, positions: np.ndarray) -> DataSplit:
    """One session's part of the pooled split, in the session's own image positions."""

    def part(pooled_part: np.ndarray) -> np.ndarray:
        return np.flatnonzero(np.isin(positions, pooled_part)).astype(np.int64)

    return DataSplit(part(pooled.train), part(pooled.stop), part(pooled.held_out), seed=pooled.seed)


def units_of(model: Network, positions: np.ndarray) -> Network:
    """A network holding ``model``'s core and only the output units at ``positions``.

    Every parameter or buffer with a unit axis (readout weights and biases, output
    scaling, output nonlinearity) is cut along it; the rest (core, input statistics) is
    copied.
    """
    spec = model.build_spec
    config = ModelConfig.from_dict(spec["config"])
    subset = build_network(config, len(positions), spec["n_members"], spec["input_size"])
    index = torch.as_tensor(np.asarray(positions, dtype=np.int64))
    state = {}
    for key, like in subset.state_dict().items():
        value = model.state_dict()[key].detach()
        differing = [axis for axis, (a, b) in enumerate(zip(value.shape, like.shape)) if a != b]
        if len(differing) > 1 or value.dim() != like.dim():
            raise ValueError(f"{key}: cannot cut {tuple(value.shape)} to {tuple(like.shape)} along one unit axis")
        if differing:
            value = value.index_select(differing[0], index.to(value.device))
        state[key] = value.clone()
    subset.load_state_dict(state)
    device = next(iter(state.values())).device
    return subset.to(device).train(model.training)


__all__ = ["PooledSessions", "fit_shared_core", "group_by_input_size", "pool_sessions", "units_of"]
