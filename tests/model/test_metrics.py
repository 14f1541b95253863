"""Metric formulas on hand-computed arrays, and their identities on simulated data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from closedloop.model import metrics

# every metric must be warning-free, whatever the data
pytestmark = pytest.mark.filterwarnings("error")

# 3 images x 2 repeats, one unit; used for Schoppe's SP, FEV and FEVE by hand
HAND = np.array([[1.0, 3.0], [2.0, 2.0], [6.0, 4.0]])


def simulate(n_images=400, n_repeats=20, n_units=30, *, poisson=False, seed=0):
    """True expected rates and trials with Gaussian or Poisson (50 ms window) noise."""
    rng = np.random.default_rng(seed)
    signal = rng.gamma(2.0, 10.0, size=(n_images, n_units)) * rng.uniform(0.3, 2.0, n_units)
    if poisson:
        window = 0.05
        counts = rng.poisson(signal[:, None, :] * window, size=(n_images, n_repeats, n_units))
        return signal, counts / window, None
    noise_sd = rng.uniform(5.0, 25.0, n_units)
    trials = signal[:, None, :] + noise_sd * rng.standard_normal((n_images, n_repeats, n_units))
    return signal, trials, noise_sd


# ---------------------------------------------------------------- r and FVE by hand


def test_pearson_r_by_hand():
    # pred deviations (-1, 0, 1), mean deviations (-1, 1, 0): Σxy = 1, Σx² = Σy² = 2 -> 0.5
    assert metrics.pearson_r(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0])) == pytest.approx(0.5)


def test_pearson_r_per_unit_and_nan_images_skipped():
    pred = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [9.0, np.nan]])
    mean = np.array([[1.0, 1.0], [3.0, 3.0], [2.0, 2.0], [np.nan, 5.0]])
    np.testing.assert_allclose(metrics.pearson_r(pred, mean), [0.5, 0.5])


def test_fve_by_hand():
    mean = np.array([1.0, 3.0, 2.0])  # SST = 1 + 1 + 0 = 2
    assert metrics.fve(np.array([1.0, 2.0, 3.0]), mean) == pytest.approx(0.0)  # SSE = 0+1+1
    assert metrics.fve(np.array([1.0, 3.0, 3.0]), mean) == pytest.approx(0.5)  # SSE = 1
    assert metrics.fve(np.array([4.0, 4.0, 4.0]), mean) == pytest.approx(1 - 14 / 2)  # SSE = 9+1+4


def test_r_and_fve_nan_for_constant_sides():
    pred = np.array([[1.0, 0.1], [2.0, 0.1], [3.0, 0.1]])
    mean = np.array([[4.0, 1.0], [4.0, 2.0], [4.0, 3.0]])
    r = metrics.pearson_r(pred, mean)
    assert np.isnan(r).all()  # unit 0: constant mean; unit 1: constant prediction
    f = metrics.fve(pred, mean)
    assert np.isnan(f[0]) and np.isfinite(f[1])


@settings(max_examples=40, deadline=None)
@given(
    pred=arrays(np.float64, 12, elements=st.floats(-100, 100)),
    mean=arrays(np.float64, 12, elements=st.floats(-100, 100)),
    scale=st.floats(0.01, 100),
    shift=st.floats(-1000, 1000),
)
def test_r_invariant_to_affine_prediction(pred, mean, scale, shift):
    if np.ptp(pred) < 1e-3 or np.ptp(mean) < 1e-3:
        return  # r is NaN for (nearly) constant inputs; covered elsewhere
    r = metrics.pearson_r(pred, mean)
    assert metrics.pearson_r(scale * pred + shift, mean) == pytest.approx(r, abs=1e-6)
    assert metrics.pearson_r(-scale * pred + shift, mean) == pytest.approx(-r, abs=1e-6)


# ---------------------------------------------------------------- Schoppe SP, CCmax, CCnorm


def test_signal_power_schoppe_by_hand():
    # Σ_r y = (4, 4, 10): Var = 12. Columns (1, 2, 6): Var 7; (3, 2, 4): Var 1.
    # SP = (12 - 8) / (2 * 1) = 2; ȳ = (2, 2, 5): Var 3; CCmax = sqrt(2 / 3)
    assert metrics.signal_power(HAND) == pytest.approx(2.0)
    assert metrics.cc_max(HAND) == pytest.approx(np.sqrt(2 / 3))


def test_signal_power_packs_repeats_with_equal_counts():
    # every image has 2 of 3 repeats, in different slots: same as HAND after packing
    trials = np.array([[1.0, np.nan, 3.0], [np.nan, 2.0, 2.0], [6.0, 4.0, np.nan]])
    assert metrics.signal_power(trials) == pytest.approx(2.0)


def test_signal_power_unequal_repeats_by_hand():
    # R = (2, 2, 3); ȳ = (2, 2, 5): Var 3; s² = (2, 0, 1); mean s²/R = (1 + 0 + 1/3) / 3 = 4/9
    trials = np.array([[1.0, 3.0, np.nan], [2.0, 2.0, np.nan], [6.0, 4.0, 5.0]])
    assert metrics.signal_power(trials) == pytest.approx(3 - 4 / 9)
    assert metrics.cc_max(trials) == pytest.approx(np.sqrt((3 - 4 / 9) / 3))


def test_cc_norm_by_hand_and_undefined_without_signal():
    pred = np.array([2.0, 2.5, 5.0])
    # r with ȳ = (2, 2, 5): pred deviations (-1.17, -0.67, 1.83) -> computed directly
    r = np.corrcoef(pred, [2.0, 2.0, 5.0])[0, 1]
    assert metrics.cc_norm(pred, HAND) == pytest.approx(r / np.sqrt(2 / 3))
    # Σ_r y = (4, 4): Var 0; columns (1, 3), (3, 1): Var 2 each -> SP = -4 / 2 < 0
    noise_only = np.array([[1.0, 3.0], [3.0, 1.0]])
    assert metrics.signal_power(noise_only) == pytest.approx(-2.0)
    assert np.isnan(metrics.cc_max(noise_only))
    assert np.isnan(metrics.cc_norm(np.array([0.0, 1.0]), noise_only))


@pytest.mark.parametrize("poisson", [False, True])
def test_cc_norm_of_true_rate_is_one(poisson):
    signal, trials, _ = simulate(n_images=500, poisson=poisson, seed=1)
    cc = metrics.cc_norm(signal, trials)
    assert np.isfinite(cc).all()
    assert np.mean(cc) == pytest.approx(1.0, abs=0.05)
    assert np.median(cc) == pytest.approx(1.0, abs=0.05)


def test_cc_norm_of_true_rate_is_one_with_missing_repeats():
    signal, trials, _ = simulate(n_images=500, seed=2)
    rng = np.random.default_rng(3)
    trials[rng.random(trials.shape) < 0.25] = np.nan  # unequal counts: method-of-moments path
    trials[0, :, 0] = np.nan  # an image a unit has no data for at all
    cc = metrics.cc_norm(signal, trials)
    assert np.isfinite(cc).all()
    assert np.mean(cc) == pytest.approx(1.0, abs=0.05)


@settings(max_examples=20, deadline=None)
@given(scale=st.floats(0.1, 10), shift=st.floats(-50, 50))
def test_cc_norm_invariant_to_affine_rescaling_of_trials(scale, shift):
    signal, trials, _ = simulate(n_images=40, n_repeats=4, n_units=3, seed=4)
    base = metrics.cc_norm(signal, trials)
    np.testing.assert_allclose(metrics.cc_norm(signal, scale * trials + shift), base, rtol=1e-6)


# ---------------------------------------------------------------- rmax


def test_rmax_is_one_without_trial_noise():
    means = np.array([[1.0, 5.0], [2.0, 3.0], [4.0, 4.0]])
    trials = np.repeat(means[:, None, :], 5, axis=1)
    np.testing.assert_allclose(metrics.rmax_kindel(trials, n_draws=3), [1.0, 1.0])


def test_rmax_follows_documented_draws():
    # one draw: fake = ȳ + sem * z with z from default_rng(seed), in (n_images, n_units) order.
    # image 2 has one repeat and takes the pooled variance (2 + 2) / (1 + 1) = 2.
    trials = np.array([[1.0, 3.0], [5.0, 7.0], [4.0, np.nan]])[:, :, None]
    means = np.array([2.0, 6.0, 4.0])
    sem = np.sqrt(np.array([2.0 / 2, 2.0 / 2, 2.0 / 1]))
    z = np.random.default_rng(7).standard_normal((3, 1))[:, 0]
    expected = np.corrcoef(means + sem * z, means)[0, 1]
    assert metrics.rmax_kindel(trials, n_draws=1, seed=7)[0] == pytest.approx(expected)


def test_rmax_matches_analytic_expectation_under_gaussian_noise():
    # Given the measured means ȳ, fake = ȳ + d with Var d = σ²/R, so for many images
    # corr(fake, ȳ) -> sqrt(Var ȳ / (Var ȳ + σ²/R)).  Over noise in ȳ as well
    # (Var ȳ ≈ S + σ²/R): E rmax ≈ sqrt((S + σ²/R) / (S + 2σ²/R)), a little above
    # CCmax ≈ sqrt(S / (S + σ²/R)).
    signal, trials, noise_sd = simulate(n_images=400, seed=5)
    n_repeats = trials.shape[1]
    rmax = metrics.rmax_kindel(trials, n_draws=50, seed=0)
    var_means = trials.mean(axis=1).var(axis=0, ddof=1)
    conditional = np.sqrt(var_means / (var_means + noise_sd**2 / n_repeats))
    np.testing.assert_allclose(rmax, conditional, atol=0.01)
    s, e = signal.var(axis=0, ddof=1), noise_sd**2 / n_repeats
    assert np.mean(rmax) == pytest.approx(np.mean(np.sqrt((s + e) / (s + 2 * e))), abs=0.01)
    assert np.mean(rmax) > np.mean(metrics.cc_max(trials))


def test_rmax_seeded():
    _, trials, _ = simulate(n_images=30, n_repeats=4, n_units=5, seed=6)
    a = metrics.rmax_kindel(trials, n_draws=5, seed=1)
    np.testing.assert_array_equal(a, metrics.rmax_kindel(trials, n_draws=5, seed=1))
    assert not np.array_equal(a, metrics.rmax_kindel(trials, n_draws=5, seed=2))
    with pytest.raises(ValueError):
        metrics.rmax_kindel(trials, n_draws=0)


# ---------------------------------------------------------------- FEV, FEVE


def test_fev_and_feve_by_hand():
    # s² per image = (2, 0, 2): σ²_n = 4/3.  All trials (1,3,2,2,6,4): mean 3, V = 16/6 = 8/3.
    assert metrics.fev(HAND) == pytest.approx((8 / 3 - 4 / 3) / (8 / 3))
    # pred = ȳ = (2,2,5): MSE = (1+1+0+0+1+1)/6 = 2/3 -> 1 - (2/3 - 4/3)/(4/3) = 1.5
    assert metrics.feve(np.array([2.0, 2.0, 5.0]), HAND) == pytest.approx(1.5)
    # pred = (2,2,4): MSE = (1+1+0+0+4+0)/6 = 1 -> 1 - (1 - 4/3)/(4/3) = 1.25
    assert metrics.feve(np.array([2.0, 2.0, 4.0]), HAND) == pytest.approx(1.25)
    # the grand mean: MSE = V exactly -> 0
    assert metrics.feve(np.full(3, 3.0), HAND) == pytest.approx(0.0, abs=1e-12)


def test_feve_of_true_rate_is_one_and_of_constant_is_zero():
    signal, trials, _ = simulate(n_images=400, seed=8)
    feve = metrics.feve(signal, trials)
    assert np.mean(feve) == pytest.approx(1.0, abs=0.05)
    grand_mean = np.broadcast_to(trials.mean(axis=(0, 1)), signal.shape)
    np.testing.assert_allclose(metrics.feve(grand_mean, trials), 0.0, atol=1e-9)
    assert (metrics.feve(grand_mean + 5.0, trials) < 0).all()


def test_feve_ignores_images_without_prediction():
    pred = np.array([2.0, 2.0, 5.0, np.nan])
    trials = np.vstack([HAND, [[100.0, -50.0]]])
    assert metrics.feve(pred, trials) == pytest.approx(1.5)


# ---------------------------------------------------------------- NaN handling


def test_every_metric_nan_for_constant_and_empty_units():
    rng = np.random.default_rng(9)
    trials = rng.normal(10, 2, size=(6, 4, 3)) + 10 * np.arange(6)[:, None, None]
    trials[:, :, 1] = 7.0  # constant unit
    trials[:, :, 2] = np.nan  # a unit with no recorded trial
    pred = rng.normal(size=(6, 3))
    means = metrics.trial_means(trials)
    for value in (
        metrics.pearson_r(pred, means),
        metrics.fve(pred, means),
        metrics.rmax_kindel(trials, n_draws=2),
        metrics.cc_max(trials),
        metrics.cc_norm(pred, trials),
        metrics.fev(trials),
        metrics.feve(pred, trials),
    ):
        assert np.isfinite(value[0]) and np.isnan(value[1:]).all()
    # no variation is no signal; no trials is no estimate
    sp = metrics.signal_power(trials)
    assert np.isfinite(sp[0]) and sp[1] == 0.0 and np.isnan(sp[2])


def test_constant_unit_with_inexact_float_mean():
    # 0.1 * 3 / 3 != 0.1 in floating point; the checks must still see a constant unit
    trials = np.full((3, 3, 1), 0.1)
    assert metrics.signal_power(trials)[0] == 0.0
    assert np.isnan(metrics.cc_max(trials)[0]) and np.isnan(metrics.fev(trials)[0])
    assert metrics.unit_masks(trials).constant[0]


def test_trial_means_match_nanmean():
    trials = np.array([[[1.0], [np.nan], [3.0]], [[np.nan], [np.nan], [np.nan]]])
    np.testing.assert_array_equal(metrics.trial_means(trials), [[2.0], [np.nan]])
    assert metrics.trial_means(trials[:, :, 0]).shape == (2,)


def test_single_unit_inputs_give_scalars_and_bad_shapes_raise():
    assert np.ndim(metrics.cc_norm(np.array([2.0, 2.5, 5.0]), HAND)) == 0
    assert np.ndim(metrics.rmax_kindel(HAND, n_draws=2)) == 0
    with pytest.raises(ValueError, match="pred has shape"):
        metrics.feve(np.zeros((4, 1)), HAND[:, :, None])
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.pearson_r(np.zeros(3), np.zeros(4))


# ---------------------------------------------------------------- unit masks


def test_unit_masks():
    rng = np.random.default_rng(10)
    signal = rng.gamma(2, 10, size=(50, 1))
    trials = np.empty((50, 10, 4))
    trials[:, :, 0] = signal + rng.normal(0, 2, size=(50, 10))  # reliable
    trials[:, :, 1] = 0.0  # silent
    trials[:, :, 2] = np.where(np.arange(10) % 2, 8.0, 12.0)  # fires, same mean for every image
    trials[:, :, 3] = 10 + rng.normal(0, 5, size=(50, 10))  # noise only
    masks = metrics.unit_masks(trials)
    np.testing.assert_array_equal(masks.silent, [False, True, False, False])
    np.testing.assert_array_equal(masks.constant, [False, True, True, False])
    np.testing.assert_array_equal(masks.fittable, [True, False, False, True])
    np.testing.assert_array_equal(masks.reliable, [True, False, False, False])
    # the FEV floor is exposed: the good unit's FEV is below 0.999
    assert not metrics.unit_masks(trials, min_fev=0.999).reliable[0]
    with pytest.raises(ValueError):
        metrics.unit_masks(trials, min_fev=1.0)
    message = metrics.exclusion_warning(masks, unit_ids=np.array([11, 12, 13, 14]))
    assert message == (
        "of 4 units, 1 never fire (ids 12) and 1 have the same mean rate for every image "
        "(ids 13); they are left out of fitting"
    )
    assert metrics.exclusion_warning(metrics.unit_masks(trials[:, :, [0, 3]])) is None


def test_image_dependence_p_is_scipys_one_way_anova():
    from scipy import stats

    rng = np.random.default_rng(3)
    drive = np.array([0.0, 0.25, 1.0])
    trials = rng.normal(size=(30, 8, 3)) + drive * rng.normal(size=(30, 1, 1))
    trials[3, 5:, 0] = np.nan  # missing repeats
    trials[7, 1:, 1] = np.nan  # an image with one repeat still counts towards the between-image term
    trials[9, :, 2] = np.nan  # and one with none does not count
    p = metrics.image_dependence_p(trials)
    for unit in range(3):
        groups = [row[np.isfinite(row)] for row in trials[:, :, unit]]
        want = stats.f_oneway(*[g for g in groups if g.size]).pvalue
        assert p[unit] == pytest.approx(want, rel=1e-9)
    assert p[0] > 0.01 and p[2] < 1e-10
    assert metrics.image_dependence_p(trials[:, :, 2]).shape == ()
    assert metrics.image_dependence_p(np.ones((5, 4))) == 1.0  # the same for every image
    assert metrics.image_dependence_p(np.repeat(np.arange(5.0)[:, None], 4, 1)) == 0.0  # no trial noise at all
    assert np.isnan(metrics.image_dependence_p(rng.normal(size=(1, 4))))  # one image
    assert np.isnan(metrics.image_dependence_p(rng.normal(size=(5, 1))))  # one repeat each


def test_a_unit_without_image_dependence_has_the_rmax_of_noise_and_is_not_reliable():
    # Its FEV floor is now 0, so only the ANOVA keeps it out; a weakly but truly driven unit stays in.
    rng = np.random.default_rng(8)
    n_images, n_repeats = 60, 20
    trials = rng.normal(10.0, 5.0, size=(n_images, n_repeats, 2))
    trials[:, :, 1] += rng.normal(0.0, 2.0, size=(n_images, 1))  # signal sd 2 vs noise sd 5: FEV ~0.14
    masks = metrics.unit_masks(trials)
    assert masks.min_fev == 0.0
    np.testing.assert_array_equal(masks.reliable, [False, True])
    assert metrics.fev(trials)[1] < 0.2  # the old 0.15 floor was about here
    rmax = metrics.rmax_kindel(trials, n_draws=200, seed=0)
    assert rmax[0] == pytest.approx(1 / np.sqrt(2), abs=0.1) and rmax[1] > 0.85


def test_error_over_spread_is_one_when_the_spread_is_the_error_and_ignores_measurement_noise():
    rng = np.random.default_rng(0)
    promised = rng.uniform(10, 50, 20_000)
    spread = rng.uniform(1, 5, promised.size)
    true = promised + spread * rng.standard_normal(promised.size)  # misses as large as the spread says
    assert metrics.error_over_spread(promised, true, spread) == pytest.approx(1.0, abs=0.02)
    assert metrics.error_over_spread(promised, promised + 3 * (true - promised), spread) == pytest.approx(3.0, abs=0.06)
    # a measured mean adds its own noise; its standard error is taken off, not counted as a miss
    se = rng.uniform(2, 8, promised.size)
    measured = true + se * rng.standard_normal(promised.size)
    assert metrics.error_over_spread(promised, measured, spread) > 1.5  # sqrt(1 + mean se² / mean spread²) = 1.93
    assert metrics.error_over_spread(promised, measured, spread, se) == pytest.approx(1.0, abs=0.1)
    # non-finite rows are left out; nothing finite or no spread gives NaN; noise above the miss gives 0
    assert metrics.error_over_spread([10.0, np.nan], [12.0, 0.0], [2.0, 1.0]) == pytest.approx(1.0)
    assert np.isnan(metrics.error_over_spread([np.nan], [1.0], [1.0]))
    assert np.isnan(metrics.error_over_spread([10.0], [12.0], [0.0]))
    assert metrics.error_over_spread([10.0], [11.0], [1.0], [5.0]) == 0.0


def test_heldout_error_over_spread_takes_each_trial_means_noise_off():
    rng = np.random.default_rng(1)
    n_images, n_repeats, n_units = 400, 8, 5
    true = rng.uniform(5, 40, (n_images, n_units))
    spread = rng.uniform(1, 3, (n_images, n_units))
    pred = true + 2 * spread * rng.standard_normal(true.shape)  # misses twice the spread
    trials = true[:, None, :] + 12 * rng.standard_normal((n_images, n_repeats, n_units))
    trials[0, 1:, :] = np.nan  # one repeat: no standard error, left out
    assert metrics.heldout_error_over_spread(pred, spread, trials) == pytest.approx(2.0, abs=0.1)
    # without taking the noise off the trial means would look like a bigger miss
    assert metrics.error_over_spread(pred, np.nanmean(trials, axis=1), spread) > 2.5


def test_interval_sds_holds_the_level_asked_for_on_new_misses_of_the_same_kind():
    rng = np.random.default_rng(2)
    spread, se = rng.uniform(1, 5, 50_000), rng.uniform(0, 3, 50_000)
    scale = np.hypot(spread, se)
    miss = scale * rng.standard_t(3, spread.size)  # heavy-tailed, as synthesized images' misses are
    calibration, new = slice(0, 200), slice(200, None)
    k = metrics.interval_sds(np.zeros(200), miss[calibration], spread[calibration], se[calibration])
    assert np.mean(np.abs(miss[new]) <= k * scale[new]) == pytest.approx(0.95, abs=0.03)
    # exactly the ⌈(n + 1)·level⌉-th smallest miss over √(spread² + se²)
    scores = [3.0, 1.0, 2.0, 5.0, 4.0]
    assert metrics.interval_sds(np.zeros(5), scores, np.ones(5), level=0.5) == 3.0  # ⌈6 · 0.5⌉ = 3rd
    assert metrics.interval_sds(np.zeros(5), scores, np.ones(5), level=0.8) == 5.0  # ⌈6 · 0.8⌉ = 5th
    assert metrics.interval_sds(np.zeros(5), scores, np.full(5, 3.0), np.full(5, 4.0), level=0.8) == 1.0  # / 5
    # a zero spread with noise still counts: the noise is its scale
    assert metrics.interval_sds(np.zeros(5), scores, np.zeros(5), np.ones(5), level=0.8) == 5.0
    # too few values for the quantile, non-finite rows and zero scales left out
    assert np.isnan(metrics.interval_sds(np.zeros(18), np.ones(18), np.ones(18)))
    assert metrics.interval_sds(np.zeros(19), np.arange(19.0), np.ones(19)) == 18.0
    with_gaps = metrics.interval_sds([0.0, np.nan, 0.0] * 10, [1.0, 9.0, 2.0] * 10, [1.0, 1.0, 0.0] * 10)
    assert np.isnan(with_gaps)  # 10 usable values of 30
    with pytest.raises(ValueError, match="level"):
        metrics.interval_sds([0.0], [1.0], [1.0], level=1.0)


def test_heldout_interval_sds_scores_the_trial_means_with_their_standard_errors():
    rng = np.random.default_rng(3)
    true = rng.uniform(5, 40, (100, 4))
    spread = rng.uniform(1, 3, true.shape)
    pred = true + spread * rng.standard_normal(true.shape)
    trials = true[:, None, :] + rng.standard_normal((100, 6, 4))
    trials[:, 0, 0] = np.nan
    trials[0, 1:, 1] = np.nan  # one repeat: no standard error, left out
    means = np.nanmean(trials, axis=1)
    se = np.full_like(means, np.nan)
    for image, unit in np.ndindex(means.shape):
        repeats = trials[image, :, unit][np.isfinite(trials[image, :, unit])]
        if repeats.size > 1:
            se[image, unit] = repeats.std(ddof=1) / np.sqrt(repeats.size)
    expected = metrics.interval_sds(pred, means, spread, se)
    assert np.isfinite(expected) and metrics.heldout_interval_sds(pred, spread, trials) == pytest.approx(expected)


def test_heldout_top_ratio_measures_shrinkage_and_the_optimisers_curse_at_each_units_top_image():
    rng = np.random.default_rng(4)
    true = rng.uniform(5, 40, (200, 6))
    trials = true[:, None, :] + rng.standard_normal((200, 10, 6))
    # a model that shrinks every rate to 0.8 of the truth: its top promise is 1 / 0.8 too low
    assert metrics.heldout_top_ratio(0.8 * true, trials) == pytest.approx(1.25, rel=0.02)
    # an unbiased but noisy model: the image it ranks top is where it over-estimates
    noisy = true + 8 * rng.standard_normal(true.shape)
    assert metrics.heldout_top_ratio(noisy, trials) < 0.9
    # the top is chosen by the prediction, NaN and non-positive predictions left out
    pred = np.full((3, 2), np.nan)
    pred[:, 0] = [1.0, 4.0, 2.0]
    means = np.array([[9.0, 1.0], [2.0, 1.0], [7.0, 1.0]])
    assert metrics.heldout_top_ratio(pred, means[:, None, :]) == 0.5
    assert np.isnan(metrics.heldout_top_ratio(np.zeros((3, 2)), means[:, None, :]))
    with pytest.raises(ValueError, match="same"):
        metrics.heldout_top_ratio(np.ones((3, 1)), means[:, None, :])


def test_calibrated_interval_sds_falls_back_to_the_models_figure_below_19_earlier_values():
    misses = np.arange(1.0, 21.0)
    assert metrics.calibrated_interval_sds(np.zeros(20), misses, np.ones(20), None, 3.0) == (20.0, 20)
    assert metrics.calibrated_interval_sds(np.zeros(18), misses[:18], np.ones(18), None, 3.0) == (3.0, 0)
    k, used = metrics.calibrated_interval_sds([], [], [], None, np.nan)
    assert np.isnan(k) and used == 0


def test_noise_per_hz_recovers_a_poisson_units_variance_per_rate_from_its_trials():
    rng = np.random.default_rng(4)
    window_s = 0.05  # a rate over 50 ms: variance = rate / 0.05 = 20 Hz per Hz
    rate = rng.uniform(2, 80, (300, 1)) * np.array([1.0, 0.5, 0.0])  # the third unit never fires
    counts = np.array([1] * 50 + [6] * 250)  # stimuli shown once add nothing
    trials = np.full((300, 6, 3), np.nan)
    for i, n in enumerate(counts):
        trials[i, :n] = rng.poisson(rate[i] * window_s, (n, 3)) / window_s
    means = np.nanmean(trials, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"), pytest.warns(RuntimeWarning, match="freedom"):
        variances = np.nanvar(trials, axis=1, ddof=1)  # NaN for the stimuli shown once
    noise = metrics.noise_per_hz(means, np.where(counts[:, None] > 1, variances, np.nan), counts[:, None])
    assert noise[:2] == pytest.approx([20.0, 20.0], rel=0.1) and np.isnan(noise[2])
    per_unit_counts = np.broadcast_to(counts[:, None], means.shape)
    assert metrics.noise_per_hz(means, variances, per_unit_counts)[:2] == pytest.approx(noise[:2])


def test_mean_standard_errors_own_from_two_trials_the_units_noise_for_one():
    se = metrics.mean_standard_errors(
        measured=[10.0, 0.0, 40.0, 5.0],
        variances=[36.0, np.nan, np.nan, np.nan],
        counts=[4, 1, 1, 0],
        promised=[12.0, 40.0, 20.0, 5.0],
        noise=[20.0, 20.0, 10.0, 20.0],
    )
    # √(36 / 4); √(20 · (40 + 0) / 2) for a silent trial of a 40 Hz promise; √(10 · 30); nothing yet
    assert se[:3] == pytest.approx([3.0, 20.0, np.sqrt(300.0)]) and np.isnan(se[3])
