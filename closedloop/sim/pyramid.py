"""A brain built from someone else's code and fitted parameters (plenoptic).

The other families' filters are ours.  This one's are taken from `plenoptic`
(Simoncelli lab; Duong et al. 2023), so a fit tuned on our own Gabor units is judged
on filters it was not shaped around:

- ``simple`` and ``complex`` units read one band of plenoptic's complex steerable
  pyramid (Simoncelli & Freeman 1995; 4 orientations, the bands peaking near 3.3 and
  1.7 cycles/deg at the pvc-8 pixel scale).  A simple unit is the half-wave rectified
  real part of the coefficient at its phase, a complex unit its modulus (energy).
  Their tuning (polar-separable: an octave per band, cos³ in orientation) is not a
  Gabor's.
- ``centre_surround`` units read the ON or OFF channel of plenoptic's ``OnOff`` model
  with the parameters Berardino et al. (2017) fitted to human perceptual judgements:
  difference-of-Gaussians centre-surround filters followed by luminance and contrast
  gain control.  It runs on the image averaged over 3 × 3 pixels, which puts its ON
  centre at about 0.07 deg; a unit's drive is its channel's rise above the grey screen's.

Every unit is read at its RF centre through a small Gaussian window on its map.  The
population's calibrated output nonlinearity, time course and spiking are shared with
the other families.  plenoptic is an optional dependency (``pip install
'closedloop[pyramid]'``); building this family without it says so.
"""

from __future__ import annotations

import numpy as np

from closedloop.errors import ClosedLoopError
from closedloop.sim.aperture import GREY, fit_to_grid
from closedloop.sim.readout import gaussian_windows

#: Pyramid bands read: at 66 px (4 bands, the most it allows) band 2 peaks near 3.3, band 3 near 1.7 cycles/deg.
PYRAMID_HEIGHT = 4
BANDS = (2, 3)
ORIENTATIONS = 4
#: The OnOff model runs on the image averaged over this many pixels (its fitted ON centre is 1.2 px).
ONOFF_POOL = 3
ONOFF_KERNEL = 31
#: Readout window sigma, in pixels of the map read.
READOUT_SIGMA_PX = 0.8
CHUNK = 64


def _plenoptic():
    try:
        import plenoptic
    except ImportError:
        raise ClosedLoopError(
            "the 'pyramid' family is built from plenoptic's models, which are not installed: "
            "pip install 'closedloop[pyramid]' (or pip install plenoptic)"
        ) from None
    return plenoptic


def draw_pyramid_parameters(types: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Band, orientation and phase of every pyramid unit, ON/OFF channel of every centre-surround unit."""
    n = len(types)
    pyramid = np.isin(types, ("simple", "complex"))
    surround = types == "centre_surround"
    return {
        "band": np.where(pyramid, rng.choice(BANDS, n), np.nan),
        "orientation_deg": np.where(pyramid, rng.integers(0, ORIENTATIONS, n) * 180.0 / ORIENTATIONS, np.nan),
        "phase_deg": np.where(types == "simple", rng.uniform(0.0, 360.0, n), np.nan),
        "polarity": np.where(surround, rng.choice((1.0, -1.0), n), np.nan),
    }


class PyramidStage:
    """Drive stage of the pyramid family (see module notes).

    Parameters
    ----------
    types
        (n_units,) ``"simple"``, ``"complex"`` or ``"centre_surround"``.
    params
        ``x_deg``/``y_deg`` RF centres and the draws of `draw_pyramid_parameters`.
    size_px, ppd
        The population's grid and pixel scale.
    """

    def __init__(self, types: np.ndarray, params: dict[str, np.ndarray], size_px: int, ppd: float):
        import torch

        plenoptic = _plenoptic()
        self.size_px = size_px
        self.types = np.asarray(types)
        self.localised = np.zeros(len(types), dtype=bool)  # no linear RF to hand out
        self.band = np.nan_to_num(params["band"]).astype(np.int64)
        self.orientation = np.nan_to_num(params["orientation_deg"] * ORIENTATIONS / 180.0).round().astype(np.int64)
        self.phase = np.deg2rad(np.nan_to_num(params["phase_deg"]))
        self.channel = (np.nan_to_num(params["polarity"]) < 0).astype(np.int64)  # OnOff: 0 = ON, 1 = OFF
        self.pyramid = plenoptic.process.SteerablePyramidFreq(
            (size_px, size_px), height=PYRAMID_HEIGHT, order=ORIENTATIONS - 1, is_complex=True
        )
        self.onoff = plenoptic.models.OnOff(ONOFF_KERNEL, pretrained=True, cache_filt=True)
        self.onoff.requires_grad_(False)
        self.grey = self._onoff_maps(np.full((1, size_px, size_px), GREY))
        # each map's side as the models make it at this image size
        with torch.no_grad():
            bands = self.pyramid(torch.zeros(1, 1, size_px, size_px, dtype=torch.float64))
        sides: dict[int | str, int] = {band: bands[band].shape[-1] for band in BANDS}
        sides["onoff"] = self.grey.shape[-1]
        x, y = params["x_deg"], params["y_deg"]
        self.windows = {key: gaussian_windows(x, y, n, size_px, ppd, READOUT_SIGMA_PX) for key, n in sides.items()}

    def _onoff_maps(self, images: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            pooled = F.avg_pool2d(torch.from_numpy(images[:, None]).float(), ONOFF_POOL)
            return self.onoff(pooled).double().numpy()

    def raw(self, images: np.ndarray) -> np.ndarray:
        """Non-negative drive, (n, n_units)."""
        import torch

        batch = np.asarray(images, dtype=np.float64)
        batch = fit_to_grid(batch[None] if batch.ndim == 2 else batch, self.size_px)
        out = np.zeros((len(batch), len(self.types)))
        for start in range(0, len(batch), CHUNK):
            chunk = batch[start : start + CHUNK]
            with torch.no_grad():
                bands = self.pyramid(torch.from_numpy(chunk[:, None] - GREY))
            for band in BANDS:
                units = np.flatnonzero((self.band == band) & np.isin(self.types, ("simple", "complex")))
                if len(units) == 0:
                    continue
                coefficients = bands[band][:, 0].numpy()  # (n, orientations, side, side), complex
                maps = coefficients[:, self.orientation[units]].reshape(len(chunk), len(units), -1)
                simple = self.types[units] == "simple"
                # a simple unit's linear response at its phase, a complex unit's local amplitude
                rotated = (maps * np.exp(-1j * self.phase[units])[None, :, None]).real
                read = np.where(simple[None, :, None], rotated, np.abs(maps))
                drive = np.einsum("nup,up->nu", read, self.windows[band][units])
                out[start : start + CHUNK, units] = np.where(simple[None], np.maximum(drive, 0.0), drive)
            units = np.flatnonzero(self.types == "centre_surround")
            if len(units):
                rise = np.maximum(self._onoff_maps(chunk) - self.grey, 0.0)
                maps = rise[:, self.channel[units]].reshape(len(chunk), len(units), -1)
                out[start : start + CHUNK, units] = np.einsum("nup,up->nu", maps, self.windows["onoff"][units])
        return out

    def receptive_fields(self) -> np.ndarray:
        """Not handed out (see ``localised``): zeros, (n_units, size_px²)."""
        return np.zeros((len(self.types), self.size_px * self.size_px))
