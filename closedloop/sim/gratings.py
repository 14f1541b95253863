"""Sinusoidal gratings, and the three pvc-8 grating sets in pvc-8's stimulus order.

Orientation convention (used by the simulated units too): ``orientation_deg`` is
the orientation of the bars, counter-clockwise from horizontal with y pointing up
(0 = horizontal bars, 90 = vertical bars).  Luminance varies along the unit
vector ``(-sin θ, cos θ)``; ``phase_deg`` is the phase of the cosine at the grid
centre, so phase 0 puts a bright bar through the centre.

pvc-8 sets (MATLAB column-major order, so phase varies fastest):

- SF set, 128 images: [4 phases × 4 orientations × 8 SF], SF = 2**(-2:0.7:3.5) c/deg.
- Orientation set, 64 images: [4 phases × 16 orientations], 90° down to -78.75°.
- Size set, 224 images: [4 phases × 2 (disc, annulus) × 7 radii × 4 orientations],
  radii round(2**(-1.56:0.7:2.64) · 48) px.

Phases are 0, 90, 180, 270°; the four orientations of the SF and size sets are
90, 45, 0, -45° (descending, like the orientation set).  The orientation and size
sets use one spatial frequency, ``pref_sf_cpd`` (default 2 c/deg, the middle of
parafoveal V1's preferred range, on a log scale, of 1–4 c/deg).  SF and
orientation gratings fill the natural-image aperture; size-set discs fill
``radius_px`` and annuli everything outside it.
"""

from __future__ import annotations

import numpy as np

from closedloop.sim.aperture import DEFAULT_EDGE_PX, GREY, centred_coordinates, soft_disc

PHASES_DEG = np.array([0.0, 90.0, 180.0, 270.0])
SF_SET_CPD = 2.0 ** np.arange(-2.0, 3.51, 0.7)
ORIENTATION_SET_DEG = 90.0 - 11.25 * np.arange(16)
FOUR_ORIENTATIONS_DEG = np.array([90.0, 45.0, 0.0, -45.0])
SIZE_SET_RADII_PX = np.round(2.0 ** np.arange(-1.56, 2.6401, 0.7) * 48.0)
DEFAULT_PREF_SF_CPD = 2.0

#: dtype of the parameter record that comes with every grating set.
GRATING_PARAMS_DTYPE = np.dtype(
    [
        ("set", "U11"),
        ("orientation_deg", "f8"),
        ("phase_deg", "f8"),
        ("sf_cpd", "f8"),
        ("radius_px", "f8"),
        ("annulus", "?"),
    ]
)


def grating(
    size_px: int,
    pixels_per_degree: float,
    orientation_deg: float,
    phase_deg: float,
    sf_cpd: float,
    radius_px: float | None = None,
    annulus: bool = False,
    contrast: float = 1.0,
    aperture_diameter_px: float = 60.0,
    edge_px: float = DEFAULT_EDGE_PX,
) -> np.ndarray:
    """One sinusoidal grating on a grey background.

    Parameters
    ----------
    size_px
        Side of the square image.
    pixels_per_degree
        Pixel scale.
    orientation_deg, phase_deg, sf_cpd
        Bar orientation (see module notes), phase at the centre, spatial frequency.
    radius_px
        Radius of the grating disc (or of the annulus hole); ``None`` uses the
        aperture, ``aperture_diameter_px / 2``.
    annulus
        Show the grating outside ``radius_px`` (to the image edge) instead of inside.
    contrast
        Michelson contrast in [0, 1].
    aperture_diameter_px, edge_px
        Default aperture and the width of the soft edge.

    Returns
    -------
    (size_px, size_px) float32 in [0, 1].
    """
    x, y = centred_coordinates(size_px)
    radius = aperture_diameter_px / 2.0 if radius_px is None else float(radius_px)
    return _draw(x, y, pixels_per_degree, orientation_deg, phase_deg, sf_cpd, radius, annulus, contrast, edge_px)


def _draw(x, y, ppd, orientation_deg, phase_deg, sf_cpd, radius, annulus, contrast, edge_px) -> np.ndarray:
    theta = np.deg2rad(orientation_deg)
    along = -np.sin(theta) * x + np.cos(theta) * y
    carrier = np.cos(2.0 * np.pi * sf_cpd * along / ppd + np.deg2rad(phase_deg))
    window = soft_disc(radius, np.hypot(x, y), edge_px)
    if annulus:
        window = 1.0 - window
    return (GREY + GREY * contrast * window * carrier).astype(np.float32)


def _render(records: list[tuple], canvas_px: int, ppd: float, edge_px: float) -> tuple[np.ndarray, np.ndarray]:
    params = np.array(records, dtype=GRATING_PARAMS_DTYPE)
    x, y = centred_coordinates(canvas_px)
    images = np.empty((len(params), canvas_px, canvas_px), dtype=np.float32)
    for i, p in enumerate(params):
        images[i] = _draw(
            x,
            y,
            ppd,
            p["orientation_deg"],
            p["phase_deg"],
            p["sf_cpd"],
            p["radius_px"],
            bool(p["annulus"]),
            1.0,
            edge_px,
        )
    return images, params


def sf_grating_set(
    canvas_px: int = 320,
    pixels_per_degree: float = 48.0,
    aperture_diameter_px: float = 60.0,
    edge_px: float = DEFAULT_EDGE_PX,
) -> tuple[np.ndarray, np.ndarray]:
    """pvc-8's 128 SF gratings: [4 phases × 4 orientations × 8 SF], phase fastest.

    Returns
    -------
    images
        (128, canvas_px, canvas_px) float32.
    params
        (128,) structured array of `GRATING_PARAMS_DTYPE`.
    """
    radius = aperture_diameter_px / 2.0
    records = [("sf", o, p, sf, radius, False) for sf in SF_SET_CPD for o in FOUR_ORIENTATIONS_DEG for p in PHASES_DEG]
    return _render(records, canvas_px, pixels_per_degree, edge_px)


def orientation_grating_set(
    canvas_px: int = 320,
    pixels_per_degree: float = 48.0,
    sf_cpd: float = DEFAULT_PREF_SF_CPD,
    aperture_diameter_px: float = 60.0,
    edge_px: float = DEFAULT_EDGE_PX,
) -> tuple[np.ndarray, np.ndarray]:
    """pvc-8's 64 orientation gratings: [4 phases × 16 orientations], phase fastest."""
    radius = aperture_diameter_px / 2.0
    records = [("orientation", o, p, sf_cpd, radius, False) for o in ORIENTATION_SET_DEG for p in PHASES_DEG]
    return _render(records, canvas_px, pixels_per_degree, edge_px)


def size_grating_set(
    canvas_px: int = 320,
    pixels_per_degree: float = 48.0,
    sf_cpd: float = DEFAULT_PREF_SF_CPD,
    edge_px: float = DEFAULT_EDGE_PX,
) -> tuple[np.ndarray, np.ndarray]:
    """pvc-8's 224 size gratings: [4 phases × 2 (disc, annulus) × 7 radii × 4 orientations]."""
    records = [
        ("size", o, p, sf_cpd, r, annulus)
        for o in FOUR_ORIENTATIONS_DEG
        for r in SIZE_SET_RADII_PX
        for annulus in (False, True)
        for p in PHASES_DEG
    ]
    return _render(records, canvas_px, pixels_per_degree, edge_px)


def pvc8_grating_sets(
    canvas_px: int = 320,
    pixels_per_degree: float = 48.0,
    pref_sf_cpd: float = DEFAULT_PREF_SF_CPD,
    aperture_diameter_px: float = 60.0,
    edge_px: float = DEFAULT_EDGE_PX,
) -> tuple[np.ndarray, np.ndarray]:
    """All 416 pvc-8 gratings in pvc-8 order: SF (128), orientation (64), size (224).

    Together they are stimuli 540–955 (0-based) of a pvc-8 file.  At the default
    320-px canvas the images take 170 MB; pass a smaller ``canvas_px`` when the
    population's grid is all that is needed (the centre crop is identical).

    Returns
    -------
    images
        (416, canvas_px, canvas_px) float32 in [0, 1].
    params
        (416,) structured array with fields ``set`` ("sf", "orientation",
        "size"), ``orientation_deg``, ``phase_deg``, ``sf_cpd``, ``radius_px``,
        ``annulus``.
    """
    parts = [
        sf_grating_set(canvas_px, pixels_per_degree, aperture_diameter_px, edge_px),
        orientation_grating_set(canvas_px, pixels_per_degree, pref_sf_cpd, aperture_diameter_px, edge_px),
        size_grating_set(canvas_px, pixels_per_degree, pref_sf_cpd, edge_px),
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
