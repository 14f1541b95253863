"""One core for several sessions that showed the same images: all their units fitted together.

pvc-8's sessions, like a lab's recordings on consecutive days, show one image set to
different neurons.  A network's core (its convolutional layers) is what every unit of a
session shares; fitted on one session it learns from that session's few dozen units
only.  Fitted on several sessions at once it learns from all their units, while each
unit keeps its own readout, output scaling and output nonlinearity (Klindt et al. 2017;
Lurz et al. 2021 train one core on many recordings the same way).

Sessions are grouped by their image set (the same preprocessed images, in any order);
each group is one training of one network whose output units are the group's units
side by side (Eq. 1 normalises every unit by its own variance, so a unit counts the
same whatever session it came from).  The split is drawn once per group, so every
session holds out the same images.  Then each session gets a network of its own: the
shared core and its own units' readouts — saved, predicted with and synthesized from
like any other fit.  A session no other session shares images with is fitted alone.
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
from closedloop.model.train import FitResult, ProgressCallback, fit_model, prepare_fit


@dataclass(frozen=True)
class ImageGroup:
    """Sessions that showed the same images.

    Attributes
    ----------
    members
        Positions of the sessions in the list given to `group_by_images`, in order.
    datasets
        Those sessions, each with its images in the first member's order.
    """

    members: list[int]
    datasets: list[ResponseDataset]


def group_by_images(datasets: list[ResponseDataset]) -> list[ImageGroup]:
    """Group sessions whose preprocessed images are the same set; align each to its group's first.

    Two sessions belong together when they hold the same images pixel for pixel (after
    preprocessing), each once, whatever the order; the later one's images, trials and
    image ids are reordered to the first one's order.  Groups come in the order of
    their first session.
    """
    keys = [_image_keys(dataset) for dataset in datasets]
    groups: dict[frozenset[bytes] | int, list[int]] = {}
    for index, key in enumerate(keys):
        # A session showing one image twice cannot be aligned image for image: it stays alone.
        group_key: frozenset[bytes] | int = frozenset(key) if len(set(key)) == len(key) else index
        groups.setdefault(group_key, []).append(index)
    result = []
    for members in groups.values():
        first = keys[members[0]]
        aligned = [datasets[members[0]]]
        for index in members[1:]:
            position = {key: i for i, key in enumerate(keys[index])}
            aligned.append(_reordered(datasets[index], np.asarray([position[key] for key in first])))
        result.append(ImageGroup(members, aligned))
    return result


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
        Sessions with identical images in identical order (one `ImageGroup`'s ``datasets``).
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
        split (the same held-out images for all), a network holding the shared core and
        its units' readouts, and the joint training's history and kept epochs;
        ``fit_seconds`` is the joint training's time divided among the sessions.

    Raises
    ------
    ClosedLoopError
        Images that differ between sessions, the linear architecture (it has no core),
        or anything `fit_model` raises for the pooled units.
    """
    if config.architecture == "linear":
        raise ClosedLoopError("the linear model has no core to share; choose a CNN preset or configuration")
    for dataset in datasets[1:]:
        if not np.array_equal(dataset.images, datasets[0].images):
            raise ClosedLoopError(
                f"{dataset.source} did not show the same images as {datasets[0].source}; "
                "a shared core is fitted only to sessions of one image set (group_by_images)"
            )
    started = time.perf_counter()
    joint = fit_model(_pooled(datasets), config, device=device, seed=seed, progress=progress)
    joint_seed = int(joint.config.seed) if joint.config.seed is not None else 0
    seconds = (time.perf_counter() - started) / len(datasets)
    results, offset = [], 0
    for dataset in datasets:
        prep = prepare_fit(dataset, joint.config, seed=joint_seed)
        if not np.array_equal(prep.split.held_out, joint.split.held_out):
            raise ClosedLoopError(f"{dataset.source}: its split differs from the joint fit's")  # same seed, same size
        own = np.searchsorted(joint.unit_ids, offset + prep.kept)
        if not np.array_equal(joint.unit_ids[own], offset + prep.kept):
            raise ClosedLoopError(f"{dataset.source}: the joint fit kept other units than the session alone")
        model = units_of(joint.model, own)
        results.append(prep.result(model, joint.history, joint.best_epoch, joint.epochs_run, seconds, joint.device))
        offset += dataset.n_units
    return results


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


def _pooled(datasets: list[ResponseDataset]) -> ResponseDataset:
    """One dataset whose units are every session's, side by side (ids are their positions)."""
    repeats = max(dataset.trial_rates.shape[1] for dataset in datasets)
    blocks = []
    for dataset in datasets:
        block = np.full((dataset.n_images, repeats, dataset.n_units), np.nan, np.float32)
        block[:, : dataset.trial_rates.shape[1]] = dataset.trial_rates  # fewer repeats: NaN, as missing ones
        blocks.append(block)
    trial_rates = np.concatenate(blocks, axis=2)
    first = datasets[0]
    return ResponseDataset(
        images=first.images,
        trial_rates=trial_rates,
        unit_ids=np.arange(trial_rates.shape[2], dtype=np.int64),
        image_ids=first.image_ids,
        source=" + ".join(str(dataset.source) for dataset in datasets),
        preprocessing=first.preprocessing,
        window_s=first.window_s,
    )


def _image_keys(dataset: ResponseDataset) -> list[bytes]:
    images = np.ascontiguousarray(dataset.images, dtype=np.float32)
    return [hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in images]


def _reordered(dataset: ResponseDataset, order: np.ndarray) -> ResponseDataset:
    return ResponseDataset(
        images=dataset.images[order],
        trial_rates=dataset.trial_rates[order],
        unit_ids=dataset.unit_ids,
        image_ids=dataset.image_ids[order],
        source=dataset.source,
        preprocessing=dataset.preprocessing,
        window_s=dataset.window_s,
        gratings=dataset.gratings,
    )


__all__ = ["ImageGroup", "fit_shared_core", "group_by_images", "units_of"]
