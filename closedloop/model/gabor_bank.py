"""A fixed bank of Gabor filters whose responses sit next to the learned core's channels.

V1 is described well by quadrature pairs of Gabor filters (simple cells: one phase,
half-wave rectified; complex cells: the pair's energy).  A learned core has to find such
filters from a few hundred images; this bank gives the readout them for free, at the
same grid positions as the core's own output, so each unit's readout can weigh fixed
and learned features alike.  Nothing here is trained: the filters are a buffer that is
rebuilt from the geometry, never saved.

Channels, for every wavelength × orientation: the pair's energy and its four half-wave
rectified phases (even+, even−, odd+, odd−), averaged over a window as wide as the
spacing of the core's grid, then divided by ``SEMISATURATION`` plus the mean energy of all
pairs there (divisive normalisation, Heeger 1992).  Without the division the features grow
in proportion to contrast, and images synthesized to drive a unit hard, which pile contrast
where it looks, were promised rates far above the truth (benchmarks/README.md).

A fit passes the same images every epoch (and, on a CPU, each ensemble member in turn), so
the bank keeps the features of its last few inputs and reuses them when the next input is
equal to one of them, element by element: reuse is exact, and a fit computes the bank once
per image set instead of once per epoch and member.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from closedloop.model.model_config import GABOR_WAVELENGTHS

#: Orientations per wavelength.  The wavelengths are a model setting (`ModelConfig.gabor_wavelengths`,
#: in input pixels, about half an octave apart; the input is the display image downsampled twice, so
#: 4 px is 8 display pixels).
N_ORIENTATIONS = 8
#: Envelope width per wavelength (about 1.5 octaves of spatial-frequency bandwidth).
SIGMA_PER_WAVELENGTH = 0.4
#: In units of the standardised image's energy (pixels z-scored over the training images).
SEMISATURATION = 1.0
PHASES = ("energy", "even+", "even-", "odd+", "odd-")
#: Inputs whose features are kept: a member's training and stopping images; and the most
#: feature values one kept input may have (128 MB), so a huge batch is never held on to.
MEMO_SIZE = 2
MEMO_MAX_VALUES = 2**25


def kernel_size(wavelengths: tuple[float, ...]) -> int:
    """Side of the bank's kernels: the longest wavelength's envelope to about 2 σ either side
    (15 px for wavelengths up to 9 px, as banks were before the wavelengths became a setting)."""
    return 2 * round(2 * SIGMA_PER_WAVELENGTH * max(wavelengths)) + 1


def gabor_pairs(
    wavelengths: tuple[float, ...] = GABOR_WAVELENGTHS, n_orientations: int = N_ORIENTATIONS, size: int | None = None
) -> torch.Tensor:
    """(2·P, 1, size, size) zero-mean, unit-norm Gabor filters: even then odd of each of the
    P = wavelengths × orientations pairs; ``size`` defaults to `kernel_size`."""
    size = kernel_size(wavelengths) if size is None else size
    axis = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    filters = []
    for wavelength in wavelengths:
        sigma = SIGMA_PER_WAVELENGTH * wavelength
        envelope = torch.exp(-(x**2 + y**2) / (2 * sigma**2))
        for k in range(n_orientations):
            theta = math.pi * k / n_orientations
            along = x * math.cos(theta) + y * math.sin(theta)
            for phase in (0.0, math.pi / 2):
                carrier = envelope * torch.cos(2 * math.pi * along / wavelength + phase)
                # No response to uniform light (the even filter's carrier has a mean).
                carrier = carrier - envelope * (carrier.sum() / envelope.sum())
                filters.append(carrier / carrier.norm())
    return torch.stack(filters).unsqueeze(1).float()


class GaborBank(nn.Module):
    """Fixed Gabor features sampled on a core's output grid.

    Parameters
    ----------
    grid_size
        Side of the core's output grid.
    grid_start, grid_step
        Input pixel (0-based, may be fractional) under the grid's first position, and the
        pixels between neighbouring positions (see `closedloop.model.cores.ConvCore.grid_geometry`).
    wavelengths
        Carrier wavelengths in input pixels (`ModelConfig.gabor_wavelengths`).

    Input (B, 1, H, W) standardised images; output (B, n_features, grid_size, grid_size),
    non-negative and normalised (see the module notes).  Beyond the image's border its own
    edge pixels are repeated (the display's background), so no artificial frame is seen.
    """

    filters: torch.Tensor

    def __init__(
        self, grid_size: int, grid_start: float, grid_step: int, wavelengths: tuple[float, ...] = GABOR_WAVELENGTHS
    ):
        super().__init__()
        if grid_size < 1 or grid_step < 1:
            raise ValueError(f"grid_size ({grid_size}) and grid_step ({grid_step}) must be at least 1")
        self.register_buffer("filters", gabor_pairs(tuple(wavelengths)), persistent=False)
        self.grid_size, self.grid_step = grid_size, grid_step
        # Average each response over one grid cell (an odd window), then sample every grid_step.
        self.window = 2 * (grid_step // 2) + 1
        # An even kernel puts a position's centre between two pixels: take the one before.
        self.grid_start = math.floor(grid_start)
        self.n_features = len(PHASES) * (self.filters.shape[0] // 2)
        self._memo: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Only inputs no gradient flows to (synthesis differentiates through the bank), and
        # only on a CPU: on a GPU the bank is cheap, and the equality check would force a
        # host sync inside an epoch captured as a CUDA graph.
        if images.requires_grad or images.device.type != "cpu":
            return self._features(images)
        for seen, features in self._memo:
            if seen.shape == images.shape and seen.dtype == images.dtype and torch.equal(seen, images):
                return features
        features = self._features(images)
        # Inference tensors cannot take part in training, so none is kept.
        if not torch.is_inference_mode_enabled() and features.numel() <= MEMO_MAX_VALUES:
            self._memo = [(images.detach().clone(), features), *self._memo[: MEMO_SIZE - 1]]
        return features

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        half = self.filters.shape[-1] // 2 + self.window // 2
        padded = F.pad(images, (half,) * 4, mode="replicate")
        last = self.grid_start + self.grid_step * (self.grid_size - 1)
        # Only the rows and columns the sampled windows need (every position's kernel reaches them).
        region = padded[..., self.grid_start : last + 2 * half + 1, self.grid_start : last + 2 * half + 1]
        responses = F.conv2d(region, self.filters)
        even, odd = responses[:, 0::2], responses[:, 1::2]
        energy = torch.sqrt(even.square() + odd.square() + 1e-6)
        features = torch.cat([energy, F.relu(even), F.relu(-even), F.relu(odd), F.relu(-odd)], dim=1)
        features = F.avg_pool2d(features, self.window, self.grid_step)
        pool = features[:, : energy.shape[1]].mean(dim=1, keepdim=True)
        return features / (SEMISATURATION + pool)

    def extra_repr(self) -> str:
        return (
            f"n_features={self.n_features}, grid={self.grid_size}×{self.grid_size} from px {self.grid_start} "
            f"every {self.grid_step} px"
        )
