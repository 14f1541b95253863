"""What the simulated array spikes from: a brain turned into per-trial spike trains.

A `SpikeSource` knows its units (ids, channels, spontaneous rates) and draws the spikes
of one trial: an image shown for ``duration_s`` from time 0, spikes until the response
has died away (``span``).  Between trials the array adds spontaneous Poisson spikes.

- `GroundTruthSource`: a `SimulatedV1`; trials come from its own
  ``sample_spike_times`` (its time courses, gamma gains, Poisson spikes).
- `RateSource`: a brain that maps images to expected rates in the response window and
  brings its own noise statistics and time courses (a digital twin).  (A rig's
  ``module:callable`` brain is a `GroundTruthSource` of the plugin family,
  `closedloop.sim.plugin`, as in an archive.)  Its rate at time ``t`` after onset is

      rate(t) = spont + (r_window − spont) · shape(t)

  with ``shape`` normalised to mean 1 over the response window, so the expected
  window rate is exactly what the brain says; ``spont`` is its rate between stimuli.
  Trial gains are gamma with mean 1 (``overdispersion`` per unit,
  ``shared_overdispersion`` for all), spikes Poisson given the gain: Fano factor > 1,
  as in V1.  A unit without a measured shape gets one V1-like time course
  (`standard_shape`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from collections.abc import Callable

import numpy as np

from closedloop.sim.population import SimulatedV1
from closedloop.sim.spiking import OFFSET_TAILS, gamma_gains, poisson_rows
from closedloop.sim.timecourse import STEP_S, TimeCourse

RESPONSE_WINDOW_S = (0.05, 0.10)
#: The time course a brain without one of its own gets: 50 ms latency, a transient
#: peaking near 2.4× the sustained level, 15 ms decay after offset.
STANDARD_COURSE = dict(latency_s=0.05, transient_amplitude=1.4, tau_rise_s=0.0035, tau_decay_s=0.02, tau_off_s=0.015)


class SpikeSource(Protocol):
    unit_ids: np.ndarray
    channels: np.ndarray
    spontaneous_hz: np.ndarray

    def trial(
        self, image: np.ndarray, duration_s: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """(unit index, times after onset, span in s) of one trial."""
        ...


class GroundTruthSource:
    """Spikes of a ground-truth `SimulatedV1` population."""

    def __init__(self, population: SimulatedV1):
        self.population = population
        self.unit_ids = population.unit_ids
        self.channels = population.channels.astype(np.int32)
        self.spontaneous_hz = population.spontaneous_hz
        course = population.time_course
        self._tail_s = float(course.latency_s.max() + OFFSET_TAILS * course.tau_off_s.max())

    def trial(
        self, image: np.ndarray, duration_s: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, float]:
        steps = int(np.ceil((duration_s + self._tail_s) / STEP_S))
        span = steps * STEP_S
        index, times = self.population.sample_spike_times(
            image[None], np.zeros(1), duration_s=duration_s, t_stop_s=span, rng=rng
        )
        return index, times, span

    def expected_rates(self, images: np.ndarray, window_s: tuple[float, float], duration_s: float) -> np.ndarray:
        return self.population.expected_rates(images, window_s, duration_s)


def standard_shape(duration_s: float, window_s: tuple[float, float] = RESPONSE_WINDOW_S) -> np.ndarray:
    """(n_steps,) `STANDARD_COURSE` in 1 ms steps, mean 1 over ``window_s``."""
    course = TimeCourse(**{k: np.array([v]) for k, v in STANDARD_COURSE.items()})
    tail = STANDARD_COURSE["latency_s"] + OFFSET_TAILS * STANDARD_COURSE["tau_off_s"]
    steps = int(np.ceil((duration_s + tail) / STEP_S))
    return course.binned(duration_s, steps)[0] / course.window_mean(window_s, duration_s)[0]


@dataclass
class RateSource:
    """Spikes of a brain that gives expected window rates (see module notes).

    Attributes
    ----------
    brain
        (n, H, W) images in [0, 1] → (n, n_units) expected rate in ``window_s``.
    unit_ids, channels
        (n_units,) ids and electrode channels.
    spontaneous_hz
        (n_units,) rate between stimuli.
    overdispersion, shared_overdispersion
        Variances of the per-unit and shared gamma trial gains.
    shape
        (n_units, n_steps) time course in 1 ms steps from onset, mean 1 over ``window_s``
        (measured, or `standard_shape` where a unit gives none).
    window_s
        The window the brain's rates refer to.
    """

    brain: Callable[[np.ndarray], np.ndarray]
    unit_ids: np.ndarray
    channels: np.ndarray
    spontaneous_hz: np.ndarray
    overdispersion: np.ndarray
    shape: np.ndarray
    shared_overdispersion: float = 0.0
    window_s: tuple[float, float] = RESPONSE_WINDOW_S

    def rates(self, image: np.ndarray) -> np.ndarray:
        rates = np.asarray(self.brain(image[None]), dtype=np.float64)
        if rates.shape != (1, len(self.unit_ids)) or not np.all(np.isfinite(rates)):
            raise ValueError(
                f"the brain returned {rates.shape} rates (or NaN) for one image; "
                f"expected (1, {len(self.unit_ids)}) finite rates"
            )
        return np.maximum(rates[0], 0.0)

    def trial(
        self, image: np.ndarray, duration_s: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, float]:
        shape = self.shape
        window_rate = self.rates(image)
        rate = self.spontaneous_hz[:, None] + (window_rate - self.spontaneous_hz)[:, None] * shape
        rate = np.maximum(rate, 0.0)
        n_units = len(self.unit_ids)
        gains = gamma_gains(self.overdispersion, (n_units,), rng) * gamma_gains(self.shared_overdispersion, (1,), rng)
        counts = poisson_rows(rate * gains[:, None] * STEP_S, rng)
        unit, step = np.nonzero(counts)
        repeat = counts[unit, step]
        unit, step = np.repeat(unit, repeat), np.repeat(step, repeat)
        times = (step + rng.random(len(step))) * STEP_S
        order = np.argsort(times, kind="stable")
        return unit[order].astype(np.int32), times[order], shape.shape[1] * STEP_S


def spontaneous_spikes(
    rates_hz: np.ndarray, start_s: float, stop_s: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Homogeneous Poisson spikes of every unit in ``[start_s, stop_s)``, sorted by time."""
    length = max(stop_s - start_s, 0.0)
    counts = rng.poisson(rates_hz * length)
    unit = np.repeat(np.arange(len(rates_hz), dtype=np.int32), counts)
    times = start_s + rng.random(len(unit)) * length
    order = np.argsort(times, kind="stable")
    return unit[order], times[order]
