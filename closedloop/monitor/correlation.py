"""Pearson correlations of predicted vs measured rates, per unit and pooled, NaN-aware."""

from __future__ import annotations

import numpy as np

#: Fewer (stimulus, unit) pairs than this and a correlation is not reported.
MIN_PAIRS = 3


def correlations(measured: np.ndarray, predicted: np.ndarray) -> tuple[float, float, np.ndarray, int]:
    """Correlations over the cells where both are finite.

    Parameters
    ----------
    measured, predicted
        (n_stimuli, n_units) rates; NaN where unknown.

    Returns
    -------
    pooled
        Pearson r over every (stimulus, unit) pair together (the population scatter).
    median
        Median over units of each unit's r.
    per_unit
        (n_units,) each unit's r over stimuli; NaN with fewer than `MIN_PAIRS` pairs or
        a constant side.
    n_pairs
        Pairs used for ``pooled``.
    """
    both = np.isfinite(measured) & np.isfinite(predicted)
    n_pairs = int(both.sum())
    pooled = pearson(measured[both], predicted[both])
    count = both.sum(axis=0)
    m = np.where(both, measured, 0.0)
    p = np.where(both, predicted, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_m, mean_p = m.sum(axis=0) / count, p.sum(axis=0) / count
        dm, dp = np.where(both, m - mean_m, 0.0), np.where(both, p - mean_p, 0.0)
        cov, var_m, var_p = (dm * dp).sum(axis=0), (dm * dm).sum(axis=0), (dp * dp).sum(axis=0)
        per_unit = cov / np.sqrt(var_m * var_p)
    per_unit = np.where((count >= MIN_PAIRS) & (var_m > 0) & (var_p > 0), per_unit, np.nan)
    median = float(np.nanmedian(per_unit)) if np.isfinite(per_unit).any() else float("nan")
    return pooled, median, per_unit, n_pairs


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two 1-D arrays; NaN with fewer than `MIN_PAIRS` values or a constant side."""
    if x.size < MIN_PAIRS or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])
