"""Divisive normalisation of a core layer's rectified channels, one set of weights per member.

Each channel is divided by a learned non-negative mix of every channel's local mean
activity (Heeger 1992; learned from data as in Burg et al. 2021):

    y_c = x_c / (σ_c + Σ_k w_ck · pool(x_k)),   pool = mean over POOL × POOL pixels,

with ``w_ck = softplus(mix_ck) ≥ 0`` and ``σ_c = softplus(semisaturation_c) + SIGMA_FLOOR``.
A response then grows less than in proportion to contrast, and an image that puts all its
contrast where one unit looks drives that unit less than a linear-rectified core would
promise — which natural images alone rarely show, and which synthesized "max" images rely on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Side of the local pool each channel is divided by, in pixels of the layer's map.
POOL = 5
#: Raw mix weight at initialisation: softplus(-3) ≈ 0.05.  Started near zero (softplus(-4)
#: ≈ 0.02) the weights never moved; started at 0.13 or 0.69 the fits were worse on every
#: simulated brain tried (benchmarks/README.md, generalise.py; measured with the division
#: on the first layer's maps before max-pooling, where it first sat).
MIX_INIT = -3.0
#: Keeps the divisor away from zero whatever the learned semi-saturation.
SIGMA_FLOOR = 0.3


class MemberDivisiveNormalisation(nn.Module):
    """Divisive normalisation of (B, n_members × channels, H, W) member-major maps.

    Parameters
    ----------
    n_members
        Independent copies (ensemble members).
    channels
        Channels per member.
    """

    def __init__(self, n_members: int, channels: int):
        super().__init__()
        self.n_members, self.channels = n_members, channels
        self.mix = nn.Parameter(torch.full((n_members, channels, channels), MIX_INIT))
        self.semisaturation = nn.Parameter(torch.zeros(n_members, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, c = self.n_members, self.channels
        pooled = F.avg_pool2d(x, POOL, 1, POOL // 2, count_include_pad=False)
        weights = F.softplus(self.mix).reshape(m * c, c, 1, 1)
        sigma = F.softplus(self.semisaturation).reshape(1, m * c, 1, 1) + SIGMA_FLOOR
        return x / (sigma + F.conv2d(pooled, weights, groups=m))

    @torch.no_grad()
    def init_member(self, member: int, generator: torch.Generator) -> None:
        """The same starting point for every member (their conv weights differ)."""
        self.mix[member].fill_(MIX_INIT)
        self.semisaturation[member].zero_()

    def extra_repr(self) -> str:
        return f"n_members={self.n_members}, channels={self.channels}, pool={POOL}"
