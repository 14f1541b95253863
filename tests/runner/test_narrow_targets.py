"""Percentile targets that ask for nearly the same rate are flagged, in the runner and in synth."""

from __future__ import annotations

import numpy as np

from closedloop.config.protocol import Synthesis, UnitSelection
from closedloop.config.target_span import MIN_PERCENTILE_SPAN, narrow_percentile_targets
from closedloop.runner.targets import narrow_targets, target_rates


def test_targets_spanning_little_of_the_natural_range_are_flagged_with_what_to_ask_instead():
    line = narrow_percentile_targets(15, np.array([1.0, 2.0, 2.0, 3.0, 4.0]), 59.0)
    assert line is not None and line.startswith("unit 15:") and "1.0-4.0 Hz, 5 %" in line and "p90" in line
    assert narrow_percentile_targets(17, np.array([2.0, 2.0 + MIN_PERCENTILE_SPAN * 50.0]), 50.0) is None
    # nothing to judge: one target, NaN ("max") only, or no natural range
    assert narrow_percentile_targets(1, np.array([3.0]), 50.0) is None
    assert narrow_percentile_targets(1, np.array([np.nan, np.nan]), 50.0) is None
    assert narrow_percentile_targets(1, np.array([1.0, 1.5]), 0.0) is None


def test_the_runner_flags_a_unit_silent_for_most_natural_images():
    rng = np.random.default_rng(0)
    sparse = np.where(rng.random(200) < 0.9, 2.0, rng.uniform(10, 80, 200))  # spontaneous rate for 90 %
    graded = rng.uniform(5, 60, 200)
    means = np.stack([sparse, graded], axis=1)
    unit_ids = np.array([7, 9])
    synthesis = Synthesis(units=UnitSelection(top_k=2), steps=10, targets=("p20", "p50", "p80", "max"))
    targets = target_rates(synthesis, unit_ids, unit_ids, means)
    lines = narrow_targets(synthesis, unit_ids, unit_ids, means, targets)
    assert len(lines) == 1 and lines[0].startswith("unit 7:")
    assert narrow_targets(synthesis, unit_ids, unit_ids, means[:0], targets) == []


def test_synth_flags_the_units_whose_resolved_percentile_targets_are_narrow():
    from types import SimpleNamespace

    from closedloop.commands.synth import _narrow_targets
    from closedloop.config.protocol import Target
    from closedloop.synth.targets import SynthesisJob

    jobs = [SynthesisJob(0, Target("percentile", p), hz) for p, hz in ((20, 1.0), (50, 2.0), (80, 4.0))]
    jobs += [SynthesisJob(1, Target("percentile", p), hz) for p, hz in ((20, 5.0), (50, 20.0), (80, 40.0))]
    jobs += [SynthesisJob(0, Target("max"), float("nan"))]
    made = SimpleNamespace(
        result=SimpleNamespace(jobs=jobs), unit_ids=np.array([15, 17]), scale_hz=np.array([59.0, 90.0])
    )
    lines = _narrow_targets(made)
    assert len(lines) == 1 and lines[0].startswith("unit 15: its percentile targets span 1.0-4.0 Hz")
