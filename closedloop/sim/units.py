"""The stimulus-to-drive stage of each simulated unit type.

Every unit turns the image contrast ``c = image - 0.5`` into a non-negative raw
drive ``d``; the population then maps ``d`` to a rate with a calibrated
saturating power law (see `output_rates`).

- simple: a Gabor filter, half-wave rectified: ``d = max(<g, c>, 0)``.
- complex: energy of a quadrature Gabor pair: ``d = sqrt(<g_even, c>² + <g_odd, c>²)``.
- centre_surround: a difference of Gaussians, ON (+1) or OFF (-1), rectified.
- texture: local energy of a small quadrature filter at one orientation/SF band,
  pooled over the whole plane (so over the whole aperture).  By Parseval that is
  the image's power in the band, ``d = sqrt(Σ_k W(k) |C(k)|²)``, which does not
  change when a texture moves anywhere inside the aperture.  It has no localised
  linear receptive field.
- weak: RMS contrast in a broad Gaussian window (untuned), with a small gain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from closedloop.sim.aperture import GREY, centred_coordinates, fit_to_grid

#: Gabor envelope across the bars is n_x / SF with n_x drawn from this range (Ringach 2002) ...
CYCLES_ACROSS_RANGE = (0.3, 0.55)
#: ... the envelope along the bars is this many times longer ...
ASPECT_RANGE = (1.0, 2.0)
#: ... and neither exceeds this (deg), so parafoveal RFs stay inside a 1.25° aperture.
MAX_GABOR_SIGMA_DEG = (0.22, 0.3)
#: Centre sigma of centre-surround units (deg), surround/centre size ratio, surround weight.
CENTRE_SIGMA_RANGE_DEG = (0.04, 0.08)
SURROUND_RATIO_RANGE = (2.5, 3.5)
SURROUND_WEIGHT_RANGE = (0.7, 0.9)
#: Texture units' local filter has an envelope of this many cycles (sets the band width).
TEXTURE_CYCLES = 0.4
#: Weak units pool contrast energy in a Gaussian window of this sigma (deg).
WEAK_POOL_SIGMA_DEG = 0.35
#: RF centres stay within this radius (deg) of the grid centre.
MAX_RF_ECCENTRICITY_DEG = 0.3


@dataclass(frozen=True)
class UnitFilters:
    """The linear stages of all units, precomputed on the population's grid.

    Attributes
    ----------
    even
        (n_units, size_px²) primary filter: the simple cell's Gabor, the complex
        cell's even-phase Gabor, the DoG (times polarity); zeros for texture and
        weak units.
    odd
        (n_units, size_px²) quadrature partner of complex cells; zeros otherwise.
    texture_weights
        (n_texture, n_freq) band weights over the padded image's rfft2 bins,
        already multiplied by the half-plane folding factor.
    texture_units
        (n_texture,) unit indices of the texture units.
    weak_windows
        (n_weak, size_px²) pooling windows (each sums to 1).
    weak_units
        (n_weak,) unit indices of the weak units.
    fft_side
        Side of the zero-padded FFT grid of the texture stage.
    """

    even: np.ndarray
    odd: np.ndarray
    texture_weights: np.ndarray
    texture_units: np.ndarray
    weak_windows: np.ndarray
    weak_units: np.ndarray
    fft_side: int


def draw_unit_parameters(
    types: np.ndarray, centres_deg: np.ndarray, sf_range: tuple[float, float], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Draw the spatial parameters of every unit; NaN where a parameter does not apply.

    Every parameter is drawn for every unit (and then blanked) so the random
    stream does not depend on the type mix.
    """
    n = len(types)
    orientation = rng.uniform(0.0, 180.0, n)
    sf = np.exp(rng.uniform(np.log(sf_range[0]), np.log(sf_range[1]), n))
    phase = rng.uniform(0.0, 360.0, n)
    sigma_across = np.minimum(rng.uniform(*CYCLES_ACROSS_RANGE, n) / sf, MAX_GABOR_SIGMA_DEG[0])
    sigma_along = np.minimum(sigma_across * rng.uniform(*ASPECT_RANGE, n), MAX_GABOR_SIGMA_DEG[1])
    centre_sigma = rng.uniform(*CENTRE_SIGMA_RANGE_DEG, n)
    surround_sigma = centre_sigma * rng.uniform(*SURROUND_RATIO_RANGE, n)
    surround_weight = rng.uniform(*SURROUND_WEIGHT_RANGE, n)
    polarity = np.where(rng.random(n) < 0.5, 1.0, -1.0)

    gabor = np.isin(types, ("simple", "complex"))
    tuned_band = gabor | (types == "texture")
    dog = types == "centre_surround"
    nan = np.full(n, np.nan)
    return {
        "x_deg": centres_deg[:, 0].copy(),
        "y_deg": centres_deg[:, 1].copy(),
        "orientation_deg": np.where(tuned_band, orientation, nan),
        "sf_cpd": np.where(tuned_band, sf, nan),
        "phase_deg": np.where(types == "simple", phase, np.where(types == "complex", 0.0, nan)),
        "sigma_across_deg": np.where(gabor, sigma_across, np.where(types == "texture", TEXTURE_CYCLES / sf, nan)),
        "sigma_along_deg": np.where(gabor, sigma_along, nan),
        "centre_sigma_deg": np.where(dog, centre_sigma, nan),
        "surround_sigma_deg": np.where(dog, surround_sigma, nan),
        "surround_weight": np.where(dog, surround_weight, nan),
        "polarity": np.where(dog, polarity, 0.0),
    }


def _unit_norm(filters: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(filters, axis=-1, keepdims=True)
    return filters / np.where(norms > 0, norms, 1.0)


def gabor(
    x_px: np.ndarray,
    y_px: np.ndarray,
    ppd: float,
    orientation_deg: float,
    sf_cpd: float,
    phase_deg: float,
    sigma_across_deg: float,
    sigma_along_deg: float,
) -> np.ndarray:
    """A zero-mean, unit-norm Gabor in the grating convention of `closedloop.sim.gratings`."""
    theta = np.deg2rad(orientation_deg)
    across = -np.sin(theta) * x_px + np.cos(theta) * y_px
    along = np.cos(theta) * x_px + np.sin(theta) * y_px
    envelope = np.exp(-0.5 * (across / (sigma_across_deg * ppd)) ** 2 - 0.5 * (along / (sigma_along_deg * ppd)) ** 2)
    carrier = envelope * np.cos(2.0 * np.pi * sf_cpd * across / ppd + np.deg2rad(phase_deg))
    # Remove the DC under the envelope so mean luminance drives nothing.
    carrier -= envelope * (carrier.sum() / envelope.sum())
    return _unit_norm(carrier.ravel()).reshape(carrier.shape)


def difference_of_gaussians(
    x_px: np.ndarray,
    y_px: np.ndarray,
    ppd: float,
    centre_sigma_deg: float,
    surround_sigma_deg: float,
    surround_weight: float,
) -> np.ndarray:
    """Unit-norm centre-minus-surround filter; the surround integrates to ``surround_weight`` of the centre."""
    r2 = x_px**2 + y_px**2
    centre = np.exp(-0.5 * r2 / (centre_sigma_deg * ppd) ** 2)
    surround = np.exp(-0.5 * r2 / (surround_sigma_deg * ppd) ** 2)
    dog = centre / centre.sum() - surround_weight * surround / surround.sum()
    return _unit_norm(dog.ravel()).reshape(dog.shape)


def _texture_band(fft_side: int, ppd: float, orientation_deg: float, sf_cpd: float, sigma_deg: float) -> np.ndarray:
    """Band weights on the rfft2 grid (rows: y-down frequency, cols: x frequency), in cycles/px."""
    fy_down = np.fft.fftfreq(fft_side)[:, None]
    fx = np.fft.rfftfreq(fft_side)[None, :]
    theta = np.deg2rad(orientation_deg)
    # Carrier direction (-sin θ, cos θ) with y up is (-sin θ, -cos θ) in (x, y-down) coordinates.
    k0x, k0y = -np.sin(theta) * sf_cpd / ppd, -np.cos(theta) * sf_cpd / ppd
    sigma_k = 1.0 / (2.0 * np.pi * sigma_deg * ppd)
    plus = ((fx - k0x) ** 2 + (fy_down - k0y) ** 2) / (2 * sigma_k**2)
    minus = ((fx + k0x) ** 2 + (fy_down + k0y) ** 2) / (2 * sigma_k**2)
    weights = np.exp(-plus) + np.exp(-minus)
    # Each rfft column except 0 and Nyquist stands for itself and its mirror image.
    fold = np.full(fx.shape, 2.0)
    fold[:, 0] = 1.0
    if fft_side % 2 == 0:
        fold[:, -1] = 1.0
    return (weights * fold).ravel()


def build_filters(types: np.ndarray, params: dict[str, np.ndarray], size_px: int, ppd: float) -> UnitFilters:
    """Precompute every unit's filters on a ``size_px`` grid at ``ppd`` pixels/degree."""
    n = len(types)
    x, y = centred_coordinates(size_px)
    even = np.zeros((n, size_px * size_px))
    odd = np.zeros((n, size_px * size_px))
    fft_side = 2 * size_px  # zero padding keeps the filter's halo from wrapping round
    texture_units = np.flatnonzero(types == "texture")
    weak_units = np.flatnonzero(types == "weak")
    texture_weights = np.zeros((len(texture_units), fft_side * (fft_side // 2 + 1)))
    weak_windows = np.zeros((len(weak_units), size_px * size_px))
    for u in range(n):
        dx, dy = x - params["x_deg"][u] * ppd, y - params["y_deg"][u] * ppd
        kind = types[u]
        if kind in ("simple", "complex"):
            args = (params["orientation_deg"][u], params["sf_cpd"][u])
            sigmas = (params["sigma_across_deg"][u], params["sigma_along_deg"][u])
            even[u] = gabor(dx, dy, ppd, *args, params["phase_deg"][u], *sigmas).ravel()
            if kind == "complex":
                odd[u] = gabor(dx, dy, ppd, *args, params["phase_deg"][u] + 90.0, *sigmas).ravel()
        elif kind == "centre_surround":
            dog = difference_of_gaussians(
                dx,
                dy,
                ppd,
                params["centre_sigma_deg"][u],
                params["surround_sigma_deg"][u],
                params["surround_weight"][u],
            )
            even[u] = params["polarity"][u] * dog.ravel()
    for row, unit in enumerate(texture_units):
        texture_weights[row] = _texture_band(
            fft_side, ppd, params["orientation_deg"][unit], params["sf_cpd"][unit], params["sigma_across_deg"][unit]
        )
    for row, unit in enumerate(weak_units):
        r2 = (x - params["x_deg"][unit] * ppd) ** 2 + (y - params["y_deg"][unit] * ppd) ** 2
        window = np.exp(-0.5 * r2 / (WEAK_POOL_SIGMA_DEG * ppd) ** 2)
        weak_windows[row] = (window / window.sum()).ravel()
    return UnitFilters(even, odd, texture_weights, texture_units, weak_windows, weak_units, fft_side)


def raw_drive(
    images: np.ndarray, types: np.ndarray, filters: UnitFilters, size_px: int, chunk: int = 256
) -> np.ndarray:
    """Non-negative raw drive of every unit to every image (before calibration).

    Parameters
    ----------
    images
        (H, W) or (n, H, W) in [0, 1]; centre-cropped or grey-padded to the grid.

    Returns
    -------
    (n, n_units) float64.
    """
    contrast = fit_to_grid(images, size_px).reshape(-1, size_px * size_px) - GREY
    even = contrast @ filters.even.T
    odd = contrast @ filters.odd.T
    drive = np.zeros_like(even)
    simple = types == "simple"
    drive[:, simple] = np.maximum(even[:, simple], 0.0)
    complex_ = types == "complex"
    drive[:, complex_] = np.hypot(even[:, complex_], odd[:, complex_])
    centre_surround = types == "centre_surround"
    drive[:, centre_surround] = np.maximum(even[:, centre_surround], 0.0)
    if len(filters.weak_units):
        drive[:, filters.weak_units] = np.sqrt((contrast**2) @ filters.weak_windows.T)
    if len(filters.texture_units):
        side = filters.fft_side
        for start in range(0, len(contrast), chunk):
            block = contrast[start : start + chunk].reshape(-1, size_px, size_px)
            power = np.abs(np.fft.rfft2(block, s=(side, side))) ** 2
            band = power.reshape(len(block), -1) @ filters.texture_weights.T
            drive[start : start + chunk, filters.texture_units] = np.sqrt(np.maximum(band, 0.0)) / side
    return drive


#: Semi-saturation of the output nonlinearity, in units of the calibrated drive.
SEMISATURATION = 1.5


def output_rates(
    scaled_drive: np.ndarray, spontaneous_hz: np.ndarray, amplitude_hz: np.ndarray, exponent: np.ndarray
) -> np.ndarray:
    """Saturating power law from calibrated drive to sustained rate.

    ``rate = spont + amp · h(x) / h(1)`` with ``h(x) = x^p / (x^p + s^p)`` and
    ``s = SEMISATURATION``: a unit fires ``spont + amp`` at drive 1 (its top natural
    images) and never more than ``spont + amp · (1 + s^p)``.
    """
    x_p = np.maximum(scaled_drive, 0.0) ** exponent
    s_p = SEMISATURATION**exponent
    return spontaneous_hz + amplitude_hz * (1.0 + s_p) * x_p / (x_p + s_p)


class ClassicStage:
    """The classic family's drive stage: LN filters and energy models (see module notes).

    Parameters
    ----------
    types
        (n_units,) unit types from `closedloop.sim.spec.UNIT_TYPES`.
    params
        Spatial parameters from `draw_unit_parameters`.
    size_px, ppd
        The population's grid and pixel scale.
    """

    def __init__(self, types: np.ndarray, params: dict[str, np.ndarray], size_px: int, ppd: float):
        self.types = types
        self.size_px = size_px
        self.filters = build_filters(types, params, size_px, ppd)
        self.localised = np.isin(types, ("simple", "complex", "centre_surround"))

    def raw(self, images: np.ndarray) -> np.ndarray:
        """Non-negative raw drive, (n, n_units)."""
        return raw_drive(images, self.types, self.filters, self.size_px)

    def receptive_fields(self) -> np.ndarray:
        """Linear filters, (n_units, size_px²); zeros for units without one."""
        return self.filters.even
