"""Response time course: latency, transient-then-sustained shape, decay after offset.

A unit's expected rate at time ``t`` after onset of a stimulus shown for ``D`` s is

    rate(t) = spont + (drive - spont) · k(t)

where, with ``u = t - latency``,

    k = 0                                              u < 0
    k = (1 - e^(-u/τ_rise)) · (1 + A · e^(-u/τ_decay))    0 <= u < D
    k = k(latency + D) · e^(-(u - D)/τ_off)            u >= D

so the sustained level is 1 (``drive`` is the sustained rate) and the transient
peaks near ``1 + A``.  The course is held constant within 1 ms bins aligned to
onset (value at the bin centre): the rate the spike samplers use, and the one
whose window means `TimeCourse.window_mean` returns exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Resolution of the time course.
STEP_S = 0.001


@dataclass(frozen=True)
class TimeCourse:
    """Per-unit time-course parameters (each an (n_units,) array, seconds)."""

    latency_s: np.ndarray
    transient_amplitude: np.ndarray
    tau_rise_s: np.ndarray
    tau_decay_s: np.ndarray
    tau_off_s: np.ndarray

    @classmethod
    def draw(cls, n_units: int, latency_range_s: tuple[float, float], rng: np.random.Generator) -> TimeCourse:
        """Draw parameters: latency from the range, the rest from V1-like ranges."""
        return cls(
            latency_s=rng.uniform(*latency_range_s, n_units),
            transient_amplitude=rng.uniform(0.8, 2.0, n_units),
            tau_rise_s=rng.uniform(0.002, 0.005, n_units),
            tau_decay_s=rng.uniform(0.010, 0.030, n_units),
            tau_off_s=rng.uniform(0.010, 0.020, n_units),
        )

    def _continuous(self, t_s: np.ndarray, duration_s: float) -> np.ndarray:
        """k at times t (n_times,) -> (n_units, n_times), without binning."""
        u = np.asarray(t_s, dtype=np.float64)[None, :] - self.latency_s[:, None]
        rise, decay = self.tau_rise_s[:, None], self.tau_decay_s[:, None]
        amp, off = self.transient_amplitude[:, None], self.tau_off_s[:, None]

        def on(v: np.ndarray) -> np.ndarray:
            return (1.0 - np.exp(-v / rise)) * (1.0 + amp * np.exp(-v / decay))

        u_on = np.clip(u, 0.0, duration_s)
        after = np.exp(-np.maximum(u - duration_s, 0.0) / off)
        return np.where(u < 0.0, 0.0, on(u_on) * after)

    def binned(self, duration_s: float, n_steps: int) -> np.ndarray:
        """(n_units, n_steps) value of k in the 1 ms steps ``[j, j+1)`` ms after onset."""
        return self._continuous((np.arange(n_steps) + 0.5) * STEP_S, duration_s)

    def at(self, t_s: np.ndarray, duration_s: float) -> np.ndarray:
        """(n_units, n_times) k at times ``t_s`` after onset (0 before onset)."""
        t = np.asarray(t_s, dtype=np.float64)
        steps = np.floor(t / STEP_S + 1e-9)
        return np.where(t[None, :] < 0.0, 0.0, self._continuous((np.maximum(steps, 0) + 0.5) * STEP_S, duration_s))

    def interval_means(self, starts_s: np.ndarray, stops_s: np.ndarray, duration_s: float) -> np.ndarray:
        """(n_units, n_intervals) exact mean of the binned k over each ``[start, stop)``."""
        starts = np.asarray(starts_s, dtype=np.float64)
        stops = np.asarray(stops_s, dtype=np.float64)
        if np.any(stops <= starts):
            raise ValueError("every interval must end after it starts")
        n_steps = int(np.ceil(max(stops.max(), 0.0) / STEP_S + 1e-9)) + 1
        values = self.binned(duration_s, n_steps)
        # The integral of a step function is piecewise linear, so interpolation is exact.
        edges = np.arange(n_steps + 1) * STEP_S
        integral = np.concatenate([np.zeros((len(values), 1)), np.cumsum(values, axis=1) * STEP_S], axis=1)
        at_start = np.stack([np.interp(starts, edges, row, left=0.0) for row in integral])
        at_stop = np.stack([np.interp(stops, edges, row, left=0.0) for row in integral])
        return (at_stop - at_start) / (stops - starts)[None, :]

    def window_mean(self, window_s: tuple[float, float], duration_s: float) -> np.ndarray:
        """(n_units,) mean of k over the response window."""
        return self.interval_means(np.array([window_s[0]]), np.array([window_s[1]]), duration_s)[:, 0]
