"""Image selectivity, circular variance and orientation groups on hand-computed arrays."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.model import cells

pytestmark = pytest.mark.filterwarnings("error")

ORIENTATIONS_16 = np.arange(16) * 11.25


def test_image_selectivity_by_hand():
    # A = (1, 2, 3): (ΣA/N)² = 4, ΣA²/N = 14/3 -> (1 - 12/14) / (1 - 1/3) = (1/7) / (2/3) = 3/14
    assert cells.image_selectivity(np.array([1.0, 2.0, 3.0])) == pytest.approx(3 / 14)
    # NaN images are left out
    assert cells.image_selectivity(np.array([1.0, np.nan, 2.0, 3.0])) == pytest.approx(3 / 14)


def test_image_selectivity_limits_and_undefined():
    rates = np.zeros((10, 4))
    rates[:, 0] = 5.0  # flat -> 0
    rates[3, 1] = 9.0  # a single image -> 1
    rates[0, 3] = 1.0
    rates[1:, 3] = np.nan  # one finite image -> undefined
    value = cells.image_selectivity(rates)
    assert value[0] == pytest.approx(0.0, abs=1e-12)
    assert value[1] == pytest.approx(1.0)
    assert np.isnan(value[2])  # never fires
    assert np.isnan(value[3])


def test_circular_variance_by_hand():
    # 0° and 90°: e^{0} + e^{iπ} = 0 -> CV = 1
    assert cells.circular_variance([0.0, 90.0], np.array([1.0, 1.0])) == pytest.approx(1.0)
    # 0° and 45°: e^{0} + e^{iπ/2} = 1 + i, |.| = √2, Σ = 2 -> 1 - √2/2
    assert cells.circular_variance([0.0, 45.0], np.array([1.0, 1.0])) == pytest.approx(1 - np.sqrt(2) / 2)
    # weights 3 and 1: |3 + i| = √10, Σ = 4 -> 1 - √10/4
    assert cells.circular_variance([0.0, 45.0], np.array([3.0, 1.0])) == pytest.approx(1 - np.sqrt(10) / 4)


def test_circular_variance_limits_and_undefined():
    rates = np.zeros((16, 4))
    rates[:, 0] = 7.0  # flat over evenly spaced orientations -> 1
    rates[5, 1] = 20.0  # one orientation -> 0
    rates[:, 3] = np.nan
    cv = cells.circular_variance(ORIENTATIONS_16, rates)
    assert cv[0] == pytest.approx(1.0, abs=1e-12)
    assert cv[1] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(cv[2]) and np.isnan(cv[3])  # Σ A = 0: no preferred orientation


def test_circular_variance_treats_opposite_directions_as_one_orientation():
    rates = np.array([4.0, 1.0, 2.0])
    a = cells.circular_variance([10.0, 50.0, 120.0], rates)
    assert cells.circular_variance([190.0, 50.0, -60.0], rates) == pytest.approx(a)
    with pytest.raises(ValueError):
        cells.circular_variance([0.0, 90.0], np.ones(3))


def test_orientation_groups_boundaries():
    cv = np.array([0.59, 0.6, 0.7, 0.75, 0.76, np.nan])
    labels = cells.orientation_groups(cv)
    assert list(labels) == ["selective", "intermediate", "intermediate", "intermediate", "nonselective", "undefined"]
    assert list(cells.orientation_groups(cv, 0.7, 0.7)) == [
        "selective",
        "selective",
        "intermediate",
        "nonselective",
        "nonselective",
        "undefined",
    ]
    with pytest.raises(ValueError):
        cells.orientation_groups(cv, selective_below=0.8, nonselective_above=0.7)


def test_group_summary_by_hand():
    groups = np.array(["nonselective", "selective", "selective", "undefined"])
    r = np.array([0.9, 0.2, 0.4, 0.5])
    r_linear = np.array([np.nan, 0.0, 0.1, 0.3])
    rmax = np.array([0.95, 0.8, 0.6, 0.7])
    summary = cells.group_summary(groups, r, r_linear, rmax)
    assert list(summary) == ["selective", "nonselective", "undefined"]
    sel = summary["selective"]
    assert sel["n"] == 2
    assert sel["mean_r"] == pytest.approx(0.3)
    assert sel["sem_r"] == pytest.approx(0.1)  # sd (ddof 1) √0.02 over √2
    assert sel["mean_r_linear"] == pytest.approx(0.05)
    assert sel["mean_rmax"] == pytest.approx(0.7)
    non = summary["nonselective"]
    assert non["n"] == 1 and np.isnan(non["mean_r_linear"]) and np.isnan(non["sem_r"])
    without = cells.group_summary(groups, r)
    assert np.isnan(without["selective"]["mean_r_linear"]) and np.isnan(without["selective"]["mean_rmax"])
    with pytest.raises(ValueError, match="rmax"):
        cells.group_summary(groups, r, rmax=rmax[:3])


def test_characterise_with_and_without_gratings():
    rng = np.random.default_rng(0)
    mean_rates = rng.gamma(2, 5, size=(30, 3))
    grating = np.zeros((16, 3))
    grating[:, 0] = 5.0
    grating[2, 1] = 8.0
    grating[:, 2] = 5.0
    grating[2, 2] = 30.0  # CV = 1 - 25/105 ≈ 0.76
    props = cells.characterise(mean_rates, ORIENTATIONS_16, grating)
    assert list(props.groups) == ["nonselective", "selective", "nonselective"]
    np.testing.assert_allclose(props.circular_variance[2], 1 - 25 / 105)
    np.testing.assert_allclose(props.image_selectivity, cells.image_selectivity(mean_rates))
    stricter = cells.characterise(mean_rates, ORIENTATIONS_16, grating, nonselective_above=0.8)
    assert stricter.groups[2] == "intermediate" and stricter.nonselective_above == 0.8
    bare = cells.characterise(mean_rates)
    assert np.isnan(bare.circular_variance).all() and set(bare.groups) == {"undefined"}
    data = bare.to_dict()
    assert data["circular_variance"] == [None, None, None] and data["groups"] == ["undefined"] * 3
    with pytest.raises(ValueError):
        cells.characterise(mean_rates, ORIENTATIONS_16)
    with pytest.raises(ValueError, match="units"):
        cells.characterise(mean_rates, ORIENTATIONS_16, grating[:, :2])
