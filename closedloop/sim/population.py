"""`SimulatedV1`: a seeded ground-truth V1 population on a Utah array.

Drawn from a `PopulationSpec`: unit types, receptive fields, calibrated gains,
rates, time courses and trial-to-trial variability, all from one seed.  Every
unit's true receptive field and exact expected rate for any image are exposed,
so tests can check what fitting and synthesis recover.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from closedloop.sim import spiking
from closedloop.sim.aperture import GREY
from closedloop.sim.families import DriveStage, build_stage, offset_centres
from closedloop.sim.photographs import natural_images
from closedloop.sim.plugin import PLUGIN_RATE_WINDOW_S, PLUGIN_STIMULUS_S
from closedloop.sim.scenario import load_scenario
from closedloop.sim.spec import PopulationSpec
from closedloop.sim.timecourse import TimeCourse
from closedloop.sim.units import MAX_RF_ECCENTRICITY_DEG, output_rates
from closedloop.sim.utah import assign_channels, channel_positions_um

#: A unit's gain is set so it reaches its peak rate at this quantile of its calibration drive.
CALIBRATION_QUANTILE = 0.98

RngLike = np.random.Generator | int | None


def _as_rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


class SimulatedV1:
    """A simulated V1 population with known ground truth.

    Parameters
    ----------
    spec
        The population recipe; ``None`` uses `PopulationSpec` defaults.
    n_units, seed
        Override the spec's values.  A ``None`` seed (here and in the spec) is
        replaced by a freshly drawn one, recorded in ``seed`` and ``spec.seed``.

    Attributes
    ----------
    spec, seed, n_units, size_px, pixels_per_degree
        The recipe (with the concrete seed) and its main numbers.
    unit_ids
        (n_units,) int64, 1..n_units.
    unit_types
        (n_units,) str, one of the family's types (`closedloop.sim.spec.FAMILY_UNIT_TYPES`).
    channels
        (n_units,) int64 Utah-array channel, 0..95.
    channel_positions_um
        (n_units, 2) (x, y) of each unit's channel, µm from the array centre.
    parameters
        dict of (n_units,) arrays: RF centre ``x_deg``/``y_deg`` (y up), Gabor
        ``orientation_deg``/``sf_cpd``/``phase_deg``/``sigma_across_deg``/
        ``sigma_along_deg``, DoG ``centre_sigma_deg``/``surround_sigma_deg``/
        ``surround_weight``/``polarity``; NaN where a parameter does not apply.
    spontaneous_hz, amplitude_hz, exponent, drive_scale
        Output stage: rate = spont + amp at calibrated drive 1 (see `units.output_rates`).
    latencies_s
        (n_units,) response latency.
    overdispersion, shared_overdispersion
        Gamma trial-gain variances (per unit, and shared by all units).
    has_localised_rf
        (n_units,) bool: simple, complex and centre-surround units.
    """

    def __init__(self, spec: PopulationSpec | None = None, *, n_units: int | None = None, seed: int | None = None):
        spec = PopulationSpec() if spec is None else spec
        if not isinstance(spec, PopulationSpec):
            raise TypeError(f"spec must be a PopulationSpec, got {type(spec).__name__}")
        changes: dict = {}
        if n_units is not None:
            changes["n_units"] = n_units
        if seed is not None:
            changes["seed"] = seed
        elif spec.seed is None:
            entropy = np.random.SeedSequence().entropy
            assert isinstance(entropy, int)  # a fresh SeedSequence draws one int from the OS
            changes["seed"] = int(entropy % 2**32)
        self.spec: PopulationSpec = replace(spec, **changes) if changes else spec
        assert self.spec.seed is not None  # set just above: the caller's, the spec's or a fresh one
        self.seed: int = int(self.spec.seed)
        self.n_units: int = self.spec.n_units
        self.size_px: int = self.spec.size_px
        self.pixels_per_degree: float = float(self.spec.pixels_per_degree)
        self._build()

    @classmethod
    def from_scenario(cls, path: str | Path) -> SimulatedV1:
        """Build the population a scenario YAML describes (see `closedloop.sim.scenario`)."""
        return cls(load_scenario(path))

    def _build(self) -> None:
        spec = self.spec
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0]))
        n = self.n_units
        self.unit_ids = np.arange(1, n + 1, dtype=np.int64)
        self.channels = assign_channels(n, rng)
        self.channel_positions_um = channel_positions_um()[self.channels]

        # Retinotopy: RF centres drift linearly across the array, plus scatter.
        angle = rng.uniform(0.0, 2.0 * np.pi)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        centres = spec.retinotopic_gradient_deg_per_mm * (self.channel_positions_um / 1000.0) @ rotation.T
        centres = centres + rng.normal(0.0, spec.rf_scatter_deg, (n, 2)) if spec.rf_scatter_deg > 0 else centres
        eccentricity = np.hypot(centres[:, 0], centres[:, 1])
        centres *= np.minimum(1.0, MAX_RF_ECCENTRICITY_DEG / np.maximum(eccentricity, 1e-12))[:, None]

        counts = spec.unit_counts()
        types = np.concatenate([np.full(counts[t], t, dtype="<U15") for t in spec.unit_types])
        self.unit_types = types[rng.permutation(n)]
        if spec.rf_eccentricity_deg is not None:
            centres = offset_centres(n, spec.rf_eccentricity_deg, rng)
        self._stage, self.parameters = build_stage(spec, self.unit_types, centres, self.seed, rng)
        self.has_localised_rf = self._stage.localised

        def log_uniform(bounds: tuple[float, float], size: int) -> np.ndarray:
            low, high = np.log(max(bounds[0], 1e-9)), np.log(max(bounds[1], 1e-9))
            return np.exp(rng.uniform(low, high, size))

        weak = self.unit_types == "weak"
        self.spontaneous_hz = log_uniform(spec.spontaneous_hz, n)
        peak = log_uniform(spec.peak_hz, n)
        weak_drive = rng.uniform(*spec.weak_drive_hz, n)
        self.amplitude_hz = np.where(weak, weak_drive, np.maximum(peak - self.spontaneous_hz, 0.0))
        self.exponent = np.where(weak, 1.0, rng.uniform(*spec.exponent, n))
        self.time_course = TimeCourse.draw(n, spec.latency_s, rng)
        self.latencies_s = self.time_course.latency_s
        self.overdispersion = rng.uniform(*spec.overdispersion, n)
        self.shared_overdispersion = float(spec.shared_overdispersion)

        # A plugin brain's rates are taken as they are, as the mean over the response window of a
        # 100 ms stimulus (what a rig's callable brain gives); its grey-screen rate is its spontaneous one.
        self._rates_as_given = spec.family == "plugin"
        if self._rates_as_given:
            self.spontaneous_hz = self._stage.raw(np.full((1, self.size_px, self.size_px), GREY))[0]
            self.drive_scale = self.time_course.window_mean(PLUGIN_RATE_WINDOW_S, PLUGIN_STIMULUS_S)
            return
        calibration_seed = int(np.random.SeedSequence([self.seed, 1]).generate_state(1)[0])
        calibration = natural_images(
            spec.calibration_images,
            size_px=self.size_px,
            aperture_diameter_px=spec.aperture_diameter_px,
            seed=calibration_seed,
        )
        top = np.quantile(self._stage.raw(calibration), CALIBRATION_QUANTILE, axis=0)
        self.drive_scale = np.where(top > 1e-12, top, 1.0)

    # ----------------------------------------------------------------- rates
    def drive(self, images: np.ndarray) -> np.ndarray:
        """Sustained rate (Hz) each image evokes, before the time course.

        Parameters
        ----------
        images
            (H, W) or (n, H, W) in [0, 1] at the population's pixel scale; larger
            images are centre-cropped, smaller ones grey-padded.

        Returns
        -------
        (n, n_units) float64.
        """
        raw = self._stage.raw(images)
        if self._rates_as_given:  # the sustained rate whose window mean is the brain's rate (none below 0 Hz)
            return np.maximum(self.spontaneous_hz + (raw - self.spontaneous_hz) / self.drive_scale, 0.0)
        return output_rates(raw / self.drive_scale, self.spontaneous_hz, self.amplitude_hz, self.exponent)

    def expected_rates(
        self, images: np.ndarray, window_s: tuple[float, float] = (0.05, 0.10), duration_s: float = 0.1
    ) -> np.ndarray:
        """Exact expected rate (Hz) in a window after onset: the mean of the time course over it.

        Parameters
        ----------
        images
            As for `drive`.
        window_s
            (start, stop) after onset, seconds.
        duration_s
            How long the stimulus is shown.

        Returns
        -------
        (n, n_units) float64.
        """
        start, stop = _check_window(window_s)
        k = self.time_course.window_mean((start, stop), _positive(duration_s, "duration_s"))
        return self.spontaneous_hz + (self.drive(images) - self.spontaneous_hz) * k

    __call__ = expected_rates

    def rate_course(self, images: np.ndarray, t_s: np.ndarray, duration_s: float) -> np.ndarray:
        """Expected rate (Hz) at times ``t_s`` after onset (1 ms resolution).

        Returns
        -------
        (n, n_units, len(t_s)) float64.
        """
        k = self.time_course.at(np.atleast_1d(np.asarray(t_s, dtype=np.float64)), _positive(duration_s, "duration_s"))
        drive = self.drive(images)
        spont = self.spontaneous_hz[None, :, None]
        return spont + (drive[:, :, None] - spont) * k[None]

    def window_fano(
        self, images: np.ndarray, window_s: tuple[float, float] = (0.05, 0.10), duration_s: float = 0.1
    ) -> np.ndarray:
        """Analytic Fano factor of the window spike count, (n, n_units)."""
        start, stop = _check_window(window_s)
        mean_count = self.expected_rates(images, (start, stop), duration_s) * (stop - start)
        return spiking.fano_factor(mean_count, self.overdispersion[None, :], self.shared_overdispersion)

    @property
    def stage(self) -> DriveStage:
        """The family's drive stage (e.g. `closedloop.sim.deepnet.DeepStage`, whose layers a
        reference model may read); read it, do not change it."""
        return self._stage

    def receptive_fields(self) -> np.ndarray:
        """True linear receptive fields, (n_units, size_px, size_px), unit norm.

        Simple cells: their Gabor.  Complex cells: the even (phase 0) filter of the
        quadrature pair.  Centre-surround: the DoG, sign-flipped for OFF units.
        Texture and weak units have no localised linear RF: zeros (see
        ``has_localised_rf``).  Normalisation family: the centre's even Gabor (the
        normaliser makes the unit nonlinear).  Deep family: zeros.
        """
        return self._stage.receptive_fields().reshape(self.n_units, self.size_px, self.size_px).copy()

    # ---------------------------------------------------------------- spikes
    def sample_binned_counts(
        self,
        images: np.ndarray,
        n_repeats: int,
        *,
        duration_s: float,
        n_bins: int,
        bin_s: float = 0.001,
        t_start_s: float = 0.0,
        rng: RngLike = None,
    ) -> np.ndarray:
        """pvc-8-like binned spike counts.

        Parameters
        ----------
        images
            (n, H, W) stimuli.
        n_repeats
            Trials per image.
        duration_s
            How long each stimulus is shown.
        n_bins, bin_s, t_start_s
            Bins ``[t_start + j·bin, t_start + (j+1)·bin)`` after onset.
        rng
            Generator or seed.

        Returns
        -------
        (n_units, n_images, n_repeats, n_bins) uint8.
        """
        if not isinstance(n_repeats, (int, np.integer)) or n_repeats < 1:
            raise ValueError(f"n_repeats must be a whole number >= 1, got {n_repeats!r}")
        if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
            raise ValueError(f"n_bins must be a whole number >= 1, got {n_bins!r}")
        starts = t_start_s + np.arange(n_bins) * _positive(bin_s, "bin_s")
        course = self.time_course.interval_means(starts, starts + bin_s, _positive(duration_s, "duration_s"))
        return spiking.sample_binned_counts(
            self.spontaneous_hz,
            self.drive(images),
            course,
            bin_s,
            int(n_repeats),
            self.overdispersion,
            self.shared_overdispersion,
            _as_rng(rng),
        )

    def sample_spike_times(
        self,
        images: np.ndarray,
        onsets_s: np.ndarray,
        *,
        duration_s: float | np.ndarray,
        t_stop_s: float,
        rng: RngLike = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """A continuous recording: spontaneous activity throughout, a response after each onset.

        Parameters
        ----------
        images
            (n_trials, H, W): the image shown at each onset.
        onsets_s
            (n_trials,) increasing onset times in ``[0, t_stop_s)``.  A trial's
            response runs until the next onset, so leave room between them.
        duration_s
            Stimulus duration, one for all trials or one per trial.
        t_stop_s
            End of the recording.
        rng
            Generator or seed.

        Returns
        -------
        unit_index
            (n_spikes,) int32 index into ``unit_ids``.
        times_s
            (n_spikes,) float64, sorted.
        """
        onsets = np.atleast_1d(np.asarray(onsets_s, dtype=np.float64))
        durations = np.broadcast_to(np.asarray(duration_s, dtype=np.float64), onsets.shape).copy()
        if onsets.ndim != 1:
            raise ValueError(f"onsets_s must be 1-D, got shape {np.shape(onsets_s)}")
        if not np.isfinite(t_stop_s) or t_stop_s <= 0:
            raise ValueError(f"t_stop_s must be a positive number, got {t_stop_s!r}")
        if len(onsets) and (
            np.any(~np.isfinite(onsets)) or np.any(np.diff(onsets) <= 0) or onsets[0] < 0 or onsets[-1] >= t_stop_s
        ):
            raise ValueError("onsets_s must be finite, strictly increasing and within [0, t_stop_s)")
        if np.any(~np.isfinite(durations)) or np.any(durations <= 0):
            raise ValueError("duration_s must be positive")
        drive = self.drive(images) if len(onsets) else np.zeros((0, self.n_units))
        if len(drive) != len(onsets):
            raise ValueError(f"got {len(drive)} images for {len(onsets)} onsets; give one image per onset")
        return spiking.sample_spike_times(
            self.spontaneous_hz,
            drive,
            onsets,
            durations,
            float(t_stop_s),
            self.time_course,
            self.overdispersion,
            self.shared_overdispersion,
            _as_rng(rng),
        )

    def type_counts(self) -> dict[str, int]:
        """Number of units of each of the family's types."""
        return {t: int(np.sum(self.unit_types == t)) for t in self.spec.unit_types}

    def __repr__(self) -> str:
        return (
            f"SimulatedV1(family={self.spec.family}, n_units={self.n_units}, seed={self.seed}, "
            f"types={self.type_counts()})"
        )


def _positive(value: float, name: str) -> float:
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _check_window(window_s: tuple[float, float]) -> tuple[float, float]:
    try:
        start, stop = (float(v) for v in window_s)
    except (TypeError, ValueError):
        raise ValueError(f"window_s must be a (start, stop) pair of seconds, got {window_s!r}") from None
    if not (np.isfinite(start) and np.isfinite(stop) and stop > start):
        raise ValueError(f"window_s must have stop > start, got {window_s!r}")
    return start, stop
