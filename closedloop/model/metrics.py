"""How well predicted rates match measured ones, per unit (docs/methods.md, Model).

Conventions shared by every function here:

- ``trials`` is (n_images, n_repeats, n_units) in Hz, NaN where a repeat is missing;
  ``pred`` and ``mean`` are (n_images, n_units).  A 1-D ``pred``/``mean`` (or 2-D
  ``trials``) is one unit and gives a 0-d result.
- Results are per-unit float arrays.  A metric that is undefined for a unit is NaN
  there (the docstrings say when), computed without numpy warnings.
- Images a unit has no finite value for are left out of that unit's metric.
- Variances across images use ``ddof=1``; trial (within-image) variances use ``ddof=1``.

`closedloop.model.report.evaluate` bundles these into the `MetricsReport` a fit writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: How much of the rates a prediction interval (promise ± k·√(spread² + se²)) is meant to hold.
INTERVAL_LEVEL = 0.95

# --------------------------------------------------------------------------------------
# masked statistics: NaN-aware, warning-free, vectorised over every axis but `axis`


def _as_units(x: np.ndarray, ndim: int) -> np.ndarray:
    """View ``x`` with a trailing unit axis (a single unit becomes n_units = 1)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == ndim - 1:
        return x[..., None]
    if x.ndim != ndim:
        raise ValueError(f"expected a {ndim - 1}-D or {ndim}-D array, got shape {x.shape}")
    return x


def _unit_result(value: np.ndarray, like: np.ndarray, ndim: int) -> np.ndarray:
    """Undo `_as_units`: a single unit gives a 0-d array back."""
    return value[..., 0] if np.ndim(like) == ndim - 1 else value


def _masked_mean(x: np.ndarray, mask: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    n = mask.sum(axis=axis)
    total = np.where(mask, x, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _masked_var(x: np.ndarray, mask: np.ndarray, axis: int | tuple[int, ...], ddof: int) -> np.ndarray:
    n = mask.sum(axis=axis)
    centred = np.where(mask, x - np.expand_dims(_masked_mean(x, mask, axis), axis), 0.0)
    ss = (centred * centred).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > ddof, ss / np.maximum(n - ddof, 1), np.nan)


def _masked_is_constant(x: np.ndarray, mask: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    # max == min is exact; a variance of identical floats can come out as 1e-33.
    high = np.where(mask, x, -np.inf).max(axis=axis)
    low = np.where(mask, x, np.inf).min(axis=axis)
    return ~(high > low)


def _masked_pearson(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Correlation along axis 0; NaN with < 2 points or a constant side."""
    dx = np.where(mask, x - _masked_mean(x, mask, 0), 0.0)
    dy = np.where(mask, y - _masked_mean(y, mask, 0), 0.0)
    sxy, sxx, syy = (dx * dy).sum(0), (dx * dx).sum(0), (dy * dy).sum(0)
    defined = ~(_masked_is_constant(x, mask, 0) | _masked_is_constant(y, mask, 0))
    defined &= mask.sum(0) >= 2
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sxy / np.sqrt(sxx * syy)
    return np.where(defined, np.clip(r, -1.0, 1.0), np.nan)


def _check_pred(pred: np.ndarray, trials: np.ndarray) -> None:
    if pred.shape != (trials.shape[0], trials.shape[2]):
        raise ValueError(
            f"pred has shape {pred.shape}; trials {trials.shape} need (n_images, n_units) = "
            f"{(trials.shape[0], trials.shape[2])}"
        )


@dataclass(frozen=True)
class _TrialStats:
    """Per image and unit: repeat count, mean and within-image variance."""

    valid: np.ndarray  # (n_images, n_repeats, n_units) finite entries
    counts: np.ndarray  # (n_images, n_units) repeats recorded
    means: np.ndarray  # (n_images, n_units) NaN where no repeat
    variances: np.ndarray  # (n_images, n_units) ddof=1, NaN where < 2 repeats


def _trial_stats(trials: np.ndarray) -> _TrialStats:
    valid = np.isfinite(trials)
    return _TrialStats(
        valid=valid,
        counts=valid.sum(axis=1),
        means=_masked_mean(trials, valid, 1),
        variances=_masked_var(trials, valid, 1, ddof=1),
    )


def _pooled_noise_variance(stats: _TrialStats) -> np.ndarray:
    """Pooled within-image variance per unit, Σ_i SS_i / Σ_i (R_i − 1).

    With equal repeats this is mean_i Var_r(y_ir) (docs/methods.md, Metrics); with unequal repeats it
    weights each image by its degrees of freedom, the usual unbiased pooled estimate.
    NaN when no image has two repeats.
    """
    dof = np.maximum(stats.counts - 1, 0)
    ss = np.where(dof > 0, stats.variances * dof, 0.0).sum(0)
    total_dof = dof.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total_dof > 0, ss / np.maximum(total_dof, 1), np.nan)


# --------------------------------------------------------------------------------------
# prediction vs trial means


def trial_means(trials: np.ndarray) -> np.ndarray:
    """Mean over recorded repeats, (n_images, n_units); NaN where an image has none.

    The same as ``np.nanmean(trials, axis=1)`` without its all-NaN warning.
    """
    return _unit_result(_trial_stats(_as_units(trials, 3)).means, trials, 3)


def pearson_r(pred: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Pearson correlation between predicted and measured mean rates, per unit.

    Parameters
    ----------
    pred, mean
        (n_images, n_units) predicted and measured (trial-averaged) rates.

    Returns
    -------
    (n_units,) r.  NaN where fewer than two images are finite in both, or where either
    side is constant over images.
    """
    p, m = _as_units(pred, 2), _as_units(mean, 2)
    if p.shape != m.shape:
        raise ValueError(f"pred {p.shape} and mean {m.shape} differ in shape")
    return _unit_result(_masked_pearson(p, m, np.isfinite(p) & np.isfinite(m)), pred, 2)


def fve(pred: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Fraction of the variance of the measured means explained: 1 − SSE / SST, per unit.

    SSE = Σ_i (ȳ_i − ŷ_i)², SST = Σ_i (ȳ_i − mean(ȳ))².  Negative when the prediction is
    worse than the constant mean.  NaN where the measured means are constant (SST = 0)
    or fewer than two images are finite.
    """
    p, m = _as_units(pred, 2), _as_units(mean, 2)
    if p.shape != m.shape:
        raise ValueError(f"pred {p.shape} and mean {m.shape} differ in shape")
    mask = np.isfinite(p) & np.isfinite(m)
    sse = np.where(mask, (m - p) ** 2, 0.0).sum(0)
    centred = np.where(mask, m - _masked_mean(m, mask, 0), 0.0)
    sst = (centred * centred).sum(0)
    defined = ~_masked_is_constant(m, mask, 0) & (mask.sum(0) >= 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = 1.0 - sse / sst
    return _unit_result(np.where(defined, value, np.nan), pred, 2)


# --------------------------------------------------------------------------------------
# noise ceilings


def rmax_kindel(trials: np.ndarray, n_draws: int = 100, seed: int = 0) -> np.ndarray:
    """Kindel et al. (2019, §2.3) ceiling on r: how well noisy re-measurements correlate.

    For each draw, a fake mean per image is the mean of R Gaussian trials with the
    measured mean and trial variance (R = that image's repeat count), drawn directly as
    ȳ_i + N(0, s_i² / R_i), which has the same distribution.  rmax is the correlation of
    the fake means with the measured means, averaged over ``n_draws`` draws from a
    generator seeded with ``seed``.

    Images with a single repeat have no trial variance of their own; they use the unit's
    pooled trial variance so that rmax covers the same images as r.

    Returns
    -------
    (n_units,) rmax.  NaN where the measured means are constant, fewer than two images
    have data, or no image has two repeats.
    """
    if n_draws < 1:
        raise ValueError(f"n_draws must be at least 1, got {n_draws}")
    t = _as_units(trials, 3)
    stats = _trial_stats(t)
    variances = np.where(stats.counts >= 2, stats.variances, _pooled_noise_variance(stats))
    with np.errstate(invalid="ignore", divide="ignore"):
        sem = np.sqrt(variances / stats.counts)
    mask = (stats.counts > 0) & np.isfinite(sem)
    means = np.where(mask, stats.means, 0.0)
    sem = np.where(mask, sem, 0.0)
    rng = np.random.default_rng(seed)
    total = np.zeros(means.shape[1])
    for _ in range(n_draws):  # one draw at a time keeps memory at one (n_images, n_units)
        fake = means + sem * rng.standard_normal(means.shape)
        total += _masked_pearson(fake, means, mask)
    return _unit_result(total / n_draws, trials, 3)


def _signal_power_parts(trials: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signal power and the variance of the trial means it is compared with (CCmax).

    Units whose images all have the same repeat count R ≥ 2 use Schoppe et al.'s (2016)
    formula exactly: SP = [Var_i(Σ_r y_ir) − Σ_r Var_i(y_ir)] / (R(R−1)), on repeats
    packed to the front (repeat order carries no meaning for a shuffled image set).

    Units with unequal repeat counts cannot pair "repeat r" across images, so they use
    the method-of-moments form of the same quantity, SP = Var_i(ȳ_i) − mean_i(s_i² / R_i),
    over images with R_i ≥ 2.  Both are unbiased for the variance of the expected rate
    (E Var_i(ȳ) = signal + mean_i σ_i²/R_i); with image-independent noise the second is
    the "harmonic-mean R" estimate Var(ȳ) − σ²/R_harm, and unlike dropping incomplete
    images it keeps all the data when, e.g., synthesized images got fewer repeats.
    """
    stats = _trial_stats(trials)
    present = stats.counts > 0
    r_max = stats.counts.max(0)
    r_min = np.where(present, stats.counts, r_max).min(0)
    equal = (r_min == r_max) & (r_max >= 2)

    # Schoppe: pack each image's recorded repeats to the front so column r is "repeat r"
    order = np.argsort(~stats.valid, axis=1, kind="stable")
    packed = np.take_along_axis(trials, order, axis=1)
    packed_valid = np.take_along_axis(stats.valid, order, axis=1)
    column_var = _masked_var(packed, packed_valid, 0, ddof=1)  # (n_repeats, n_units)
    column_used = packed_valid.any(axis=0)
    sum_column_var = np.where(column_used, column_var, 0.0).sum(0)
    var_sum = _masked_var(np.where(packed_valid, packed, 0.0).sum(1), present, 0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        schoppe = (var_sum - sum_column_var) / (r_max * (r_max - 1.0))
    var_means_all = _masked_var(stats.means, present, 0, ddof=1)

    # unequal repeats: method of moments over images with a trial variance
    repeated = stats.counts >= 2
    var_means_repeated = _masked_var(stats.means, repeated, 0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        noise_of_means = _masked_mean(stats.variances / stats.counts, repeated, 0)
    moments = var_means_repeated - noise_of_means

    signal_power = np.where(equal, schoppe, moments)
    var_means = np.where(equal, var_means_all, var_means_repeated)
    # exact checks: rounding can leave ~1e-30 instead of 0, and a ratio of two such
    # leftovers would be a meaningless CCmax
    all_equal = _masked_is_constant(trials, stats.valid, (0, 1)) & (stats.counts.sum(0) >= 2)
    signal_power = np.where(all_equal, 0.0, signal_power)
    var_means = np.where(_masked_is_constant(stats.means, present, 0), np.nan, var_means)
    return signal_power, var_means


def signal_power(trials: np.ndarray) -> np.ndarray:
    """Schoppe et al. (2016) signal power per unit, in Hz² (see `_signal_power_parts`).

    Can be ≤ 0 for units whose responses are mostly noise; exactly 0 when every trial is
    equal.  NaN where fewer than two images have at least two repeats.
    """
    return _unit_result(_signal_power_parts(_as_units(trials, 3))[0], trials, 3)


def cc_max(trials: np.ndarray) -> np.ndarray:
    """Schoppe et al.'s ceiling on the correlation with the means: √(SP / Var_i(ȳ)).

    NaN where SP ≤ 0 or undefined.  May exceed 1 by sampling error when SP happens to
    exceed Var_i(ȳ); it is not clipped so that averages stay unbiased.
    """
    sp, var_means = _signal_power_parts(_as_units(trials, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.sqrt(sp / var_means)
    return _unit_result(np.where(sp > 0, value, np.nan), trials, 3)


def cc_norm(pred: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """Normalised correlation CCabs / CCmax (Schoppe et al. 2016), per unit.

    CCabs is `pearson_r` of ``pred`` with the trial means over every image with data;
    CCmax comes from `cc_max`.  NaN where CCmax is undefined (SP ≤ 0) or r is.  Not
    clipped: sampling error can put it slightly above 1.
    """
    t = _as_units(trials, 3)
    p = _as_units(pred, 2)
    _check_pred(p, t)
    cc_abs = pearson_r(p, _trial_stats(t).means)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = cc_abs / cc_max(t)
    return _unit_result(value, pred, 2)


def _total_and_noise_variance(trials: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    stats = _trial_stats(trials)
    total = _masked_var(trials, stats.valid, (0, 1), ddof=0)
    constant = _masked_is_constant(trials, stats.valid, (0, 1))
    return total, _pooled_noise_variance(stats), constant


def fev(trials: np.ndarray) -> np.ndarray:
    """Fraction of explainable variance (V − σ²_n) / V, per unit.

    V is the variance over all recorded trials (ddof=0, so that predicting the grand mean
    gives FEVE = 0 exactly); σ²_n is the pooled trial variance (`_pooled_noise_variance`).
    NaN where every trial is equal or no image has two repeats.
    """
    total, noise, constant = _total_and_noise_variance(_as_units(trials, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (total - noise) / total
    return _unit_result(np.where(constant, np.nan, value), trials, 3)


def feve(pred: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """Fraction of explainable variance explained, 1 − (MSE − σ²_n) / (V − σ²_n), per unit.

    MSE is over single trials, (y_ir − ŷ_i)², over images where ``pred`` is finite (V and
    σ²_n are computed on the same trials).  Predicting the true expected rate gives ≈ 1;
    predicting the measured means gives slightly more (they fit part of the noise).
    NaN where V − σ²_n ≤ 0 (no explainable variance) or V/σ²_n are undefined.
    """
    t = _as_units(trials, 3)
    p = _as_units(pred, 2)
    _check_pred(p, t)
    t = np.where(np.isfinite(p)[:, None, :], t, np.nan)
    valid = np.isfinite(t)
    mse = _masked_mean((t - p[:, None, :]) ** 2, valid, (0, 1))
    total, noise, _ = _total_and_noise_variance(t)
    explainable = total - noise
    with np.errstate(invalid="ignore", divide="ignore"):
        value = 1.0 - (mse - noise) / explainable
    return _unit_result(np.where(explainable > 0, value, np.nan), pred, 2)


# --------------------------------------------------------------------------------------
# which units to fit and to trust


DEFAULT_MIN_FEV = 0.0
"""Default FEV floor for ``reliable``: none, beyond the test of `RELIABLE_IMAGE_P`.

A floor on the single-trial FEV (this was 0.15) means different things at different repeat
counts: on simulated V1 with 20 repeats it dropped units whose trial means were well measured
(rmax 0.87–0.91) but hard to fit, which flattered the means over reliable units.  Labs that
want one set it with ``min_fev``.
"""

RELIABLE_IMAGE_P = 1e-3
"""A reliable unit's trial means depend on the image: one-way ANOVA across images, p below this.

The units it drops carry no detectable signal in these trials: their rmax is near 1/√2,
what noise alone gives (`image_dependence_p`), so their r/rmax says nothing about a model.
"""


def image_dependence_p(trials: np.ndarray) -> np.ndarray:
    """p-value of a one-way ANOVA of each unit's trials across images, (n_units,).

    Small when the unit's mean rate differs between images more than its trial-to-trial
    variability explains.  A unit whose responses do not depend on the image gives trial
    means that vary by noise alone; then rmax (which adds the same noise again) is near
    1/√2.  NaN with fewer than two images with trials or no image with two repeats; 1
    where every image's mean is the same.
    """
    t = _as_units(trials, 3)
    p = _anova_p(_trial_stats(t))
    return _unit_result(p, trials, 3)


def _anova_p(stats: _TrialStats) -> np.ndarray:
    """`image_dependence_p` from per-image trial statistics (see there)."""
    from scipy.special import fdtrc  # the F distribution's survival function; scipy only here

    present = stats.counts > 0
    n = stats.counts.sum(0)
    groups = present.sum(0)
    means = np.where(present, stats.means, 0.0)
    # The within-image mean square is the pooled noise variance (its dof is n - groups).
    noise = _pooled_noise_variance(stats)
    with np.errstate(invalid="ignore", divide="ignore"):
        grand = (stats.counts * means).sum(0) / np.maximum(n, 1)
        between = (stats.counts * (means - grand) ** 2 * present).sum(0)
        df_between, df_within = groups - 1, n - groups
        f = (between / np.maximum(df_between, 1)) / noise
        p = np.where(
            noise > 0,
            fdtrc(np.maximum(df_between, 1), np.maximum(df_within, 1), np.nan_to_num(f, posinf=1e300)),
            np.where(between > 0, 0.0, 1.0),
        )
    return np.where((df_between >= 1) & (df_within >= 1), p, np.nan)


@dataclass(frozen=True)
class UnitMasks:
    """Boolean masks over units (n_units,) that fitting and reports use.

    Attributes
    ----------
    silent
        No spike on any recorded trial (or no recorded trial at all).
    constant
        The same mean rate for every image (silent units included).  Eq. 1 of the paper
        divides by var_i(A_n), so these units cannot be fitted.
    reliable
        Not constant, signal power > 0, the trial means depend on the image
        (`image_dependence_p` below `RELIABLE_IMAGE_P`) and FEV ≥ ``min_fev``.
    min_fev
        The FEV floor used for ``reliable``.
    """

    silent: np.ndarray
    constant: np.ndarray
    reliable: np.ndarray
    min_fev: float

    @property
    def fittable(self) -> np.ndarray:
        """Units fitting can use (not constant)."""
        return ~self.constant


def unit_masks(trials: np.ndarray, *, min_fev: float = DEFAULT_MIN_FEV) -> UnitMasks:
    """Classify units as silent, constant and reliable (see `UnitMasks`).

    Parameters
    ----------
    trials
        (n_images, n_repeats, n_units) rates in Hz, NaN for missing repeats.
    min_fev
        FEV a unit needs to count as reliable, in [0, 1) (`DEFAULT_MIN_FEV`).
    """
    if not 0.0 <= min_fev < 1.0:
        raise ValueError(f"min_fev must be in [0, 1), got {min_fev}")
    t = _as_units(trials, 3)
    stats = _trial_stats(t)
    fires = (np.where(stats.valid, t, 0.0) != 0).any(axis=(0, 1))
    present = stats.counts > 0
    constant = _masked_is_constant(stats.means, present, 0) | (present.sum(0) < 2)
    depends = _anova_p(stats) < RELIABLE_IMAGE_P
    reliable = (signal_power(t) > 0) & depends & (fev(t) >= min_fev)  # NaN compares False
    return UnitMasks(silent=~fires, constant=constant, reliable=reliable & ~constant, min_fev=float(min_fev))


def exclusion_warning(masks: UnitMasks, unit_ids: np.ndarray | None = None) -> str | None:
    """A one-line warning naming the units fitting must leave out, or ``None`` if none.

    Parameters
    ----------
    masks
        From `unit_masks`.
    unit_ids
        Ids to name the units by; positions are used when omitted.
    """
    n_units = masks.constant.shape[0]
    ids = np.arange(n_units) if unit_ids is None else np.asarray(unit_ids)
    silent = ids[masks.silent]
    flat = ids[masks.constant & ~masks.silent]
    if silent.size == 0 and flat.size == 0:
        return None

    def listing(values: np.ndarray) -> str:
        shown = ", ".join(str(v) for v in values[:10])
        return shown + (f", … ({values.size - 10} more)" if values.size > 10 else "")

    parts = []
    if silent.size:
        parts.append(f"{silent.size} never fire (ids {listing(silent)})")
    if flat.size:
        parts.append(f"{flat.size} have the same mean rate for every image (ids {listing(flat)})")
    return f"of {n_units} units, " + " and ".join(parts) + "; they are left out of fitting"


# --------------------------------------------------------------------------------------
# the ensemble's spread against the misses


def error_over_spread(
    predicted: np.ndarray, actual: np.ndarray, spread: np.ndarray, noise_se: np.ndarray | None = None
) -> float:
    """How far predicted rates miss, in units of the ensemble's spread: rms(actual − predicted) / rms(spread).

    One figure pooled over every value given (unlike the per-unit metrics above).

    Parameters
    ----------
    predicted, spread
        The predicted (or promised) rates and the ensemble members' std around them (Hz),
        any shape.
    actual
        What the neurons gave, the same shape: exact (true) or measured mean rates (Hz).
    noise_se
        The standard error of each measured rate (``None`` for exact rates). Its mean square
        is taken off the mean squared miss, so measurement noise does not count as a miss: the
        result then estimates what the exact rates would give.

    Returns
    -------
    float
        1 when the spread is an honest error bar (rates miss by as much as the members
        disagree), 2 when they miss by twice that; NaN when no image has all values finite
        or the spread is zero.
    """
    columns = [np.asarray(v, dtype=np.float64) for v in (predicted, actual, spread)]
    columns.append(np.zeros_like(columns[0]) if noise_se is None else np.asarray(noise_se, dtype=np.float64))
    known = np.logical_and.reduce([np.isfinite(c) for c in columns])
    if not known.any():
        return float("nan")
    predicted, actual, spread, se = (c[known] for c in columns)
    miss_squared = max(float(np.mean((actual - predicted) ** 2 - se**2)), 0.0)
    spread_squared = float(np.mean(spread**2))
    return float(np.sqrt(miss_squared / spread_squared)) if spread_squared > 0 else float("nan")


def heldout_error_over_spread(pred: np.ndarray, spread: np.ndarray, trials: np.ndarray) -> float:
    """`error_over_spread` of predictions against trial means, each mean's noise taken off.

    ``pred`` and ``spread`` are (n_images, n_units): the ensemble's prediction and its
    members' std; each image's standard error is its trial std (``ddof=1``) over √repeats,
    so images with fewer than two repeats are left out.
    """
    means, se = _means_and_standard_errors(trials)
    return error_over_spread(pred, means, spread, se)


def interval_sds(
    predicted: np.ndarray,
    actual: np.ndarray,
    spread: np.ndarray,
    noise_se: np.ndarray | None = None,
    level: float = INTERVAL_LEVEL,
) -> float:
    """The factor k of a split-conformal prediction interval, predicted ± k·√(spread² + se²).

    Each miss is scaled by its own uncertainty, √(spread² + se²): the ensemble's spread and the
    measured mean's standard error. The scaled misses are sorted and the ⌈(n + 1)·level⌉-th
    smallest is k, so a new measured mean whose scaled miss comes from the same distribution lies
    within predicted ± k·√(spread² + se²) with probability at least ``level``. The noise term keeps
    images the members all predict silent (spread near 0, measured rate off by noise alone) from
    setting k. The misses are heavy-tailed, so k is larger than the 1.96 a normal would give.

    Parameters
    ----------
    predicted, actual, spread
        Promised rates, what the neurons gave (measured means, or exact rates with ``noise_se``
        ``None``) and the members' std (Hz), any shape.
    noise_se
        The standard error of each measured mean (``None``: exact rates, no noise).
        Values with a non-finite entry or a zero scale are left out.
    level
        The fraction of rates the interval should hold, in (0, 1).

    Returns
    -------
    float
        k; NaN when fewer than ``level / (1 − level)`` values are known (19 for 0.95), too few
        for the quantile.
    """
    return _conformal_quantile(scaled_misses(predicted, actual, spread, noise_se), level)


def _conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ⌈(n + 1)·level⌉-th smallest of n scores; NaN when there are too few."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rank = math.ceil((scores.size + 1) * level)
    return float(np.sort(scores)[rank - 1]) if rank <= scores.size else float("nan")


def scaled_misses(
    predicted: np.ndarray, actual: np.ndarray, spread: np.ndarray, noise_se: np.ndarray | None = None
) -> np.ndarray:
    """|actual − predicted| / √(spread² + se²), flat, over the values where all are known and the
    scale is positive (`interval_sds`'s scores; their count is how many it drew on)."""
    predicted, actual, spread = (np.asarray(v, dtype=np.float64).ravel() for v in (predicted, actual, spread))
    scale = interval_halfwidths(1.0, spread, None if noise_se is None else np.ravel(noise_se))
    known = np.isfinite(predicted) & np.isfinite(actual) & np.isfinite(scale) & (scale > 0)
    return np.abs(actual[known] - predicted[known]) / scale[known]


def interval_halfwidths(k: float | np.ndarray, spread: np.ndarray, noise_se: np.ndarray | None = None) -> np.ndarray:
    """The interval's half-widths, k·√(spread² + se²) (k one factor or one per value; ``noise_se``
    ``None``: exact rates, se 0)."""
    spread = np.asarray(spread, dtype=np.float64)
    se = np.zeros_like(spread) if noise_se is None else np.asarray(noise_se, dtype=np.float64)
    with np.errstate(over="ignore"):  # a hostile spread or k: an infinite half-width, never drawn
        return k * np.hypot(spread, se)


def fraction_within(predicted: np.ndarray, actual: np.ndarray, half_width: np.ndarray) -> float:
    """The fraction of ``actual`` rates within ``predicted ± half_width``, over the values where all
    three are known (NaN: none)."""
    predicted, actual, half_width = (np.asarray(v, dtype=np.float64) for v in (predicted, actual, half_width))
    known = np.isfinite(predicted) & np.isfinite(actual) & np.isfinite(half_width)
    return float(np.mean(np.abs(actual - predicted)[known] <= half_width[known])) if known.any() else float("nan")


def heldout_interval_sds(
    pred: np.ndarray, spread: np.ndarray, trials: np.ndarray, level: float = INTERVAL_LEVEL
) -> float:
    """`interval_sds` of predictions against the held-out images' trial means and their standard
    errors (trial std over √repeats; images with one repeat left out), pooled over images and units
    (``pred`` and ``spread`` (n_images, n_units))."""
    means, se = _means_and_standard_errors(trials)
    return interval_sds(pred, means, spread, se, level)


def heldout_top_ratio(pred: np.ndarray, trials: np.ndarray) -> float:
    """The median over units of the measured / predicted rate at each unit's top-predicted held-out
    image: how far to trust a rate the model puts at the top of its range.

    Picking an image for its high prediction also picks the model's over-estimates there (the
    optimiser's curse), and a fit that shrinks its extremes under-predicts there; both show on the
    held-out photographs, where the measured rates are known.  A "max" image's prediction times this
    ratio is what synthesis promises for it (`closedloop.synth.interval.max_promise_hz`).

    Parameters
    ----------
    pred
        (n_images, n_units) predictions for the held-out images.
    trials
        (n_images, n_trials, n_units) their measured rates (NaN: no trial).

    Returns
    -------
    float
        The ratio; NaN when no unit has a positive top prediction with a measured mean.
    """
    pred = np.asarray(pred, dtype=np.float64)
    means = trial_means(np.asarray(trials, dtype=np.float64))
    if pred.ndim != 2 or pred.shape != means.shape or pred.size == 0:
        raise ValueError(f"pred {pred.shape} and the trial means {means.shape} must be the same (n_images, n_units)")
    top = np.argmax(np.where(np.isfinite(pred), pred, -np.inf), axis=0)
    units = np.arange(pred.shape[1])
    predicted, measured = pred[top, units], means[top, units]
    known = np.isfinite(predicted) & np.isfinite(measured) & (predicted > 0)
    return float(np.median(measured[known] / predicted[known])) if known.any() else float("nan")


def promise_ratio(top_ratio: float | None) -> float:
    """What a "max" image is promised over its prediction: the `heldout_top_ratio` of the model that
    made it when that is a positive number, else 1 (the prediction itself)."""
    return float(top_ratio) if top_ratio is not None and math.isfinite(top_ratio) and top_ratio > 0 else 1.0


def _means_and_standard_errors(trials: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each image's trial mean and its standard error, trial std (``ddof=1``) over √repeats (NaN
    with one repeat)."""
    stats = _trial_stats(_as_units(trials, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return stats.means, np.sqrt(stats.variances / stats.counts)


def calibrated_interval_sds(
    predicted: np.ndarray,
    actual: np.ndarray,
    spread: np.ndarray,
    noise_se: np.ndarray | None,
    fallback: float,
    level: float = INTERVAL_LEVEL,
) -> tuple[float, int]:
    """k for new images: `interval_sds` of earlier images' misses when there are enough of them,
    else ``fallback`` (the model's `heldout_interval_sds`, from its held-out photographs).

    Returns
    -------
    tuple of (float, int)
        k, and how many earlier values set it (0: it is ``fallback``).
    """
    scores = scaled_misses(predicted, actual, spread, noise_se)
    k = _conformal_quantile(scores, level)
    return (k, int(scores.size)) if math.isfinite(k) else (float(fallback), 0)


def noise_per_hz(means: np.ndarray, variances: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per unit, a rate's trial variance per Hz of its mean: Σ(n − 1)·var / Σ(n − 1)·mean over the
    stimuli shown at least twice.

    A spike count's variance grows with its mean (Poisson: variance = mean, so a rate over a
    window T has variance rate / T), so this one number per unit gives the noise of a rate
    measured once (`mean_standard_errors`).

    Parameters
    ----------
    means, variances, counts
        (n_stimuli, n_units): each stimulus's mean rate (Hz), its trial variance (``ddof=1``; NaN
        below two trials) and its number of trials (or (n_stimuli, 1): the same for every unit).

    Returns
    -------
    numpy.ndarray
        (n_units,) in Hz; NaN for a unit with no stimulus shown twice or never firing.
    """
    means, variances = (np.asarray(v, dtype=np.float64) for v in (means, variances))
    dof = np.maximum(np.broadcast_to(np.asarray(counts, dtype=np.float64), means.shape) - 1, 0)
    known = (dof > 0) & np.isfinite(means) & np.isfinite(variances)
    variance_sum = np.where(known, dof * variances, 0.0).sum(0)
    mean_sum = np.where(known, dof * means, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean_sum > 0, variance_sum / mean_sum, np.nan)


def planned_standard_errors(promised: np.ndarray, noise: np.ndarray, presentations: int) -> np.ndarray:
    """The standard error a mean over ``presentations`` trials is expected to have before any is
    shown: √(noise · promised / presentations), ``noise`` the unit's `noise_per_hz` (per image)."""
    promised, noise = (np.asarray(v, dtype=np.float64) for v in (promised, noise))
    return np.sqrt(noise * np.maximum(promised, 0.0) / presentations)


def trial_noise_per_hz(trials: np.ndarray) -> np.ndarray:
    """`noise_per_hz` of (n_images, n_repeats, n_units) trials (NaN where a repeat is missing)."""
    stats = _trial_stats(_as_units(trials, 3))
    return noise_per_hz(stats.means, stats.variances, stats.counts)


def mean_standard_errors(
    measured: np.ndarray, variances: np.ndarray, counts: np.ndarray, promised: np.ndarray, noise: np.ndarray
) -> np.ndarray:
    """The standard error of each measured mean rate.

    From two trials on, its own: √(variance / n). From one trial, the unit's noise
    (`noise_per_hz`) at the mean of the promised and the measured rate, √(noise·rate): the trial
    variance is unknown, and each rate alone misleads (a promise can be far off, and one short
    trial is often silent). NaN before any trial.

    Parameters
    ----------
    measured, variances, counts, promised, noise
        Per image, the same shape: the mean over its trials, their variance (``ddof=1``), the
        number of trials, the model's promised rate and its unit's `noise_per_hz`.
    """
    measured, variances, promised, noise = (
        np.asarray(v, dtype=np.float64) for v in (measured, variances, promised, noise)
    )
    counts = np.asarray(counts, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        own = np.sqrt(variances / counts)
        once = np.sqrt(noise * np.maximum((promised + measured) / 2, 0.0))
    return np.where(counts >= 2, own, np.where(counts == 1, once, np.nan))
