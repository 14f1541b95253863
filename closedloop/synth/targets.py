"""Which units to synthesize for and at what rates: parsing and resolving targets.

The target grammar is the protocol file's (`closedloop.config.protocol.parse_target`):
``"p20"`` (20th percentile of the unit's natural-image mean rates over the images the
model was fitted on, from the checkpoint's ``rate_statistics``), ``"max"`` (as high as
the model allows) and ``"12.5hz"`` (an absolute rate).  Units are chosen by id
(``"3,7,12"``), by held-out performance (``"top:10"``) or all at once (``"all"``).

Population patterns hold other units at their *baseline*: the model's prediction for a
uniform screen at the rig's mean luminance (the blank between stimuli), i.e. the
spontaneous rate the model has learnt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from closedloop.config.protocol import Target, parse_target
from closedloop.errors import ClosedLoopError

#: Paper's range (Kindel et al. 2019, Fig. 4).
DEFAULT_TARGETS = ("p20", "p35", "p50", "p65", "p80")

__all__ = [
    "DEFAULT_TARGETS",
    "SynthesisJob",
    "Target",
    "build_jobs",
    "parse_targets",
    "rate_target",
    "resolve_target_hz",
    "select_units",
    "target_label",
]


def rate_target(hz: float) -> Target:
    """An absolute-rate target, checked: finite and not negative.

    Raises
    ------
    ClosedLoopError
        NaN, infinite or negative rates.
    """
    try:
        value = float(hz)
    except (TypeError, ValueError):
        raise ClosedLoopError(f"target rate must be a number of Hz, got {hz!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ClosedLoopError(f"target rate must be a finite rate of 0 Hz or more, got {hz!r}")
    return Target("rate", value)


def parse_targets(spec: str | Sequence[str | float | Target]) -> list[Target]:
    """Targets from ``"p20,p50,max,12.5hz"`` or a list of strings, numbers (Hz) or `Target`.

    Raises
    ------
    ClosedLoopError
        An empty list, or an entry that is not a percentile, ``max`` or a finite,
        non-negative rate; the message says which entry and what is allowed.
    """
    items = [part for part in spec.split(",")] if isinstance(spec, str) else list(spec)
    if not items or all(isinstance(item, str) and not item.strip() for item in items):
        raise ClosedLoopError("no targets given; write e.g. 'p20,p50,p80', 'max' or '12.5hz'")
    targets = []
    for item in items:
        if isinstance(item, Target):
            targets.append(_checked(item))
        elif isinstance(item, str):
            text = item.strip().lower()
            if text.startswith("-") or "nan" in text or "inf" in text:
                raise ClosedLoopError(f"target {item.strip()!r}: rates must be finite and 0 Hz or more")
            try:
                targets.append(_checked(parse_target(text)))
            except ValueError as error:
                raise ClosedLoopError(str(error)) from None
        else:
            targets.append(rate_target(item))
    return targets


def _value(target: Target) -> float:
    """A rate or percentile target's number (only "max" has none)."""
    if target.value is None:
        raise ClosedLoopError(f"a {target.kind} target needs a value")
    return float(target.value)


def _checked(target: Target) -> Target:
    if target.kind == "rate":
        return rate_target(_value(target))
    if target.kind == "percentile" and not (target.value is not None and 0 < target.value < 100):
        raise ClosedLoopError(f"percentile target must be between p0 and p100 (exclusive), got {target.value!r}")
    if target.kind not in ("rate", "percentile", "max"):
        raise ClosedLoopError(f"unknown target kind {target.kind!r}")
    return target


def target_label(target: Target) -> str:
    """The short text form: ``p20``, ``max``, ``12.5hz``."""
    if target.kind == "max":
        return "max"
    if target.kind == "percentile":
        return f"p{target.value:g}"
    return f"{target.value:g}hz"


def resolve_target_hz(target: Target, percentiles: np.ndarray) -> float:
    """The rate in Hz a target asks for; NaN for ``max``.

    Parameters
    ----------
    target
        A parsed target.
    percentiles
        (101,) the unit's 0th..100th percentiles of natural-image mean rates; a
        fractional percentile (``p12.5``) is interpolated.
    """
    if target.kind == "max":
        return math.nan
    if target.kind == "rate":
        return _value(target)
    grid = np.linspace(0.0, 100.0, len(percentiles))
    return float(np.interp(_value(target), grid, np.asarray(percentiles, dtype=np.float64)))


def select_units(spec: str | Sequence[int], unit_ids: np.ndarray, heldout_r: np.ndarray | None = None) -> np.ndarray:
    """Model output columns for a unit selection.

    Parameters
    ----------
    spec
        ``"all"``, ``"top:K"`` (the K units with the highest held-out r), ``"3,7,12"``
        (unit ids) or a sequence of ids.
    unit_ids
        The model's unit ids, in output order.
    heldout_r
        Held-out r per model unit (needed for ``top:K``); NaN counts as worst.

    Raises
    ------
    ClosedLoopError
        Unknown or repeated ids, a malformed selection, or ``top:K`` without metrics.
    """
    unit_ids = np.asarray(unit_ids, dtype=np.int64)
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "all":
            return np.arange(unit_ids.size)
        if text.startswith("top:"):
            return _top_units(text[4:], unit_ids, heldout_r)
        try:
            wanted = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ClosedLoopError(
                f"--units {spec!r} is not understood; give unit ids like '3,7,12', 'top:10' or 'all'"
            ) from None
    else:
        wanted = [int(u) for u in spec]
    if not wanted:
        raise ClosedLoopError("no units given; give unit ids like '3,7,12', 'top:10' or 'all'")
    if len(set(wanted)) != len(wanted):
        raise ClosedLoopError(f"unit ids are repeated in {wanted}")
    columns = {int(u): i for i, u in enumerate(unit_ids)}
    unknown = [u for u in wanted if u not in columns]
    if unknown:
        known = ", ".join(map(str, unit_ids[:20])) + (" …" if unit_ids.size > 20 else "")
        raise ClosedLoopError(f"unit id(s) {', '.join(map(str, unknown))} are not in the model (its units: {known})")
    return np.asarray([columns[u] for u in wanted], dtype=np.int64)


def _top_units(count_text: str, unit_ids: np.ndarray, heldout_r: np.ndarray | None) -> np.ndarray:
    try:
        count = int(count_text)
    except ValueError:
        raise ClosedLoopError(f"top:{count_text} is not understood; write top:K with K a whole number") from None
    if count < 1:
        raise ClosedLoopError(f"top:{count} must pick at least one unit")
    if heldout_r is None or len(heldout_r) != unit_ids.size:
        raise ClosedLoopError("top:K needs the model's held-out r per unit, which this model file does not record")
    r = np.where(np.isfinite(heldout_r), heldout_r, -np.inf)
    order = np.argsort(-r, kind="stable")
    return np.sort(order[: min(count, unit_ids.size)])


@dataclass(frozen=True)
class SynthesisJob:
    """One image to synthesize.

    Attributes
    ----------
    unit
        Model output column of the driven unit.
    target
        What was asked for.
    target_hz
        The resolved rate; NaN when maximising.
    hold
        Model columns held at ``hold_hz`` (population patterns); empty for none.
    hold_hz
        Baseline rates of the held units, same length as ``hold``.
    """

    unit: int
    target: Target
    target_hz: float
    hold: tuple[int, ...] = ()
    hold_hz: tuple[float, ...] = ()

    @property
    def maximise(self) -> bool:
        return self.target.kind == "max"

    @property
    def label(self) -> str:
        return target_label(self.target)


def build_jobs(
    units: np.ndarray,
    targets: Sequence[Target],
    percentiles: np.ndarray,
    *,
    hold: Sequence[int] | None = None,
    baseline_hz: np.ndarray | None = None,
    images_per_target: int = 1,
) -> list[SynthesisJob]:
    """Every (unit, target) pair as a job, unit-major (all targets of a unit together).

    Parameters
    ----------
    units
        Model columns to drive.
    targets
        Parsed targets.
    percentiles
        (101, n_model_units) rate percentiles from the checkpoint.
    hold
        Model columns to hold at baseline while driving each unit (the driven unit
        itself is never held).  ``None``: no population pattern.
    baseline_hz
        (n_model_units,) baseline rates; required with ``hold``.
    images_per_target
        Images (different noise seeds) per unit and target.
    """
    percentiles = np.asarray(percentiles, dtype=np.float64)
    if hold and baseline_hz is None:
        raise ValueError("holding units at baseline needs baseline_hz")
    jobs: list[SynthesisJob] = []
    for unit in np.asarray(units, dtype=np.int64):
        held = tuple(int(h) for h in (hold or ()) if int(h) != int(unit))
        held_hz = tuple(float(baseline_hz[h]) for h in held) if held and baseline_hz is not None else ()
        for target in targets:
            hz = resolve_target_hz(target, percentiles[:, unit])
            jobs.extend(SynthesisJob(int(unit), target, hz, held, held_hz) for _ in range(images_per_target))
    return jobs
