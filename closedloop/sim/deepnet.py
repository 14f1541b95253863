"""A task-free multi-layer convolutional "brain" read out at several depths.

A seeded random network in the spirit of the random-feature and untrained-CNN
models of V1 (e.g. Cadena et al. 2019 report that even random deep features
predict V1 well): it is *not* the model class we fit, so it tests whether the fit
generalises to units made by another mechanism.

1. A Gabor bank at full resolution (4 orientations x 2 spatial frequencies, in
   quadrature): each pair gives a complex (energy) channel and a rectified simple
   channel, 16 channels in all, divided by the local mean energy over all
   channels (divisive normalisation), then averaged over 3 x 3 pixels.
2. A random 5 x 5 convolution 16 -> 16 with rectification, then 2 x 2 averaging.
3. A random 3 x 3 convolution 16 -> 16 with rectification.

A ``layerK`` unit reads one channel of layer K through a small Gaussian spatial
window at its RF centre.  Everything is float64 and seeded; the same seed gives
the same network and the same rates.
"""

from __future__ import annotations

import numpy as np

from closedloop.sim.aperture import GREY, centred_coordinates, fit_to_grid
from closedloop.sim.readout import gaussian_windows
from closedloop.sim.units import gabor

ORIENTATIONS_DEG = (0.0, 45.0, 90.0, 135.0)
SF_CPD = (2.0, 4.0)
#: Envelope sigma of the layer-1 Gabors, in cycles of their carrier.
CYCLES_PER_SIGMA = 0.45
CHANNELS = 16
POOL_1, POOL_2 = 3, 2
#: Semi-saturation of layer 1's normalisation, in squared amplitude of a grating.
L1_SEMISATURATION = 0.01
#: Readout window sigma, in pixels of the layer read.
READOUT_SIGMA_PX = 0.8
#: Batch size, to bound memory.
CHUNK = 64


def draw_deep_parameters(types: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Depth (1-3) and channel of every unit."""
    depth = np.array([int(t[-1]) for t in types], dtype=np.int64)
    return {"depth": depth.astype(np.float64), "channel": rng.integers(0, CHANNELS, len(types)).astype(np.float64)}


class DeepStage:
    """Drive stage of the deep family (see module notes).

    Parameters
    ----------
    types
        (n_units,) ``"layer1"``, ``"layer2"`` or ``"layer3"``.
    params
        ``x_deg``/``y_deg`` RF centres, ``depth`` and ``channel``.
    size_px, ppd
        The population's grid and pixel scale.
    rng
        Draws the random weights of layers 2 and 3.
    """

    def __init__(
        self, types: np.ndarray, params: dict[str, np.ndarray], size_px: int, ppd: float, rng: np.random.Generator
    ):
        self.size_px = size_px
        self.localised = np.zeros(len(types), dtype=bool)
        self.depth = params["depth"].astype(np.int64)
        self.channel = params["channel"].astype(np.int64)
        x, y = centred_coordinates(size_px)
        bank = []
        for sf in SF_CPD:
            for orientation in ORIENTATIONS_DEG:
                sigma = CYCLES_PER_SIGMA / sf
                for phase in (0.0, 90.0):
                    bank.append(gabor(x, y, ppd, orientation, sf, phase, sigma, sigma))
        # Filters centred on the grid; shifted so the FFT product is a 'same' convolution.  The
        # padding just keeps the wrapped halo off the output (size + size/2 + 1), rounded up to 4.
        self.side = -(-(size_px + size_px // 2 + 1) // 4) * 4
        padded = np.zeros((len(bank), self.side, self.side))
        padded[:, :size_px, :size_px] = np.array(bank)
        padded = np.roll(padded, (-(size_px // 2), -(size_px // 2)), axis=(1, 2))
        self.bank_fft = np.fft.rfft2(padded)
        self.w2 = rng.normal(0.0, np.sqrt(2.0 / (CHANNELS * 25)), (CHANNELS, CHANNELS, 5, 5))
        self.w3 = rng.normal(0.0, np.sqrt(2.0 / (CHANNELS * 9)), (CHANNELS, CHANNELS, 3, 3))
        sizes = {1: size_px // POOL_1, 2: size_px // POOL_1 // POOL_2, 3: size_px // POOL_1 // POOL_2}
        self.readout = {
            depth: gaussian_windows(params["x_deg"], params["y_deg"], sizes[depth], size_px, ppd, READOUT_SIGMA_PX)
            for depth in (1, 2, 3)
        }

    def layers(self, images: np.ndarray) -> list[np.ndarray]:
        """Activations of the three layers, each (n, CHANNELS, side, side)."""
        import torch
        import torch.nn.functional as F

        contrast = fit_to_grid(images, self.size_px) - GREY
        spectrum = np.fft.rfft2(contrast, s=(self.side, self.side))
        linear = np.fft.irfft2(spectrum[:, None] * self.bank_fft[None], s=(self.side, self.side))
        linear = linear[:, :, : self.size_px, : self.size_px]
        even, odd = linear[:, 0::2], linear[:, 1::2]
        energy = even**2 + odd**2
        norm = L1_SEMISATURATION + energy.mean(axis=1, keepdims=True)
        layer1 = np.concatenate([np.sqrt(energy), np.maximum(even, 0.0)], axis=1) / np.sqrt(norm)
        with torch.no_grad():
            t1 = F.avg_pool2d(torch.from_numpy(layer1), POOL_1)
            t2 = F.avg_pool2d(F.relu(F.conv2d(t1, torch.from_numpy(self.w2), padding=2)), POOL_2)
            t3 = F.relu(F.conv2d(t2, torch.from_numpy(self.w3), padding=1))
        return [t1.numpy(), t2.numpy(), t3.numpy()]

    def raw(self, images: np.ndarray) -> np.ndarray:
        """Non-negative drive, (n, n_units)."""
        batch = np.asarray(images)
        batch = batch[None] if batch.ndim == 2 else batch
        out = np.zeros((len(batch), len(self.depth)))
        for start in range(0, len(batch), CHUNK):
            acts = self.layers(batch[start : start + CHUNK])
            for depth in (1, 2, 3):
                units = np.flatnonzero(self.depth == depth)
                if len(units) == 0:
                    continue
                act = acts[depth - 1]
                maps = act[:, self.channel[units]].reshape(len(act), len(units), -1)
                out[start : start + CHUNK, units] = np.einsum("nup,up->nu", maps, self.readout[depth][units])
        return out

    def receptive_fields(self) -> np.ndarray:
        """No linear receptive field: zeros, (n_units, size_px²)."""
        return np.zeros((len(self.depth), self.size_px * self.size_px))
