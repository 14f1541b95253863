"""Cell characterisation: image selectivity and orientation tuning (docs/methods.md, Model, Fig. 3).

Kindel et al. (2019) group units by circular variance of their grating responses and ask
how well the CNN and the linear baseline predict each group.  Every function is
vectorised over units and returns NaN where a property is undefined (docstrings say
when), without numpy warnings.  Rates are used as given (Hz are non-negative); a
baseline-subtracted input with negative values is not clipped, so the indices may then
leave [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

SELECTIVE = "selective"
INTERMEDIATE = "intermediate"
NONSELECTIVE = "nonselective"
UNDEFINED = "undefined"
GROUP_ORDER = (SELECTIVE, INTERMEDIATE, NONSELECTIVE, UNDEFINED)


def _two_d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return x[:, None]
    if x.ndim != 2:
        raise ValueError(f"expected (n_stimuli,) or (n_stimuli, n_units), got shape {x.shape}")
    return x


def image_selectivity(mean_rates: np.ndarray) -> np.ndarray:
    """Image selectivity (Vinje–Gallant sparseness), per unit.

    S = [1 − (Σ_i A_i / N)² / (Σ_i A_i² / N)] / (1 − 1/N): 0 when every image drives the
    unit equally, 1 when a single image does.

    Parameters
    ----------
    mean_rates
        (n_images, n_units) mean rate per image (NaN images are left out per unit).

    Returns
    -------
    (n_units,) selectivity; 0-d for 1-D input.  NaN where the unit never fires
    (Σ A² = 0) or fewer than two images are finite.
    """
    a = _two_d(mean_rates)
    mask = np.isfinite(a)
    n = mask.sum(0)
    a = np.where(mask, a, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_sq = (a.sum(0) / n) ** 2
        sq_mean = (a * a).sum(0) / n
        value = (1.0 - mean_sq / sq_mean) / (1.0 - 1.0 / n)
    value = np.where((n >= 2) & (sq_mean > 0), value, np.nan)
    return value[0] if np.ndim(mean_rates) == 1 else value


def circular_variance(orientations_deg: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Orientation circular variance 1 − |Σ_θ A_θ e^{2iθ}| / Σ_θ A_θ, per unit.

    0 for a response to a single orientation, 1 for equal responses at evenly spaced
    orientations.  The doubled angle makes θ and θ + 180° the same orientation.

    Parameters
    ----------
    orientations_deg
        (n_orientations,) grating orientation in degrees.
    rates
        (n_orientations, n_units) mean rate per orientation (NaN entries left out).

    Returns
    -------
    (n_units,) circular variance; 0-d for 1-D ``rates``.  NaN where Σ_θ A_θ ≤ 0 (no
    response, so no preferred orientation).
    """
    theta = np.deg2rad(np.asarray(orientations_deg, dtype=np.float64))
    a = _two_d(rates)
    if theta.ndim != 1 or theta.shape[0] != a.shape[0]:
        raise ValueError(f"{theta.shape} orientations do not match rates of shape {np.shape(rates)}")
    a = np.where(np.isfinite(a), a, 0.0)
    resultant = np.abs((a * np.exp(2j * theta)[:, None]).sum(0))
    total = a.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = 1.0 - resultant / total
    value = np.where(total > 0, value, np.nan)
    return value[0] if np.ndim(rates) == 1 else value


def orientation_groups(cv: np.ndarray, selective_below: float = 0.6, nonselective_above: float = 0.75) -> np.ndarray:
    """Label units by circular variance as in Kindel et al. (2019).

    Returns
    -------
    (n_units,) str array: ``"selective"`` (CV < ``selective_below``),
    ``"nonselective"`` (CV > ``nonselective_above``), ``"intermediate"`` otherwise, and
    ``"undefined"`` where CV is NaN.
    """
    if not selective_below <= nonselective_above:
        raise ValueError(
            f"selective_below ({selective_below}) must not exceed nonselective_above ({nonselective_above})"
        )
    cv = np.asarray(cv, dtype=np.float64)
    labels = np.full(cv.shape, INTERMEDIATE, dtype="<U12")
    labels[cv < selective_below] = SELECTIVE
    labels[cv > nonselective_above] = NONSELECTIVE
    labels[np.isnan(cv)] = UNDEFINED
    return labels


def _nan_mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def _nan_sem(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.std(ddof=1) / np.sqrt(x.size)) if x.size >= 2 else float("nan")


def group_summary(
    groups: np.ndarray,
    r: np.ndarray,
    r_linear: np.ndarray | None = None,
    rmax: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Mean r, r_linear and rmax per orientation group (the paper's Fig. 3B).

    Parameters
    ----------
    groups
        (n_units,) labels from `orientation_groups`.
    r, r_linear, rmax
        (n_units,) per-unit values; ``r_linear`` and ``rmax`` may be omitted.

    Returns
    -------
    ``{group: {"n", "mean_r", "sem_r", "mean_r_linear", "mean_rmax"}}`` for each group
    present, in the order selective, intermediate, nonselective, undefined.  Means skip
    NaN units; a mean over no finite value (or an omitted input) is NaN.
    """
    groups = np.asarray(groups)
    columns = {"r": np.asarray(r, dtype=np.float64)}
    for name, values in (("r_linear", r_linear), ("rmax", rmax)):
        columns[name] = np.full(groups.shape, np.nan) if values is None else np.asarray(values, dtype=np.float64)
    for name, values in columns.items():
        if values.shape != groups.shape:
            raise ValueError(f"{name} has shape {values.shape}, groups {groups.shape}")
    summary: dict[str, dict[str, float]] = {}
    for label in GROUP_ORDER:
        members = groups == label
        if not members.any():
            continue
        summary[label] = {
            "n": int(members.sum()),
            "mean_r": _nan_mean(columns["r"][members]),
            "sem_r": _nan_sem(columns["r"][members]),
            "mean_r_linear": _nan_mean(columns["r_linear"][members]),
            "mean_rmax": _nan_mean(columns["rmax"][members]),
        }
    return summary


@dataclass(frozen=True)
class CellProperties:
    """Per-unit characterisation, (n_units,) each, and the CV thresholds used.

    ``circular_variance`` is all NaN and every group ``"undefined"`` when the recording
    has no grating responses.
    """

    image_selectivity: np.ndarray
    circular_variance: np.ndarray
    groups: np.ndarray
    selective_below: float = 0.6
    nonselective_above: float = 0.75

    def to_dict(self) -> dict[str, object]:
        """Plain lists for JSON (NaN becomes ``None``)."""

        def floats(x: np.ndarray) -> list[float | None]:
            return [float(v) if np.isfinite(v) else None for v in x]

        return {
            "image_selectivity": floats(self.image_selectivity),
            "circular_variance": floats(self.circular_variance),
            "groups": [str(g) for g in self.groups],
            "selective_below": self.selective_below,
            "nonselective_above": self.nonselective_above,
        }


def characterise(
    mean_rates: np.ndarray,
    orientations_deg: np.ndarray | None = None,
    grating_rates: np.ndarray | None = None,
    *,
    selective_below: float = 0.6,
    nonselective_above: float = 0.75,
) -> CellProperties:
    """Image selectivity, circular variance and orientation group of every unit.

    Parameters
    ----------
    mean_rates
        (n_images, n_units) mean rates to natural images.
    orientations_deg, grating_rates
        Grating orientations (n_orientations,) and mean rates (n_orientations, n_units),
        e.g. from `closedloop.data.dataset.GratingResponses`; omit both when the
        recording has no gratings.
    selective_below, nonselective_above
        Circular-variance thresholds (see `orientation_groups`).
    """
    selectivity = np.atleast_1d(image_selectivity(mean_rates))
    n_units = selectivity.shape[0]
    if (orientations_deg is None) != (grating_rates is None):
        raise ValueError("give both orientations_deg and grating_rates, or neither")
    if orientations_deg is None or grating_rates is None:  # both or neither, checked above
        cv = np.full(n_units, np.nan)
    else:
        cv = np.atleast_1d(circular_variance(orientations_deg, grating_rates))
        if cv.shape[0] != n_units:
            raise ValueError(f"grating rates cover {cv.shape[0]} units, mean rates {n_units}")
    return CellProperties(
        image_selectivity=selectivity,
        circular_variance=cv,
        groups=orientation_groups(cv, selective_below, nonselective_above),
        selective_below=float(selective_below),
        nonselective_above=float(nonselective_above),
    )
