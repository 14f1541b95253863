"""The recipe of a simulated V1 population (`PopulationSpec`) and its checks.

A spec holds every number that shapes the population; `SimulatedV1` draws the
units from it with the spec's seed.  Ranges are ``(low, high)`` pairs that unit
parameters are drawn from uniformly (log-uniformly for rates and spatial
frequencies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

#: The unit types of the classic family, in the order their counts are assigned.
UNIT_TYPES: tuple[str, ...] = ("simple", "complex", "centre_surround", "texture", "weak")
#: Model families and the unit types each draws (see `closedloop.sim.families`).
FAMILY_UNIT_TYPES: dict[str, tuple[str, ...]] = {
    "classic": UNIT_TYPES,
    "normalisation": ("simple", "complex"),
    "deep": ("layer1", "layer2", "layer3"),
    "pyramid": ("simple", "complex", "centre_surround"),
    "plugin": ("plugin",),
}
#: The pyramid family reads band 3 of a 4-band steerable pyramid, which needs this many pixels.
PYRAMID_MIN_SIZE_PX = 64
#: Stimulus sets an archive can show (see `closedloop.sim.stimuli`).
IMAGE_SETS: tuple[str, ...] = ("photographs", "pink_noise", "dead_leaves", "mixed")
_FAMILY_DEFAULT_FRACTIONS: dict[str, dict[str, float]] = {
    "normalisation": {"simple": 0.4, "complex": 0.6},
    "deep": {"layer1": 0.3, "layer2": 0.4, "layer3": 0.3},
    "pyramid": {"simple": 0.4, "complex": 0.4, "centre_surround": 0.2},
    "plugin": {"plugin": 1.0},
}

_DEFAULT_FRACTIONS = {
    "simple": 0.35,
    "complex": 0.30,
    "centre_surround": 0.10,
    "texture": 0.15,
    "weak": 0.10,
}


def default_fractions(family: str) -> dict[str, float]:
    """The unit-type fractions a family uses when a spec gives none."""
    return dict(_FAMILY_DEFAULT_FRACTIONS.get(family, _DEFAULT_FRACTIONS))


@dataclass(frozen=True)
class PopulationSpec:
    """Everything that defines a simulated V1 population.

    Attributes
    ----------
    n_units
        Number of units (any positive number; above 96 channels hold several units).
    fractions
        Fraction of units of each type (keys from `UNIT_TYPES`, summing to 1).
    size_px
        Side of the square pixel grid the population sees.
    pixels_per_degree
        Pixel scale of that grid.
    aperture_diameter_px
        Diameter of the circular aperture natural images are shown in; RF centres
        lie well inside it and gain calibration uses images in it.
    spontaneous_hz
        Range of spontaneous rates (drawn log-uniformly).
    peak_hz
        Range of the sustained rate a tuned unit reaches at its top natural images
        (98th percentile of the calibration set; drawn log-uniformly).
    weak_drive_hz
        Range of the rate a weakly tuned unit adds above spontaneous at its top
        natural images.
    exponent
        Range of the output-nonlinearity exponent of tuned units.
    latency_s
        Range of response latencies.
    sf_cpd
        Range of preferred spatial frequencies of Gabor and texture units (c/deg).
    overdispersion
        Range of each unit's private trial-gain variance (gamma gain, mean 1): the
        window-count Fano factor is ``1 + overdispersion * mean count`` (plus the
        shared part).
    shared_overdispersion
        Variance of a gamma gain shared by all units on a trial (0 turns it off).
    retinotopic_gradient_deg_per_mm
        How far RF centres move per mm across the Utah array.
    rf_scatter_deg
        Standard deviation of RF-centre scatter around the retinotopic map.
    calibration_images
        Number of seeded natural images the unit gains are calibrated on.
    seed
        Seed of everything random in the population; ``None`` draws one (recorded
        by `SimulatedV1`).
    network_seed
        Deep family only: seed of the network's random weights.  ``None`` takes
        ``seed``.  Give several sessions (population seeds) one ``network_seed`` to
        record different units of one brain, as a lab's sessions do.
    family
        Model class of the units' stimulus-to-drive stage: ``"classic"`` (LN
        filters and energy models), ``"normalisation"`` (divisive normalisation
        with tuned surround suppression and contrast saturation), ``"deep"``
        (a seeded random multi-layer convolutional network read out at several
        depths) or ``"pyramid"`` (plenoptic's steerable pyramid and fitted
        on/off front end, `closedloop.sim.pyramid`; needs plenoptic) or ``"plugin"``
        (``brain``'s own rates, `closedloop.sim.plugin`).  Fractions then use that family's unit types
        (`FAMILY_UNIT_TYPES`); left at the default they take the family's own.
    brain
        Plugin family only: ``"package.module:callable"``, a brain mapping (n, H, W)
        images in [0, 1] to (n, n_units) expected rates in Hz; it must be importable
        (installed, or on ``PYTHONPATH``) wherever the population is rebuilt.
    images
        Stimulus set an archive shows: ``"photographs"``, ``"pink_noise"`` (1/f),
        ``"dead_leaves"`` or ``"mixed"`` (a third of each).  Gains are always
        calibrated on photographs, so the brain is the same whatever it is shown.
    rf_eccentricity_deg
        ``None``: RF centres follow the retinotopic map within 0.3 deg of the
        centre.  A ``[low, high]`` range: centres sit at a uniformly drawn distance
        in that range from the aperture centre, at a random angle (off-centre, and
        partly outside a 0.625 deg aperture radius above about 0.5 deg).
    semisaturation_contrast
        Normalisation family: range of each unit's semi-saturation RMS contrast.
    surround_suppression
        Normalisation family: range of the weight of each unit's tuned surround
        in its normaliser.
    """

    n_units: int = 40
    fractions: dict[str, float] = field(default_factory=lambda: dict(_DEFAULT_FRACTIONS))
    size_px: int = 66
    pixels_per_degree: float = 48.0
    aperture_diameter_px: float = 60.0
    spontaneous_hz: tuple[float, float] = (1.0, 10.0)
    peak_hz: tuple[float, float] = (20.0, 80.0)
    weak_drive_hz: tuple[float, float] = (1.0, 5.0)
    exponent: tuple[float, float] = (1.5, 2.5)
    latency_s: tuple[float, float] = (0.04, 0.06)
    sf_cpd: tuple[float, float] = (1.0, 4.0)
    overdispersion: tuple[float, float] = (0.2, 0.6)
    shared_overdispersion: float = 0.05
    retinotopic_gradient_deg_per_mm: float = 0.08
    rf_scatter_deg: float = 0.04
    calibration_images: int = 256
    seed: int | None = None
    network_seed: int | None = None
    family: str = "classic"
    brain: str | None = None
    images: str = "photographs"
    rf_eccentricity_deg: tuple[float, float] | None = None
    semisaturation_contrast: tuple[float, float] = (0.04, 0.12)
    surround_suppression: tuple[float, float] = (0.5, 2.0)

    def __post_init__(self) -> None:
        # Normalise containers so specs built from YAML lists compare equal.
        if not isinstance(self.fractions, dict):
            raise ValueError(
                f"PopulationSpec.fractions: must be a mapping of unit type to fraction, got {self.fractions!r}"
            )
        if self.fractions == _DEFAULT_FRACTIONS and self.family in _FAMILY_DEFAULT_FRACTIONS:
            object.__setattr__(self, "fractions", dict(_FAMILY_DEFAULT_FRACTIONS[self.family]))
        if isinstance(self.rf_eccentricity_deg, (list, tuple)) and len(self.rf_eccentricity_deg) == 2:
            object.__setattr__(self, "rf_eccentricity_deg", tuple(float(v) for v in self.rf_eccentricity_deg))
        object.__setattr__(
            self, "fractions", {str(k): (float(v) if _is_number(v) else v) for k, v in self.fractions.items()}
        )
        for name in _RANGE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, (list, tuple)) and len(value) == 2:
                object.__setattr__(self, name, (float(value[0]), float(value[1])))
        problems = spec_problems(self)
        if problems:
            name, message = problems[0]
            raise ValueError(f"PopulationSpec.{name}: {message}")

    @property
    def unit_types(self) -> tuple[str, ...]:
        """The unit types of this spec's family."""
        return FAMILY_UNIT_TYPES[self.family]

    def unit_counts(self) -> dict[str, int]:
        """Number of units of each type (largest-remainder rounding of the fractions)."""
        types = self.unit_types
        raw = {t: self.fractions.get(t, 0.0) * self.n_units for t in types}
        counts = {t: int(math.floor(v)) for t, v in raw.items()}
        remainder = self.n_units - sum(counts.values())
        by_fraction_left = sorted(types, key=lambda t: (counts[t] - raw[t], types.index(t)))
        for t in by_fraction_left[:remainder]:
            counts[t] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (lists for ranges), as a scenario file writes it."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (tuple, dict)):  # None stays None
                value = list(value) if isinstance(value, tuple) else dict(value)
            out[f.name] = value
        return out


_RANGE_FIELDS = (
    "spontaneous_hz",
    "peak_hz",
    "weak_drive_hz",
    "exponent",
    "latency_s",
    "sf_cpd",
    "overdispersion",
    "semisaturation_contrast",
    "surround_suppression",
)

# (low bound, high bound, low inclusive) allowed for each range's ends.
_RANGE_LIMITS: dict[str, tuple[float, float, bool]] = {
    "spontaneous_hz": (0.0, 200.0, True),
    "peak_hz": (0.0, 500.0, False),
    "weak_drive_hz": (0.0, 200.0, True),
    "exponent": (0.5, 5.0, True),
    "latency_s": (0.0, 0.5, True),
    "sf_cpd": (0.0, 24.0, False),
    "overdispersion": (0.0, 5.0, True),
    "semisaturation_contrast": (0.0, 1.0, False),
    "surround_suppression": (0.0, 10.0, True),
    "rf_eccentricity_deg": (0.0, 1.0, True),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def spec_problems(spec: Any) -> list[tuple[str, str]]:
    """Every problem with a spec's values, as ``(field, message)`` pairs (empty if fine).

    ``spec`` is a `PopulationSpec` or anything with the same attributes (the
    scenario loader checks values before it builds the spec).
    """
    problems: list[tuple[str, str]] = []

    def need(ok: bool, name: str, message: str) -> None:
        if not ok:
            problems.append((name, message))

    for name in ("n_units", "size_px", "calibration_images"):
        value = getattr(spec, name)
        need(
            isinstance(value, int) and not isinstance(value, bool) and value > 0,
            name,
            f"must be a positive whole number, got {value!r}",
        )
    for name in ("seed", "network_seed"):
        value = getattr(spec, name)
        if value is not None:
            need(
                isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                name,
                f"must be a non-negative whole number or null, got {value!r}",
            )
    need(
        _is_number(spec.pixels_per_degree) and spec.pixels_per_degree > 0,
        "pixels_per_degree",
        f"must be a positive number, got {spec.pixels_per_degree!r}",
    )
    need(
        _is_number(spec.aperture_diameter_px) and spec.aperture_diameter_px > 0,
        "aperture_diameter_px",
        f"must be a positive number, got {spec.aperture_diameter_px!r}",
    )
    for name in ("shared_overdispersion", "retinotopic_gradient_deg_per_mm", "rf_scatter_deg"):
        value = getattr(spec, name)
        need(_is_number(value) and value >= 0, name, f"must be a number >= 0, got {value!r}")

    need(
        spec.family in FAMILY_UNIT_TYPES,
        "family",
        f"unknown family {spec.family!r}; allowed: {', '.join(FAMILY_UNIT_TYPES)}",
    )
    if spec.network_seed is not None and spec.family in FAMILY_UNIT_TYPES:
        # only the deep family has weights shared by all its units; elsewhere it would be ignored
        need(spec.family == "deep", "network_seed", f"applies to family deep only, not {spec.family}; remove it")
    if spec.family == "plugin":
        need(
            isinstance(spec.brain, str) and spec.brain.count(":") == 1 and all(spec.brain.split(":")),
            "brain",
            f"family plugin needs brain: 'package.module:callable', got {spec.brain!r}",
        )
    elif spec.brain is not None:
        need(False, "brain", f"applies to family plugin only, not {spec.family}; remove it or set family: plugin")
    if spec.family == "pyramid" and isinstance(spec.size_px, int):
        # its coarsest band read is the steerable pyramid's fourth, which needs 64 px or more
        need(spec.size_px >= PYRAMID_MIN_SIZE_PX, "size_px", f"family pyramid needs at least {PYRAMID_MIN_SIZE_PX} px")
    need(spec.images in IMAGE_SETS, "images", f"unknown image set {spec.images!r}; allowed: {', '.join(IMAGE_SETS)}")
    optional = ("rf_eccentricity_deg",) if spec.rf_eccentricity_deg is not None else ()
    for name in _RANGE_FIELDS + optional:
        value = getattr(spec, name)
        low_bound, high_bound, low_inclusive = _RANGE_LIMITS[name]
        if not (isinstance(value, tuple) and len(value) == 2 and all(_is_number(v) for v in value)):
            problems.append((name, f"must be a [low, high] pair of numbers, got {value!r}"))
            continue
        low, high = value
        above = low >= low_bound if low_inclusive else low > low_bound
        need(
            above and high <= high_bound and low <= high,
            name,
            f"must satisfy {low_bound} {'<=' if low_inclusive else '<'} low <= high <= {high_bound}, "
            f"got [{low}, {high}]",
        )

    fractions = spec.fractions
    types = FAMILY_UNIT_TYPES.get(spec.family, UNIT_TYPES)
    unknown = sorted(set(fractions) - set(types))
    need(not unknown, "fractions", f"unknown unit type(s) {unknown} for family {spec.family!r}; allowed: {list(types)}")
    if all(_is_number(v) for v in fractions.values()):
        need(all(v >= 0 for v in fractions.values()), "fractions", "fractions must be >= 0")
        need(
            abs(sum(fractions.values()) - 1.0) <= 1e-3,
            "fractions",
            f"must sum to 1, they sum to {sum(fractions.values()):.4g}",
        )
    else:
        problems.append(("fractions", "every fraction must be a number"))
    if _is_number(spec.aperture_diameter_px) and isinstance(spec.size_px, int):
        need(
            spec.aperture_diameter_px <= spec.size_px,
            "aperture_diameter_px",
            f"must fit in the grid (size_px = {spec.size_px}), got {spec.aperture_diameter_px}",
        )
    return problems
