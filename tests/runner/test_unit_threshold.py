"""The runner skips units the model predicts too poorly to synthesize for."""

from __future__ import annotations

import numpy as np

from closedloop.messages import ModelUpdated
from closedloop.runner.targets import top_units, well_fit_units


def test_units_below_the_held_out_r_threshold_are_skipped_with_a_message():
    update = ModelUpdated(version=3, unit_ids=np.array([1, 2, 3, 4]), heldout_r=np.array([0.8, 0.25, np.nan, 0.5]))
    units = top_units(update, 4)
    kept, message = well_fit_units(update, units, 0.3)
    assert kept.tolist() == [1, 4]
    assert "2 (r 0.25)" in message and "3 (r nan)" in message and "min_heldout_r = 0.3" in message
    everything, none = well_fit_units(update, np.array([1, 4]), 0.3)
    assert everything.tolist() == [1, 4] and none == ""
