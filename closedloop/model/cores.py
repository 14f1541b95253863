"""Convolutional cores: image → feature maps (docs/methods.md, Model, sinzlab/neuralpredictors style).

Every layer here holds ``n_members`` independent copies of its weights, stacked on a
leading axis, and evaluates them in one grouped convolution.  A single network is
the case ``n_members == 1``; a *fused* ensemble of N networks costs about the kernel
launches of one (the first layer is one convolution with N × filters outputs, later
layers use ``groups = N``).  Member ``m``'s weights are ``weight[m]``, so members can
be stacked and unstacked by indexing (see `closedloop.model.ensemble`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from closedloop.model.divisive import MemberDivisiveNormalisation
from closedloop.model.gabor_bank import GaborBank
from closedloop.model.model_config import CORE_NORMALISATIONS, GABOR_WAVELENGTHS

PADDING_CHOICES = ("valid", "same")

_M = TypeVar("_M", bound=nn.Module)


def typed_modules(modules: Iterable[nn.Module], kind: type[_M]) -> list[_M]:
    """``modules`` (e.g. an `nn.ModuleList`, whose items are plain modules to a type checker) as ``kind``."""
    typed = []
    for module in modules:
        if not isinstance(module, kind):
            raise TypeError(f"expected a {kind.__name__}, got a {type(module).__name__}")
        typed.append(module)
    return typed


def as_image_batch(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W) or (B, 1, H, W) images → (B, 1, H, W)."""
    if images.dim() == 3:
        return images.unsqueeze(1)
    if images.dim() == 4 and images.shape[1] == 1:
        return images
    raise ValueError(f"images must be (batch, H, W) or (batch, 1, H, W), got {tuple(images.shape)}")


def conv_output_size(size: int, kernel: int, padding: str) -> int:
    """Spatial size after a stride-1 convolution with 'valid' or 'same' padding."""
    return size if padding == "same" else size - kernel + 1


def pool_output_size(size: int, kernel: int, stride: int) -> int:
    """Spatial size after max-pooling without padding (floor mode, as PyTorch)."""
    return (size - kernel) // stride + 1


class MemberConv2d(nn.Module):
    """``n_members`` independent stride-1 convolutions evaluated as one.

    Parameters
    ----------
    n_members
        Number of independent copies of the layer.
    in_channels, out_channels, kernel_size
        Per member.
    padding
        ``"valid"`` or ``"same"``.
    shared_input
        True for the first layer: every member sees the same (B, in, H, W) input, so
        one ordinary convolution with ``n_members × out_channels`` filters does it.
        False: the input is (B, n_members × in, H, W), member-major, and the layer
        is a grouped convolution with ``groups = n_members``.
    """

    def __init__(
        self,
        n_members: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: str,
        shared_input: bool,
    ):
        super().__init__()
        self.n_members = n_members
        self.out_channels = out_channels
        self.padding = padding
        self.shared_input = shared_input
        self.weight = nn.Parameter(torch.zeros(n_members, out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(n_members, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, out, cin, k, _ = self.weight.shape
        weight = self.weight.reshape(m * out, cin, k, k)
        groups = 1 if self.shared_input else m
        return F.conv2d(x, weight, self.bias.reshape(m * out), padding=self.padding, groups=groups)

    @torch.no_grad()
    def init_member(self, member: int, generator: torch.Generator) -> None:
        """He-uniform weights (the layer feeds a ReLU), zero bias, for one member."""
        fan_in = self.weight[member].numel() // self.out_channels
        bound = math.sqrt(6.0 / fan_in)
        values = torch.rand(self.weight[member].shape, generator=generator) * 2 * bound - bound
        self.weight[member].copy_(values)
        self.bias[member].zero_()


class MemberBatchNorm(nn.Module):
    """Batch normalisation of each member's channels, member on the leading axis.

    Like ``nn.BatchNorm2d`` over (B, n_members × channels, H, W), but with (n_members,
    channels) parameters and running statistics, so members can be stacked and split.

    ``sample_weight`` (n_members, B), when set, says which images of the batch each
    member trains on (1) and which it must not see (0): in training mode its batch
    statistics are then taken over its own images only, exactly as if it were trained
    alone on them.  That is how a fused ensemble whose members train on different
    images (rotating stop sets) stays equal to its members trained one by one.
    """

    # Buffers (registered in __init__), (n_members, channels).
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, n_members: int, channels: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(n_members, channels))
        self.bias = nn.Parameter(torch.zeros(n_members, channels))
        self.register_buffer("running_mean", torch.zeros(n_members, channels))
        self.register_buffer("running_var", torch.ones(n_members, channels))
        self.sample_weight: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.sample_weight is not None:
            return self._masked(x, self.sample_weight)
        return F.batch_norm(
            x,
            self.running_mean.view(-1),
            self.running_var.view(-1),
            self.weight.reshape(-1),
            self.bias.reshape(-1),
            self.training,
            self.momentum,
            self.eps,
        )

    def _masked(self, x: torch.Tensor, sample_weight: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        members, channels = self.weight.shape
        xv = x.view(batch, members, channels, height, width)
        w = sample_weight.t().reshape(batch, members, 1, 1, 1).to(x.dtype)
        count = (sample_weight.sum(dim=1) * height * width).clamp_min(2.0).view(1, members, 1, 1, 1)
        mean = (xv * w).sum(dim=(0, 3, 4), keepdim=True) / count
        centred = xv - mean
        var = (centred.square() * w).sum(dim=(0, 3, 4), keepdim=True) / count
        with torch.no_grad():  # running statistics as F.batch_norm keeps them (unbiased variance)
            self.running_mean.lerp_(mean.view(members, channels), self.momentum)
            self.running_var.lerp_((var * count / (count - 1)).view(members, channels), self.momentum)
        out = centred * torch.rsqrt(var + self.eps) * self.weight.view(1, members, channels, 1, 1)
        return (out + self.bias.view(1, members, channels, 1, 1)).view_as(x)

    @torch.no_grad()
    def init_member(self, member: int, generator: torch.Generator) -> None:
        self.weight[member].fill_(1.0)
        self.bias[member].zero_()
        self.running_mean[member].zero_()
        self.running_var[member].fill_(1.0)


class MemberStandardisation(nn.Module):
    """Each member's channels standardised by statistics set once, not learned: ``x · scale + shift``.

    For features that do not change while a network trains (the fixed Gabor bank's).  Batch
    norm recomputed the same statistics every epoch and trained a per-channel affine map, much
    of which the readout's feature weights already provide; with no gradient to the bank's
    channels a CPU training step is about a fifth shorter, for fits about 0.003 lower in r/oracle
    on simulated brains (presets.GABOR_WIDE_NOTES).  `set_statistics` takes each member's mean
    and variance over its training images; the scale and shift are buffers, saved with the model.
    """

    # Buffers (registered in __init__), (n_members, channels).
    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, n_members: int, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("scale", torch.ones(n_members, channels))
        self.register_buffer("shift", torch.zeros(n_members, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift.view(1, -1, 1, 1), x, self.scale.view(1, -1, 1, 1))

    @torch.no_grad()
    def set_statistics(self, x: torch.Tensor, sample_weight: torch.Tensor | None = None) -> None:
        """Zero mean and unit variance for each member's channels of ``x`` (B, n_members × channels,
        H, W) over the images ``sample_weight`` (n_members, B) gives it (all when ``None``)."""
        batch, _, height, width = x.shape
        members, channels = self.scale.shape
        values = x.reshape(batch, members, channels, height * width)
        sums = values.sum(dim=3, dtype=torch.float64)
        squares = values.square().sum(dim=3, dtype=torch.float64)
        weight = (
            torch.ones(members, batch, dtype=torch.float64, device=x.device)
            if sample_weight is None
            else sample_weight.to(torch.float64)
        )
        count = (weight.sum(dim=1) * height * width).clamp_min(1.0).unsqueeze(1)  # (members, 1)
        mean = torch.einsum("mb,bmc->mc", weight, sums) / count
        variance = (torch.einsum("mb,bmc->mc", weight, squares) / count - mean.square()).clamp_min(0.0)
        scale = torch.rsqrt(variance + self.eps)
        self.scale.copy_(scale)
        self.shift.copy_(-mean * scale)

    @torch.no_grad()
    def init_member(self, member: int, generator: torch.Generator) -> None:
        self.scale[member].fill_(1.0)
        self.shift[member].zero_()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Models saved when the bank had batch norm: its eval-mode map, x · w / sqrt(var + eps)
        # + (b - mean · w / sqrt(var + eps)), exactly.
        old = [prefix + name for name in ("weight", "bias", "running_mean", "running_var")]
        if all(key in state_dict for key in old):
            weight, bias, mean, variance = (state_dict.pop(key) for key in old)
            state_dict.pop(prefix + "num_batches_tracked", None)
            scale = weight * torch.rsqrt(variance + self.eps)
            state_dict[prefix + "scale"] = scale
            state_dict[prefix + "shift"] = bias - mean * scale
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ConvCore(nn.Module):
    """A stack of conv → ReLU → max-pool blocks.

    With the defaults this is the core of Kindel et al. (2019), Table 1: conv 16 @ 7×7
    → ReLU → max-pool 3/2 → conv 32 @ 7×7 → ReLU → max-pool 3/2.

    Parameters
    ----------
    n_members
        Independent copies (ensemble members) evaluated together.
    input_size
        Side of the square input image (33 after preprocessing).
    filters, kernels
        Filters and kernel side per layer (same length).
    pool_kernel, pool_stride
        Max-pooling after every layer; ``pool_kernel == 1`` with ``pool_stride == 1``
        means no pooling.
    padding
        ``"valid"`` (default) or ``"same"``.  'valid' is our default because on the
        33×33 input it makes the maps smaller at every layer (27→13→7→3 instead of
        33→16→16→7), which measured ~3× faster to train on a 2-core CPU (docs/methods.md, Installing)
        and gives a 288- rather than 1568-wide dense layer input.  The paper's
        TensorFlow code is the reason 'same' stays available.
    pool_layers, batch_norm
        See `closedloop.model.model_config.ModelConfig`.
    normalisation
        ``"none"`` (default) or ``"divisive"``: the first layer's rectified channels are
        divided by their local pooled activity (`MemberDivisiveNormalisation`) after
        its max-pooling.
    gabor_bank
        Also give the readout a fixed `GaborBank`'s channels at the same grid positions,
        standardised per member over its training images (`set_bank_statistics`; see
        `closedloop.model.model_config.ModelConfig`).
    gabor_wavelengths
        The bank's wavelengths in input pixels.

    Output
    ------
    (batch, n_members × channels, H', W'), member-major along channels; ``channels`` is
    ``filters[-1]``, plus the bank's features after them when ``gabor_bank``.
    """

    def __init__(
        self,
        n_members: int = 1,
        input_size: int = 33,
        filters: tuple[int, ...] = (16, 32),
        kernels: tuple[int, ...] = (7, 7),
        pool_kernel: int = 3,
        pool_stride: int = 2,
        padding: str = "valid",
        pool_layers: tuple[int, ...] | None = None,
        batch_norm: bool = False,
        normalisation: str = "none",
        gabor_bank: bool = False,
        gabor_wavelengths: tuple[float, ...] = GABOR_WAVELENGTHS,
    ):
        super().__init__()
        if normalisation not in CORE_NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {CORE_NORMALISATIONS}, got {normalisation!r}")
        if len(filters) != len(kernels) or not filters:
            raise ValueError(f"filters {filters} and kernels {kernels} must be non-empty and of equal length")
        if padding not in PADDING_CHOICES:
            raise ValueError(f"padding must be one of {PADDING_CHOICES}, got {padding!r}")
        self.n_members = n_members
        self.input_size = input_size
        #: Per-pixel std of fresh Gaussian noise on the learned layers' input in training mode
        #: (`ModelConfig.input_noise`; the trainer sets it for a fit).  A Gabor bank sees the clean
        #: image: its features are fixed, and noising them cost time (a CPU fit took 4x as long, the
        #: bank recomputed every epoch) for about the same fit (classic brain r/rmax 0.861 vs 0.856).
        self.training_noise: torch.Tensor | None = None
        self.pool_kernel = pool_kernel
        self.pool_stride = pool_stride
        pools = pool_kernel > 1 or pool_stride > 1
        # 1-based layers followed by max-pooling (all of them by default, as Table 1).
        wanted = range(1, len(filters) + 1) if pool_layers is None else pool_layers
        self.pooled = tuple(pools and (index + 1) in wanted for index in range(len(filters)))
        layers, norms = [], []
        in_channels, size = 1, input_size
        for index, (n_filters, kernel) in enumerate(zip(filters, kernels)):
            layers.append(MemberConv2d(n_members, in_channels, n_filters, kernel, padding, shared_input=index == 0))
            if batch_norm:
                norms.append(MemberBatchNorm(n_members, n_filters))
                # Batch norm subtracts the mean, so a conv bias before it has a zero gradient in
                # exact arithmetic; Adam would move it by rounding noise alone.  Keep it at zero.
                layers[-1].bias.requires_grad_(False)
            size = conv_output_size(size, kernel, padding)
            if self.pooled[index]:
                size = pool_output_size(size, pool_kernel, pool_stride)
            if size < 1:
                raise ValueError(
                    f"a {input_size}×{input_size} input shrinks to nothing at core layer {index + 1} "
                    f"(kernels {kernels}, pool {pool_kernel}/{pool_stride}, padding {padding!r}); "
                    "use fewer layers, smaller kernels or 'same' padding"
                )
            in_channels = n_filters
        self.layers = nn.ModuleList(layers)
        self.norms = nn.ModuleList(norms) if batch_norm else None
        # Divisive normalisation of the first layer's rectified, max-pooled channels.
        self.divisive = MemberDivisiveNormalisation(n_members, filters[0]) if normalisation == "divisive" else None
        self.kernels, self.padding = tuple(kernels), padding
        self.bank: GaborBank | None = None
        self.bank_norm: MemberStandardisation | None = None
        if gabor_bank:
            start, step = self.grid_geometry()
            self.bank = GaborBank(size, start, step, gabor_wavelengths)
            self.bank_norm = MemberStandardisation(n_members, self.bank.n_features)
            in_channels += self.bank.n_features
        self.output_shape = (in_channels, size, size)  # per member

    def grid_geometry(self) -> tuple[float, int]:
        """Where the output grid sits on the input: the input pixel under its first position
        (the centre of that position's receptive field) and the pixels between positions."""
        start, step = 0.0, 1
        for index, kernel in enumerate(self.kernels):
            if self.padding == "valid":
                start += step * (kernel - 1) / 2
            if self.pooled[index]:
                start += step * (self.pool_kernel - 1) / 2
                step *= self.pool_stride
        return start, step

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.member_input(images)
        noise = self.training_noise if self.training else None
        learned = self._learned(x if noise is None else x + noise * torch.randn_like(x))
        if self.bank is None or self.bank_norm is None:
            return learned
        members = self.n_members
        fixed = self.bank_norm(self._bank_features(x, self.bank))
        both = torch.cat([learned.unflatten(1, (members, -1)), fixed.unflatten(1, (members, -1))], dim=2)
        return both.flatten(1, 2)

    @torch.no_grad()
    def set_bank_statistics(self, images: torch.Tensor, sample_weight: torch.Tensor | None = None) -> None:
        """Standardise the bank's channels over these (training) images, each member over those
        ``sample_weight`` (n_members, batch) gives it; nothing to do without a bank."""
        if self.bank is not None and self.bank_norm is not None:
            self.bank_norm.set_statistics(self._bank_features(self.member_input(images), self.bank), sample_weight)

    def member_input(self, images: torch.Tensor) -> torch.Tensor:
        """The images as the core reads them: (B, 1, H, W), or (B, n_members, H, W) when its first
        layer is not shared (each member its own images: sessions fitted together)."""
        return as_image_batch(images) if self.layers[0].shared_input else images

    def _bank_features(self, x: torch.Tensor, bank: GaborBank) -> torch.Tensor:
        """(B, n_members × bank features, H', W'), member-major."""
        batch, members = x.shape[0], self.n_members
        if x.shape[1] == 1:  # every member sees the same images: one bank pass serves all
            fixed = bank(x).unsqueeze(1).expand(-1, members, -1, -1, -1)
        else:
            fixed = bank(x.reshape(batch * members, 1, *x.shape[2:])).unflatten(0, (batch, members))
        return fixed.reshape(batch, members * bank.n_features, *fixed.shape[-2:])

    def _learned(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if x.device.type == "cpu":
                # oneDNN's max-pool (and its backward) is ~7x faster on channels-last maps; before
                # batch norm, whose backward is ~4x slower when its input and gradient differ in layout.
                x = x.contiguous(memory_format=torch.channels_last)
            if self.norms is not None:
                x = self.norms[index](x)
            if self.pooled[index]:
                # ReLU after pooling equals ReLU before it (both monotone) on 4x fewer values.
                x = F.max_pool2d(x, self.pool_kernel, self.pool_stride)
            x = F.relu(x)
            if index == 0 and self.divisive is not None:
                # After pooling: on 4x fewer values, and max-pooling then picks the strongest
                # raw response rather than the strongest normalised one.
                x = self.divisive(x)
        return x

    def init_member(self, member: int, generator: torch.Generator) -> None:
        for layer in typed_modules(self.layers, MemberConv2d):
            layer.init_member(member, generator)
        for norm in typed_modules(self.norms or (), MemberBatchNorm):
            norm.init_member(member, generator)
        if self.divisive is not None:
            self.divisive.init_member(member, generator)
        if self.bank_norm is not None:
            self.bank_norm.init_member(member, generator)

    def layer_shapes(self, batch: int = 1) -> list[tuple[str, tuple[int, ...]]]:
        """Names and per-member output shapes of every stage, for documentation and tests."""
        shapes = []
        layers = typed_modules(self.layers, MemberConv2d)
        with torch.no_grad():
            x = torch.zeros(batch, 1, self.input_size, self.input_size, device=layers[0].weight.device)
            for index, layer in enumerate(layers, start=1):
                x = F.relu(layer(x))
                shapes.append((f"conv{index}+relu", (batch, layer.out_channels, *x.shape[2:])))
                if self.pooled[index - 1]:
                    x = F.max_pool2d(x, self.pool_kernel, self.pool_stride)
                    shapes.append((f"maxpool{index}", (batch, layer.out_channels, *x.shape[2:])))
                if index == 1 and self.divisive is not None:
                    shapes.append(("divisive1", (batch, layer.out_channels, *x.shape[2:])))
        return shapes

    def extra_repr(self) -> str:
        return f"n_members={self.n_members}, output_shape={self.output_shape}"
