"""Two ensembles blended per unit (`ModelConfig.partner`).

Networks that read a unit out on different grids fit different brains best: a 7 × 7
grid over the aperture's centre (``gabor``) fits receptive fields inside the aperture,
an 11 × 11 grid to the image's edges (``gabor-wide``) those at its rim, and no one
setting of a single network wins on every simulated brain.  A blended model fits both
ensembles on the same split and predicts each unit as ``w · first + (1 − w) · second``.

The weight ``w`` is chosen per unit on fit images only: with rotating stop sets each
member stops on a block of fit images it never trains on, so each such image has an
*out-of-fold* prediction from each ensemble (the mean of the members that stopped on
it).  ``w`` is the value on a grid from 0 to 1 whose blend of those predictions
correlates best with the unit's rates; held-out images play no part.  Member k of the
blend is the pair of both ensembles' members k blended with the same weights, so the
members' mean is the blend and their spread stays a spread of whole predictions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from closedloop.model.metrics import pearson_r


class EnsembleNetwork(Protocol):
    """What a blend needs of each of its networks (a `closedloop.model.networks.CoreReadoutNetwork`)."""

    training: bool

    @property
    def n_members(self) -> int: ...

    @property
    def n_units(self) -> int: ...

    def forward_members(self, images: torch.Tensor) -> torch.Tensor: ...

    def init_member(self, member: int, generator: torch.Generator) -> None: ...

    def regularizer(self) -> torch.Tensor | None: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...


#: Candidate weights of the first ensemble (0: the second alone; 1: the first alone).
WEIGHT_GRID = np.linspace(0.0, 1.0, 11)
#: The weight of a unit the out-of-fold images cannot judge (constant rates or predictions).
UNJUDGED_WEIGHT = 0.5


class BlendedNetwork(nn.Module):
    """Two networks of equal member and unit counts, blended per unit.

    ``forward_members(images)`` is ``w · first.forward_members + (1 − w) · second.forward_members``
    with ``w`` (n_units,) the buffer ``first_weight``; ``forward`` is the members' mean.
    ``build_spec`` is set by `closedloop.model.networks.build_network`.
    """

    first_weight: torch.Tensor  # buffer (n_units,)
    first: EnsembleNetwork
    second: EnsembleNetwork
    build_spec: dict

    def __init__(self, first: EnsembleNetwork, second: EnsembleNetwork):
        super().__init__()
        if (first.n_members, first.n_units) != (second.n_members, second.n_units):
            raise ValueError(
                f"blended networks need equal member and unit counts, got {first.n_members} × {first.n_units} "
                f"and {second.n_members} × {second.n_units}"
            )
        self.first = first
        self.second = second
        self.register_buffer("first_weight", torch.full((int(first.n_units),), UNJUDGED_WEIGHT))

    @property
    def n_members(self) -> int:
        return int(self.first.n_members)

    @property
    def n_units(self) -> int:
        return int(self.first.n_units)

    def forward_members(self, images: torch.Tensor) -> torch.Tensor:
        w = self.first_weight
        return w * self.first.forward_members(images) + (1.0 - w) * self.second.forward_members(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_members(images).mean(dim=0)

    def init_member(self, member: int, generator: torch.Generator) -> None:
        self.first.init_member(member, generator)
        self.second.init_member(member, generator)

    def regularizer(self) -> torch.Tensor | None:
        penalties = [p for p in (self.first.regularizer(), self.second.regularizer()) if p is not None]
        return sum(penalties[1:], penalties[0]) if penalties else None

    @torch.no_grad()
    def choose_weights(self, images: np.ndarray, rates: np.ndarray, stop_sets: list[np.ndarray]) -> np.ndarray:
        """Set and return each unit's weight of the first network from out-of-fold predictions.

        Parameters
        ----------
        images
            (n_images, side, side) the fit's images (the network's input).
        rates
            (n_images, n_units) their measured mean rates (NaN where a unit has none).
        stop_sets
            Member k's stopping images (positions into ``images``), the images it never
            trained on; the held-out images must be in none of them.
        """
        first, second = (_member_rates(network, images) for network in (self.first, self.second))
        positions, first_oof = out_of_fold_predictions(first, stop_sets, len(images))
        _, second_oof = out_of_fold_predictions(second, stop_sets, len(images))
        weights = blend_weights(first_oof, second_oof, rates[positions])
        self.set_weights(weights)
        return weights

    @torch.no_grad()
    def set_weights(self, first_weight: np.ndarray) -> None:
        """Set each unit's weight of the first network (in [0, 1])."""
        weight = torch.as_tensor(np.asarray(first_weight), dtype=self.first_weight.dtype)
        if weight.shape != self.first_weight.shape or not bool(((weight >= 0) & (weight <= 1)).all()):
            raise ValueError(f"weights must be {tuple(self.first_weight.shape)} values in [0, 1]")
        self.first_weight.copy_(weight.to(self.first_weight.device))


def _member_rates(network: EnsembleNetwork, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(n_members, n_images, n_units) every member's prediction, in eval mode, in batches."""
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            parts = [
                network.forward_members(torch.as_tensor(images[start : start + batch_size], device=device))
                .cpu()
                .numpy()
                for start in range(0, len(images), batch_size)
            ]
    finally:
        network.train(was_training)
    return np.concatenate(parts, axis=1).astype(np.float64)


def out_of_fold_predictions(
    member_rates: np.ndarray, stop_sets: list[np.ndarray], n_images: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each image's mean prediction by the members that stopped on it (did not train on it).

    Parameters
    ----------
    member_rates
        (n_members, n_images, n_units) every member's prediction of every image.
    stop_sets
        Member k's stopping images (positions), one array per member.
    n_images
        Images in ``member_rates``.

    Returns
    -------
    positions, predictions
        The images some member stopped on (sorted), and their (len(positions), n_units)
        out-of-fold predictions.
    """
    total = np.zeros(member_rates.shape[1:], dtype=np.float64)
    count = np.zeros(n_images, dtype=np.int64)
    for member, stop in enumerate(stop_sets):
        total[stop] += member_rates[member, stop]
        count[stop] += 1
    positions = np.flatnonzero(count)
    return positions, total[positions] / count[positions, None]


def blend_weights(first: np.ndarray, second: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Per unit, the `WEIGHT_GRID` value whose blend of ``first`` and ``second`` correlates best with ``rates``.

    All three are (n_images, n_units) out-of-fold predictions and measured mean rates of
    the same images.  Ties go to the lower weight (the second network); units whose
    rates do not vary (or no blend does) get `UNJUDGED_WEIGHT`.
    """
    scores = np.stack([pearson_r(w * first + (1.0 - w) * second, rates) for w in WEIGHT_GRID])
    judged = np.any(np.isfinite(scores), axis=0)
    best = WEIGHT_GRID[np.argmax(np.where(np.isfinite(scores), scores, -np.inf), axis=0)]
    return np.where(judged, best, UNJUDGED_WEIGHT)
