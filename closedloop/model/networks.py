"""Network description (`ModelConfig`), core + readout composition, and the builder.

`build_network` turns a `ModelConfig` into a model with this interface, shared by the
CNNs here and `closedloop.model.linear.LinearPixelModel`:

- ``forward_members(images) -> (n_members, batch, n_units)`` rates in Hz, per member;
- ``forward(images) -> (batch, n_units)``: the ensemble mean (what synthesis and
  prediction use);
- ``n_members``, ``n_units``, ``init_member(m, generator)``, ``regularizer()``.

Images are (batch, 33, 33) or (batch, 1, 33, 33) float tensors in [0, 1].

Table-1 network on a 33×33 input with 'valid' padding (per member, batch B)::

    input             (B, 1, 33, 33)
    conv1 16@7×7+relu (B, 16, 27, 27)
    maxpool 3/2       (B, 16, 13, 13)
    conv2 32@7×7+relu (B, 32, 7, 7)
    maxpool 3/2       (B, 32, 3, 3)
    flatten           (B, 288)
    dense 300 + relu  (B, 300)   → dropout p = 0.45 (keep 0.55)
    dense n_units     (B, n_units)  → per-unit scale/offset → softplus
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeAlias

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from closedloop.model.blend import BlendedNetwork
from closedloop.model.contrast_gain import ContrastGain
from closedloop.model.cores import ConvCore, MemberBatchNorm
from closedloop.model.linear import LinearPixelModel
from closedloop.model.model_config import ModelConfig
from closedloop.model.readouts import DenseReadout, FactorisedReadout

__all__ = ["CoreReadoutNetwork", "ModelConfig", "Network", "build_network", "build_spec", "extrapolating_tails"]


def inverse_softplus(rate: torch.Tensor) -> torch.Tensor:
    """x such that softplus(x) == rate, for rate > 0 (stable for large rates)."""
    return rate + torch.log(-torch.expm1(-rate))


class _Extrapolation(threading.local):
    rows: torch.Tensor | None = None


_EXTRAPOLATION = _Extrapolation()


@contextmanager
def extrapolating_tails(rows: torch.Tensor) -> Iterator[None]:
    """Within this block (in this thread), ``"flat"`` output tails go on at slope 1 past
    their last hinge for the batch rows where ``rows`` is true, as ``"identity"`` tails do.

    Synthesis maximises through it: a flat tail's rate has no gradient past the last
    hinge, so an image pushed there would stop improving, while the rate it is promised
    is still the flat tail's (the model's forward outside the block).

    Parameters
    ----------
    rows
        (batch,) bool, one per image of every forward pass inside the block.
    """
    before, _EXTRAPOLATION.rows = _EXTRAPOLATION.rows, rows
    try:
        yield
    finally:
        _EXTRAPOLATION.rows = before


class UnitNonlinearity(nn.Module):
    """A learned per-unit piecewise-linear function of the readout value, identity at start.

    ``f(z) = z + Σ_k a[u, k] · relu(z − t_k)`` with fixed hinges ``t_k`` spread over
    the standardised readout range [−1, 3] (most images drive a unit weakly, a few
    strongly).  Positive ``a`` make the response expansive, as the power-law output of
    V1 neurons (exponents ~2) that a linear readout of ReLU features cannot produce;
    negative ``a`` let it saturate.  ``a`` starts at 0, so training starts from the
    affine output of Table 1.

    A ``"flat"`` tail stops at ``ceiling``: the last hinge while training, and once trained
    the highest readout value of the member's training images where that is lower
    (`set_ceiling`), so no image is promised more than the data the function was fitted on.
    """

    knots: torch.Tensor  # buffer (n_members, n_knots)
    ceiling: torch.Tensor  # buffer (n_members, n_units)

    def __init__(self, n_members: int, n_units: int, n_knots: int, tail: str = "learned"):
        super().__init__()
        knots = torch.linspace(-1.0, 3.0, n_knots) if n_knots > 1 else torch.zeros(1)
        # Member-major like every other buffer, so members stack and split by indexing.
        self.register_buffer("knots", knots.expand(n_members, n_knots).clone())
        self.register_buffer("ceiling", knots[-1].expand(n_members, n_units).clone())
        self.slopes = nn.Parameter(torch.zeros(n_members, n_units, n_knots))
        self.tail = tail

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (M, B, U)
        if self.tail == "flat":  # the rate at the ceiling is the most it gives (`ModelConfig.output_tail`)
            capped = torch.minimum(z, self.ceiling.unsqueeze(1))
            rows = _EXTRAPOLATION.rows
            z = capped if rows is None else torch.where(rows[None, :, None], z, capped)
        hinges = F.relu(z.unsqueeze(-1) - self.knots[:, None, None, :])
        if self.tail == "identity":  # no bend beyond the last hinge (`ModelConfig.output_tail`)
            hinges = torch.minimum(hinges, (self.knots[:, -1:] - self.knots)[:, None, None, :])
        return z + (hinges * self.slopes.unsqueeze(1)).sum(dim=-1)

    @torch.no_grad()
    def init_member(self, member: int, generator: torch.Generator) -> None:
        self.slopes[member].zero_()

    @torch.no_grad()
    def reset_ceiling(self) -> None:
        """The ceiling training uses: every unit's last hinge."""
        self.ceiling.copy_(self._last_hinge())

    @torch.no_grad()
    def set_ceiling(self, highest: torch.Tensor) -> None:
        """Set each ceiling to ``highest`` (n_members, n_units), the highest readout value of the
        images the member was fitted on, where that is below the last hinge (``-inf`` where it saw
        none: the last hinge)."""
        hinge = self._last_hinge()
        self.ceiling.copy_(torch.where(torch.isfinite(highest), torch.minimum(hinge, highest), hinge))

    def _last_hinge(self) -> torch.Tensor:
        return self.knots[:, -1:].expand_as(self.ceiling)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Models saved before the ceiling existed stopped at the last hinge.
        state_dict.setdefault(prefix + "ceiling", self._last_hinge().clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class CoreReadoutNetwork(nn.Module):
    """A core and a readout, then a fixed per-unit affine map and the output nonlinearity.

    ``rate = f(offset[u] + scale[u] · readout(core(image))[u])``.  ``scale`` and
    ``offset`` are buffers set from the training data (`set_output_statistics`):
    the unit's standard deviation and mean rate, so the trainable layers work in
    standardised units and Adam's step size means the same for a 2 Hz and a 60 Hz unit.

    Output nonlinearity ``f``:

    - ``"softplus"`` (default): rates are non-negative, and stimulus synthesis must not be
      able to "reach" a target by driving a prediction below zero (e.g. when holding
      other units at baseline).  For rates of a few Hz and up softplus is the identity
      to within 0.7 %, so it changes nothing where the data are.
    - ``"none"``: the paper's linear output layer, kept for faithful reproduction.

    With ``output_knots > 0`` a `UnitNonlinearity` bends each readout value first
    (``output_tail``: how it goes on beyond its last hinge).  With ``contrast_gain`` a
    `ContrastGain` changes each readout value with the image's contrast before that.
    """

    # Buffers (registered in __init__), each (n_members,) or (n_members, n_units).
    input_shift: torch.Tensor
    input_scale: torch.Tensor
    output_offset: torch.Tensor
    output_scale: torch.Tensor
    #: `build_network`'s arguments as plain data, set by it.
    build_spec: dict
    #: A core taken from another fit and kept fixed (`closedloop.model.given_core`): it stays in
    #: eval mode (batch norm keeps its statistics) while the rest trains.
    core_frozen: bool = False

    def __init__(
        self,
        core: ConvCore,
        readout: DenseReadout | FactorisedReadout,
        n_units: int,
        output_nonlinearity: str = "softplus",
        output_knots: int = 0,
        output_tail: str = "learned",
        contrast_gain: bool = False,
    ):
        super().__init__()
        if output_nonlinearity not in ("softplus", "none"):
            raise ValueError(f"output_nonlinearity must be 'softplus' or 'none', got {output_nonlinearity!r}")
        self.core = core
        self.readout = readout
        self.output_nonlinearity = output_nonlinearity
        n_members = core.n_members
        self.unit_nonlinearity = (
            UnitNonlinearity(n_members, n_units, output_knots, output_tail) if output_knots else None
        )
        self.contrast_gain = ContrastGain(n_members, n_units) if contrast_gain else None
        # Pixels are mapped to (pixel - shift) / scale first; identity unless set from data.
        self.register_buffer("input_shift", torch.zeros(n_members))
        self.register_buffer("input_scale", torch.ones(n_members))
        self.register_buffer("output_offset", torch.zeros(n_members, n_units))
        self.register_buffer("output_scale", torch.ones(n_members, n_units))

    @property
    def n_members(self) -> int:
        return int(self.output_offset.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.output_offset.shape[1])

    def forward_members(self, images: torch.Tensor) -> torch.Tensor:
        z = self.readout_values(images)
        if self.unit_nonlinearity is not None:
            z = self.unit_nonlinearity(z)
        pre = torch.addcmul(self.output_offset.unsqueeze(1), self.output_scale.unsqueeze(1), z)
        return F.softplus(pre) if self.output_nonlinearity == "softplus" else pre

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_members(images).mean(dim=0)

    def readout_values(self, images: torch.Tensor) -> torch.Tensor:
        """(n_members, batch, n_units): each unit's readout value, after the contrast gain and
        before the output nonlinearity."""
        scaled = self._scaled(images)
        z = self.readout(self.core(scaled))
        if self.contrast_gain is not None:
            z = self.contrast_gain(z, self.core.member_input(scaled))
        return z

    @torch.no_grad()
    def set_output_ceiling(
        self,
        images: torch.Tensor,
        sample_weight: torch.Tensor | None = None,
        observed: torch.Tensor | None = None,
        batch_size: int = 1024,
    ) -> None:
        """Stop a flat output tail at the highest readout value of the images each member was fitted
        on, where that is below the last hinge (`UnitNonlinearity.set_ceiling`); nothing without one.

        Parameters
        ----------
        images
            The training images, as training passes them.
        sample_weight
            (n_members, batch) 0/1: which images each member trained on; ``None`` = all.
        observed
            (batch, n_units) 0/1: which responses exist (sessions pooled unit by unit); ``None`` = all.
        batch_size
            Images per forward pass.
        """
        tail = self.unit_nonlinearity
        if tail is None or tail.tail != "flat":
            return
        was_training = self.training
        self.eval()
        highest = torch.full_like(tail.ceiling, float("-inf"))
        for start in range(0, images.shape[0], batch_size):
            z = self.readout_values(images[start : start + batch_size])  # (M, B, U)
            seen = torch.ones_like(z, dtype=torch.bool)
            if sample_weight is not None:
                seen = seen & (sample_weight[:, start : start + batch_size, None] > 0)
            if observed is not None:
                seen = seen & (observed[None, start : start + batch_size] > 0)
            highest = torch.maximum(highest, torch.where(seen, z, float("-inf")).amax(dim=1))
        tail.set_ceiling(highest)
        self.train(was_training)

    def regularizer(self) -> torch.Tensor | None:
        return self.readout.regularizer()

    def train(self, mode: bool = True) -> CoreReadoutNetwork:
        super().train(mode)
        if self.core_frozen:
            self.core.eval()
        return self

    def set_sample_weight(self, sample_weight: torch.Tensor | None) -> None:
        """(n_members, batch) 0/1: which images of the next training batches each member sees
        (batch-norm statistics; see `MemberBatchNorm`); ``None`` = all of them."""
        for module in self.modules():
            if isinstance(module, MemberBatchNorm):
                module.sample_weight = sample_weight

    def init_member(self, member: int, generator: torch.Generator) -> None:
        self.core.init_member(member, generator)
        self.readout.init_member(member, generator)
        if self.unit_nonlinearity is not None:
            self.unit_nonlinearity.init_member(member, generator)
        if self.contrast_gain is not None:
            self.contrast_gain.init_member(member, generator)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before input normalisation existed: identity shift and scale.
        for name in ("input_shift", "input_scale"):
            state_dict.setdefault(prefix + name, getattr(self, name).detach().clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _scaled(self, images: torch.Tensor) -> torch.Tensor:
        # Every member sees the same images, so member 0's shift and scale serve all.
        return (images - self.input_shift[0]) / self.input_scale[0]

    def set_feature_statistics(self, images: torch.Tensor, sample_weight: torch.Tensor | None = None) -> None:
        """Standardise the core's fixed features (its Gabor bank, if any) over the training
        ``images``; ``sample_weight`` (n_members, batch) 0/1 says which images each member trains on.
        Call after `set_input_statistics`: the features are those of the scaled images.  Also
        sets a `ContrastGain`'s typical pixel variance."""
        scaled = self._scaled(images)
        self.core.set_bank_statistics(scaled, sample_weight)
        if self.contrast_gain is not None:
            self.contrast_gain.set_statistics(self.core.member_input(scaled), sample_weight)

    @torch.no_grad()
    def set_input_statistics(self, mean_pixel: float, std_pixel: float) -> None:
        """Z-score pixels with the training images' mean and standard deviation (all members)."""
        self.input_shift.fill_(float(mean_pixel))
        self.input_scale.fill_(max(float(std_pixel), 1e-6))

    @torch.no_grad()
    def set_output_statistics(self, mean_rate: torch.Tensor, std_rate: torch.Tensor) -> None:
        """Set every member's scale/offset from per-unit training mean and std (Hz)."""
        mean_rate = mean_rate.to(self.output_offset)
        std_rate = std_rate.to(self.output_scale).clamp_min(1e-6)
        if self.output_nonlinearity == "softplus":
            offset = inverse_softplus(mean_rate.clamp_min(1e-3))
        else:
            offset = mean_rate
        self.output_offset.copy_(offset.expand_as(self.output_offset))
        self.output_scale.copy_(std_rate.expand_as(self.output_scale))


Network: TypeAlias = CoreReadoutNetwork | LinearPixelModel | BlendedNetwork
"""What `build_network` builds: the interface in this module's docstring."""


def build_network(config: ModelConfig, n_units: int, n_members: int = 1, input_size: int = 33) -> Network:
    """Build an untrained model for ``config`` (weights initialised with ``init_member``).

    Parameters
    ----------
    config
        The architecture.  ``"kindel2017"``: `ConvCore` + `DenseReadout` (Table 1
        with the defaults); ``"factorised"``: `ConvCore` + `FactorisedReadout`;
        ``"linear"``: `LinearPixelModel`.
    n_units
        Number of output units.
    n_members
        Ensemble members evaluated together (fused).
    input_size
        Side of the square input images.

    Returns
    -------
    Network
        A `CoreReadoutNetwork`, `LinearPixelModel`, or with ``config.partner`` a
        `BlendedNetwork` of two `CoreReadoutNetwork` (its weights at their
        default until a fit sets them), with ``build_spec`` (the arguments of this call
        as plain data).  On the CPU, every member initialised
        from ``config.seed`` (or 0 if unset) via
        `closedloop.model.ensemble.member_seeds`; trainers re-initialise with their
        own seeds.
    """
    if n_units < 1 or n_members < 1:
        raise ValueError(f"n_units ({n_units}) and n_members ({n_members}) must be at least 1")
    partner = config.partner_config()
    if partner is not None:
        first = build_network(config.replace(partner=None), n_units, n_members, input_size)
        second = build_network(partner, n_units, n_members, input_size)
        if not (isinstance(first, CoreReadoutNetwork) and isinstance(second, CoreReadoutNetwork)):
            raise ValueError("both networks of a blend must be CNNs")
        blended = BlendedNetwork(first, second)
        blended.build_spec = build_spec(config, n_units, n_members, input_size)
        return blended
    if config.architecture == "linear":
        linear = LinearPixelModel(input_size * input_size, n_units, n_members)
        linear.build_spec = build_spec(config, n_units, n_members, input_size)
        return linear
    core = ConvCore(
        n_members=n_members,
        input_size=input_size,
        filters=config.core_filters,
        kernels=config.core_kernels,
        pool_kernel=config.pool_kernel,
        pool_stride=config.pool_stride,
        padding=config.padding,
        pool_layers=config.pool_layers,
        batch_norm=config.batch_norm,
        normalisation=config.core_normalisation,
        gabor_bank=config.gabor_bank,
        gabor_wavelengths=config.gabor_wavelengths,
    )
    readout: DenseReadout | FactorisedReadout
    if config.architecture == "kindel2017":
        readout = DenseReadout(n_members, core.output_shape, n_units, config.dense_units, config.dropout_keep)
    else:
        readout = FactorisedReadout(n_members, core.output_shape, n_units, l1=config.l1_readout)
    network = CoreReadoutNetwork(
        core,
        readout,
        n_units,
        config.output_nonlinearity,
        config.output_knots,
        config.output_tail,
        config.contrast_gain,
    )
    for member, seed in enumerate(member_seeds(config.seed or 0, n_members)):
        network.init_member(member, torch.Generator().manual_seed(seed))
    network.build_spec = build_spec(config, n_units, n_members, input_size)
    return network


def member_seeds(seed: int, n_members: int) -> list[int]:
    """Independent per-member initialisation seeds derived from one seed.

    Member ``k``'s seed does not depend on how many members there are.
    """
    children = np.random.SeedSequence(int(seed)).spawn(n_members)
    return [int(child.generate_state(1, dtype=np.uint32)[0]) for child in children]


def build_spec(config: ModelConfig, n_units: int, n_members: int, input_size: int) -> dict:
    """`build_network`'s arguments as plain data, kept on a model so it can be rebuilt, stacked and saved."""
    return {"config": config.to_dict(), "n_units": n_units, "n_members": n_members, "input_size": input_size}


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, all members together."""
    return int(sum(math.prod(p.shape) for p in model.parameters() if p.requires_grad))
