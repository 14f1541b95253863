"""Readouts: a core's feature maps → one (standardised) value per unit.

A readout receives the core output (batch, n_members × channels, H, W) and returns
(n_members, batch, n_units).  Its values are in *standardised* units; the network
(`closedloop.model.networks.CoreReadoutNetwork`) turns them into rates in Hz with a
fixed per-unit scale and offset, so readout weights start and stay at O(1) whatever
a unit's firing rate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _uniform_(tensor: torch.Tensor, bound: float, generator: torch.Generator) -> None:
    tensor.copy_(torch.rand(tensor.shape, generator=generator) * 2 * bound - bound)


def _per_member(x: torch.Tensor, n_members: int) -> torch.Tensor:
    """(B, M·C, H, W) → (M, B, C·H·W) without mixing members."""
    batch = x.shape[0]
    return x.reshape(batch, n_members, -1).transpose(0, 1)


class DenseReadout(nn.Module):
    """The readout of Kindel et al. (2019), Table 1.

    flatten → dense ``hidden`` → ReLU → dropout (keep probability ``dropout_keep``,
    i.e. ``p = 1 − keep``) → dense to ``n_units``.  Every member has its own weights;
    all members run as one batched matrix product.
    """

    def __init__(
        self,
        n_members: int,
        in_shape: tuple[int, int, int],
        n_units: int,
        hidden: int = 300,
        dropout_keep: float = 0.55,
    ):
        super().__init__()
        n_features = int(math.prod(in_shape))
        self.n_members = n_members
        self.dropout_p = 1.0 - dropout_keep
        self.hidden_weight = nn.Parameter(torch.zeros(n_members, n_features, hidden))
        self.hidden_bias = nn.Parameter(torch.zeros(n_members, hidden))
        self.output_weight = nn.Parameter(torch.zeros(n_members, hidden, n_units))
        self.output_bias = nn.Parameter(torch.zeros(n_members, n_units))
        # (n_members,) keep probabilities when fused members differ in dropout (fused search trials).
        self.member_keep: torch.Tensor | None = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = _per_member(features, self.n_members)
        hidden = F.relu(torch.baddbmm(self.hidden_bias.unsqueeze(1), x, self.hidden_weight))
        if self.member_keep is not None and self.training:
            # F.dropout takes one probability; a keep of 1 leaves a member's values untouched.
            keep = self.member_keep.view(-1, 1, 1)
            hidden = hidden * (torch.rand_like(hidden) < keep) / keep
        else:
            hidden = F.dropout(hidden, self.dropout_p, self.training)
        return torch.baddbmm(self.output_bias.unsqueeze(1), hidden, self.output_weight)

    def regularizer(self) -> torch.Tensor | None:
        return None

    @torch.no_grad()
    def init_member(self, member: int, generator: torch.Generator) -> None:
        n_features, hidden = self.hidden_weight.shape[1:]
        _uniform_(self.hidden_weight[member], math.sqrt(6.0 / n_features), generator)  # He: feeds a ReLU
        # Small output weights: the first predictions sit near each unit's mean rate (loss ≈ 1).
        _uniform_(self.output_weight[member], 0.1 * math.sqrt(3.0 / hidden), generator)
        self.hidden_bias[member].zero_()
        self.output_bias[member].zero_()


class FactorisedReadout(nn.Module):
    """Klindt et al. (2017): per unit, a spatial mask × a feature-weight vector.

    ``z[u] = Σ_c w[u, c] Σ_s mask[u, s] · x[c, s] + b[u]`` over the core output
    ``x`` (channels c, positions s).  ``l1`` penalises the sum of both L1 norms
    (averaged over units, summed over members so fused and independent members get
    the same gradients), which keeps masks local and feature weights few, as in the
    paper.  It works best on a core that keeps some spatial resolution (pooling only
    after the first layer: a 7×7 map with the Table-1 kernels) with batch norm.
    """

    def __init__(self, n_members: int, in_shape: tuple[int, int, int], n_units: int, l1: float = 0.0):
        super().__init__()
        channels, height, width = in_shape
        self.n_members = n_members
        self.channels = channels
        self.l1 = l1
        self.mask = nn.Parameter(torch.zeros(n_members, n_units, height * width))
        self.feature_weight = nn.Parameter(torch.zeros(n_members, n_units, channels))
        self.bias = nn.Parameter(torch.zeros(n_members, n_units))
        # (n_members,) units each member really fits, when members fit sessions padded to one width.
        self.units_per_member: torch.Tensor | None = None
        # (n_members,) L1 strengths when fused members differ in it (fused search trials).
        self.member_l1: torch.Tensor | None = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = features.shape
        m, c = self.n_members, self.channels
        x = features.reshape(batch, m, c, height * width).permute(1, 0, 2, 3).reshape(m, batch * c, -1)
        pooled = torch.bmm(x, self.mask.transpose(1, 2)).reshape(m, batch, c, -1)  # (M, B, C, U)
        z = (pooled * self.feature_weight.transpose(1, 2).unsqueeze(1)).sum(dim=2)
        return z + self.bias.unsqueeze(1)

    def regularizer(self) -> torch.Tensor | None:
        if self.member_l1 is not None:
            per_member = self.mask.abs().sum(dim=(1, 2)) + self.feature_weight.abs().sum(dim=(1, 2))
            units = self.units_per_member if self.units_per_member is not None else self.mask.shape[1]
            return (self.member_l1 * per_member / units).sum()
        if self.l1 == 0.0:
            return None
        if self.units_per_member is not None:  # padding units are zero: average over each member's own
            per_member = self.mask.abs().sum(dim=(1, 2)) + self.feature_weight.abs().sum(dim=(1, 2))
            return self.l1 * (per_member / self.units_per_member).sum()
        n_units = self.mask.shape[1]
        return self.l1 * (self.mask.abs().sum() + self.feature_weight.abs().sum()) / n_units

    @torch.no_grad()
    def init_member(self, member: int, generator: torch.Generator) -> None:
        n_positions = self.mask.shape[2]
        # Masks: weak positive noise (mean 1/(2·positions)), so every unit starts pooling the whole
        # map a little and no unit is stuck at zero gradient.  Feature weights: zero-mean at
        # 1/sqrt(channels), so z starts small and the first predictions sit near each unit's mean
        # rate (loss ≈ 1).  (Near-uniform masks summing to 1 with He-scale feature weights started
        # z far from 0, and training stopped at epoch ~8 with r ≈ 0.06 on simulated sessions.)
        self.mask[member].copy_(torch.rand(self.mask[member].shape, generator=generator) / n_positions)
        features = torch.randn(self.feature_weight[member].shape, generator=generator)
        self.feature_weight[member].copy_(features / math.sqrt(self.channels))
        self.bias[member].zero_()
