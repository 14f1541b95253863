"""Each unit's gain and offset following the whole image's contrast (contrast gain control).

A V1 unit's response to the same pattern depends on the contrast of the whole image: in
some units it is divided down by a pool that grows with contrast (normalisation), in
others it grows faster than the features a model reads it from.  The model's features
cannot say which: the Gabor bank's are divided by the local energy at each position, and
a readout of local features does not see the image's overall contrast.  So each unit's
readout value ``z`` is changed by the image's contrast energy ``v`` (its pixel variance)
on a log scale, relative to the training images' mean ``v̄`` and squashed by ``tanh`` so
no image outside the data's range moves it further than the most extreme ones:

    z' = z · exp(g_u · s) + h_u · s,   s = tanh(log(v / v̄ + ε) − log(1 + ε)),

``g_u`` a gain that contrast raises (> 0) or lowers (< 0) and ``h_u`` an offset; both
start at 0 (the identity), one pair per member and unit.  ``v̄`` is each member's mean
over its training images (`set_statistics`), saved with the model; ``ε`` (`VARIANCE_FLOOR`)
keeps a blank image's ``s`` finite (−1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: ε: added to the variance relative to the training images' mean, so a blank image's log is finite.
VARIANCE_FLOOR = 0.01


def pixel_variance(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images → (C, B) each image's pixel variance, C = 1 or members."""
    return images.flatten(2).var(dim=2, unbiased=False).T


class ContrastGain(nn.Module):
    """Per-unit gain and offset set by the image's contrast (see the module notes).

    Parameters
    ----------
    n_members
        Independent copies (ensemble members).
    n_units
        Units per member.
    """

    typical_variance: torch.Tensor  # buffer (n_members,): v̄

    def __init__(self, n_members: int, n_units: int):
        super().__init__()
        self.gain = nn.Parameter(torch.zeros(n_members, n_units))
        self.offset = nn.Parameter(torch.zeros(n_members, n_units))
        self.register_buffer("typical_variance", torch.ones(n_members))

    def forward(self, z: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """``z`` (members, B, units) readout values of ``images`` (B, 1 or members, H, W)."""
        relative = pixel_variance(images) / self.typical_variance[:, None]
        s = torch.tanh(torch.log(relative + VARIANCE_FLOOR) - math.log1p(VARIANCE_FLOOR)).unsqueeze(-1)
        return z * torch.exp(self.gain.unsqueeze(1) * s) + self.offset.unsqueeze(1) * s

    @torch.no_grad()
    def set_statistics(self, images: torch.Tensor, sample_weight: torch.Tensor | None = None) -> None:
        """``v̄``: each member's mean pixel variance over the images ``sample_weight`` (members, B) gives it."""
        variance = pixel_variance(images).to(torch.float64).expand(self.typical_variance.shape[0], -1)
        weight = torch.ones_like(variance) if sample_weight is None else sample_weight.to(variance)
        typical = (variance * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)
        self.typical_variance.copy_(typical.clamp_min(1e-12))

    @torch.no_grad()
    def init_member(self, member: int, generator: torch.Generator) -> None:
        self.gain[member].zero_()
        self.offset[member].zero_()
        self.typical_variance[member].fill_(1.0)
