"""Percentile targets that ask for (nearly) the same rate: a warning, shared by `synth` and the runner.

A unit that sits at its spontaneous rate for most images has its p20…p80 there too: images
made for those targets differ by a spike or less, so whether they come in the asked order is
left to noise (on the simulated brains such units had the lowest target-vs-true correlations).
"""

from __future__ import annotations

import numpy as np

#: Percentile targets of one unit spanning less than this share of its natural-image range
#: are flagged.
MIN_PERCENTILE_SPAN = 0.1


def narrow_percentile_targets(
    unit_id: int, percentile_hz: np.ndarray | list[float], natural_range_hz: float
) -> str | None:
    """A one-line warning when a unit's percentile targets span less than `MIN_PERCENTILE_SPAN` of
    its natural-image range (max − min of its mean rates); ``None`` when they do not, or when
    fewer than two finite targets or no range are given."""
    rates = np.asarray(percentile_hz, dtype=np.float64)
    rates = rates[np.isfinite(rates)]
    if rates.size < 2 or not np.isfinite(natural_range_hz) or natural_range_hz <= 0:
        return None
    share = float(np.ptp(rates)) / float(natural_range_hz)
    if share >= MIN_PERCENTILE_SPAN:
        return None
    return (
        f"unit {unit_id}: its percentile targets span {rates.min():.1f}-{rates.max():.1f} Hz, {100 * share:.0f} % of "
        f"its natural-image range ({natural_range_hz:.1f} Hz): it is near its lowest rate for most images, so "
        "these images will differ by little; ask for higher percentiles (p90, p95) or absolute rates (12.5hz)"
    )
