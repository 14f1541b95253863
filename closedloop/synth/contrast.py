"""The default contrast bounds of synthesized images: the natural images' own RMS contrast.

Without a bound, "max" images run to black-and-white patterns far outside the
contrast the model was fitted on, where its predictions are extrapolations (on
simulated V1 the model then predicts two to three times the true rate).  The fit
records the RMS-contrast distribution of its fit images (`contrast_statistics`);
synthesis caps every image's RMS contrast at a high quantile of it by default
(`default_bound`), which `closedloop synth --contrast` overrides and which is
recorded in the stimulus library with where it came from.

The same default raises fainter images to a low quantile of it (`FLOOR_QUANTILE`), so every
image's contrast lies in the photographs' range.  Grown from the blank screen, rate targets
were otherwise reached at low contrast, where a model fitted to photographs misjudges its
gain: on six simulated brains (benchmarks/generalise.py, two fit splits) percentile targets
and the true rates correlated at 0.78-0.91 pooled over units, and with the floor at 0.83-0.94
(at least 0.9 on four brains), for a median per-unit r lower by up to 0.05.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: The default bound is this quantile of the fit images' RMS contrast.
DEFAULT_QUANTILE = 0.95
#: The default floor is this quantile of it.
FLOOR_QUANTILE = 0.05
#: Quantiles recorded by `contrast_statistics`.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
#: A pixel is inside the aperture when it varies across the images by more than this.
_VARYING = 1e-4


def rms_contrast(images: np.ndarray) -> np.ndarray:
    """(n,) RMS contrast of each image inside the aperture (pixels that vary across the set)."""
    images = np.asarray(images, dtype=np.float64)
    inside = images.std(axis=0) > _VARYING
    if not inside.any():
        return np.zeros(len(images))
    return images[:, inside].std(axis=1)


def contrast_statistics(images: np.ndarray) -> dict:
    """Quantiles of the images' RMS contrast, as the fit records them (plain JSON data)."""
    rms = rms_contrast(images)
    return {
        "rms_contrast_quantiles": {f"{q:g}": float(np.quantile(rms, q)) for q in QUANTILES} if rms.size else {},
        "n_images": int(len(images)),
    }


def default_bound(statistics: Mapping | None, quantile: float = DEFAULT_QUANTILE) -> float | None:
    """The RMS-contrast cap from recorded statistics, or ``None`` when none were recorded."""
    try:
        value = float(statistics["rms_contrast_quantiles"][f"{quantile:g}"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def natural_bounds(statistics: Mapping | None) -> tuple[float | None, float | None]:
    """The default (cap, floor): the `DEFAULT_QUANTILE` and `FLOOR_QUANTILE` of the recorded
    RMS contrast, or ``(None, None)`` when none was recorded."""
    cap = default_bound(statistics)
    return (None, None) if cap is None else (cap, default_bound(statistics, FLOOR_QUANTILE))
