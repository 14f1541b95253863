"""Target grammar, unit selection and percentile resolution."""

from __future__ import annotations

import math

import numpy as np
import pytest

from closedloop.errors import ClosedLoopError
from closedloop.synth.targets import (
    Target,
    build_jobs,
    parse_targets,
    rate_target,
    resolve_target_hz,
    select_units,
    target_label,
)


def test_grammar_round_trips_through_labels():
    targets = parse_targets("p20, p35,max,12.5hz,0hz")
    assert [t.kind for t in targets] == ["percentile", "percentile", "max", "rate", "rate"]
    assert [target_label(t) for t in targets] == ["p20", "p35", "max", "12.5hz", "0hz"]
    assert parse_targets([7.5, "P50"])[0] == Target("rate", 7.5)


@pytest.mark.parametrize("bad", ["nanhz", "-3hz", "p0", "p100", "p-5", "fast", "", "infhz", "12.5"])
def test_bad_target_text_is_a_clear_error(bad):
    with pytest.raises(ClosedLoopError) as error:
        parse_targets(bad)
    assert "target" in str(error.value)


@pytest.mark.parametrize("bad", [math.nan, -1.0, math.inf, "x"])
def test_bad_rate_values_are_rejected(bad):
    with pytest.raises(ClosedLoopError, match="rate"):
        rate_target(bad)
    with pytest.raises(ClosedLoopError):
        parse_targets([Target("rate", bad)] if not isinstance(bad, str) else [bad])


def test_percentiles_are_interpolated_from_stored_statistics():
    percentiles = np.linspace(2.0, 52.0, 101)  # p-th percentile = 2 + p/2 Hz
    assert resolve_target_hz(Target("percentile", 20), percentiles) == pytest.approx(12.0)
    assert resolve_target_hz(Target("percentile", 12.5), percentiles) == pytest.approx(8.25)
    assert resolve_target_hz(Target("rate", 3.0), percentiles) == 3.0
    assert math.isnan(resolve_target_hz(Target("max"), percentiles))


def test_unit_selection_by_ids_top_and_all():
    ids = np.array([3, 7, 12, 20])
    r = np.array([0.1, np.nan, 0.9, 0.5])
    assert select_units("12,3", ids).tolist() == [2, 0]
    assert select_units([20], ids).tolist() == [3]
    assert select_units("all", ids).tolist() == [0, 1, 2, 3]
    assert select_units("top:2", ids, r).tolist() == [2, 3]
    assert select_units("top:10", ids, r).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("3,99", "99 are not in the model"),
        ("3,3", "repeated"),
        ("three", "not understood"),
        ("top:x", "top:K"),
        ("top:0", "at least one"),
        ("", "no units"),
    ],
)
def test_bad_unit_selections_are_clear_errors(spec, message):
    with pytest.raises(ClosedLoopError, match=message):
        select_units(spec, np.array([3, 7, 12]), np.array([0.1, 0.2, 0.3]))


def test_top_needs_metrics():
    with pytest.raises(ClosedLoopError, match="held-out r"):
        select_units("top:1", np.array([1, 2]), None)


def test_jobs_hold_the_others_but_never_the_driven_unit():
    percentiles = np.tile(np.linspace(0, 10, 101)[:, None], (1, 3))
    jobs = build_jobs(
        np.array([0, 2]),
        parse_targets("p50,max"),
        percentiles,
        hold=[0, 1, 2],
        baseline_hz=np.array([1.0, 2.0, 3.0]),
        images_per_target=2,
    )
    assert len(jobs) == 8
    assert [j.unit for j in jobs] == [0, 0, 0, 0, 2, 2, 2, 2]
    assert jobs[0].hold == (1, 2) and jobs[0].hold_hz == (2.0, 3.0)
    assert jobs[4].hold == (0, 1)
    assert jobs[0].target_hz == pytest.approx(5.0) and jobs[2].maximise and math.isnan(jobs[2].target_hz)
