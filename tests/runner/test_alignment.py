"""Photodiode edges matched to presenter flips: missing, extra, jittered and shifted edges."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.runner.alignment import align_onsets, estimated_onsets

FRAME = 1 / 60
LAG = 0.012


def flips_and_edges(n: int = 20, period: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    # flip intervals vary by whole frames (a late flip), as on a real display
    intervals = period + FRAME * rng.integers(0, 2, n - 1)
    flips = 1000.0 + np.concatenate([[0.0], np.cumsum(intervals)])
    edges = 5.0 + (flips - flips[0]) + LAG
    return flips, edges


def test_matching_edges_give_the_onsets_and_the_clock_offset():
    flips, edges = flips_and_edges()
    result = align_onsets(flips, edges, FRAME)
    assert result.ok and result.problem == ""
    np.testing.assert_array_equal(result.onsets, edges)
    assert result.clock_offset(flips) == pytest.approx(edges[0] - flips[0])


def test_edges_jittered_by_less_than_a_frame_are_accepted():
    flips, edges = flips_and_edges()
    jittered = edges + np.random.default_rng(1).uniform(-0.004, 0.004, edges.size)
    result = align_onsets(flips, jittered, FRAME)
    assert result.ok
    np.testing.assert_array_equal(result.onsets, jittered)  # the photodiode is the truth, not the flips


def test_an_edge_jittered_by_more_than_the_tolerance_is_flagged_at_its_trial():
    flips, edges = flips_and_edges()
    edges[7] += 2.5 * FRAME
    result = align_onsets(flips, edges, FRAME)
    assert not result.ok and result.onsets is None
    assert "before trial 7" in result.problem and "more than 16.7 ms" in result.problem
    assert align_onsets(flips, edges, FRAME, tolerance_frames=3).ok


def test_a_missing_edge_is_flagged_with_where_it_went_missing():
    flips, edges = flips_and_edges()
    result = align_onsets(flips, np.delete(edges, 5), FRAME)
    assert not result.ok and result.onsets is None
    assert result.problem.startswith("19 photodiode rising edges for 20 trials (1 missing)")
    assert "first disagree at trial 5" in result.problem


def test_an_extra_edge_is_flagged():
    flips, edges = flips_and_edges()
    extra = np.sort(np.append(edges, edges[10] + 0.1))
    result = align_onsets(flips, extra, FRAME)
    assert not result.ok
    assert "21 photodiode rising edges for 20 trials (1 extra)" in result.problem
    assert "trial 11" in result.problem


def test_a_missing_and_an_extra_edge_cannot_pass_as_a_match():
    flips, edges = flips_and_edges()
    shifted = np.sort(np.append(np.delete(edges, 3), edges[-1] + 0.3))
    result = align_onsets(flips, shifted, FRAME)
    assert not result.ok and "before trial 3" in result.problem


def test_edges_out_of_time_order_and_empty_blocks():
    flips, edges = flips_and_edges(4)
    result = align_onsets(flips, edges[[0, 2, 1, 3]], FRAME)
    assert not result.ok and "out of time order" in result.problem
    assert align_onsets([], [], FRAME).ok
    assert not align_onsets([], [1.0], FRAME).ok


def test_estimated_onsets_prefer_the_last_good_offset_then_the_first_edge():
    flips, edges = flips_and_edges(5)
    onsets, how = estimated_onsets(flips, edges[1:], offset=2.0)
    np.testing.assert_allclose(onsets, flips + 2.0)
    assert "last aligned block" in how
    onsets, how = estimated_onsets(flips, edges[1:], offset=None)
    np.testing.assert_allclose(onsets[0], edges[1])
    assert "first photodiode edge" in how
