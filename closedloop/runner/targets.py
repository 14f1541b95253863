"""Which units get synthesized images, and at which rates (docs/methods.md, Synthesis).

Units: the ``top_k`` best by the newest model's held-out r.  Targets: ``pNN`` is the
NNth percentile of the unit's measured mean rates over the natural images recorded
so far (mean over repeats per image), ``max`` is NaN (the server maximises), ``NNhz``
an absolute rate.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from closedloop.config.protocol import Protocol, Synthesis, parse_target
from closedloop.config.target_span import narrow_percentile_targets
from closedloop.errors import ClosedLoopError
from closedloop.messages import ModelUpdated


class SynthesisPlanError(ClosedLoopError):
    """A synthesize block cannot be planned (too few fitted units, no per-unit r…)."""


def check_protocol_units(protocol: Protocol, n_units: int) -> None:
    """Raise `ConfigError` if the protocol asks for more units than the session has."""
    if protocol.synthesis is not None and protocol.synthesis.units.top_k > n_units:
        raise protocol.error(
            "synthesis.units.top_k",
            f"asks for the best {protocol.synthesis.units.top_k} units but the session has "
            f"{n_units} unit(s); lower top_k to at most {n_units}",
        )


def top_units(update: ModelUpdated, top_k: int) -> np.ndarray:
    """The ``top_k`` unit ids with the highest held-out r (NaN last), best first.

    Raises
    ------
    SynthesisPlanError
        If the model has fewer than ``top_k`` fitted units, or sent no per-unit r.
    """
    if update.unit_ids is None or update.heldout_r is None:
        raise SynthesisPlanError(
            f"model version {update.version} sent no per-unit held-out r "
            "(ModelUpdated.unit_ids/heldout_r), so the best units cannot be chosen"
        )
    ids = np.asarray(update.unit_ids, dtype=np.int64)
    r = np.asarray(update.heldout_r, dtype=np.float64)
    if top_k > ids.size:
        raise SynthesisPlanError(
            f"synthesis.units.top_k is {top_k} but model version {update.version} has fitted "
            f"only {ids.size} unit(s); lower top_k to at most {ids.size}"
        )
    order = np.lexsort((ids, -np.nan_to_num(r, nan=-np.inf)))
    return ids[order[:top_k]]


def well_fit_units(update: ModelUpdated, units: np.ndarray, min_r: float) -> tuple[np.ndarray, str]:
    """The units whose held-out r is at least ``min_r``, and a message naming those skipped ("" if none)."""
    r_of = dict(zip(np.asarray(update.unit_ids).tolist(), np.asarray(update.heldout_r, dtype=np.float64).tolist()))
    r = np.asarray([r_of.get(int(u), np.nan) for u in units], dtype=np.float64)
    keep = np.isfinite(r) & (r >= min_r)
    if keep.all():
        return units, ""
    skipped = ", ".join(f"{int(u)} (r {v:.2f})" for u, v in zip(units[~keep], r[~keep]))
    return units[keep], (
        f"units {skipped} skipped: held-out r below synthesis.units.min_heldout_r = {min_r:g} "
        f"(model version {update.version}), so the model cannot promise their rates"
    )


def natural_means(history: Iterable, natural_ids: np.ndarray, unit_ids: np.ndarray) -> np.ndarray:
    """(n_images_seen, n_units) mean rate per natural image over its repeats so far."""
    natural = set(int(i) for i in natural_ids)
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for data in history:
        for stimulus_id, rates in zip(data.stimulus_ids, data.rates):
            key = int(stimulus_id)
            if key in natural:
                sums[key] = sums.get(key, 0) + rates
                counts[key] = counts.get(key, 0) + 1
    if not sums:
        return np.zeros((0, len(unit_ids)))
    return np.stack([sums[k] / counts[k] for k in sorted(sums)])


def narrow_targets(
    synthesis: Synthesis, units: np.ndarray, unit_ids: np.ndarray, means: np.ndarray, targets: np.ndarray
) -> list[str]:
    """A warning per unit whose percentile targets (``targets``, from `target_rates`) span little of
    its measured natural-image range (`closedloop.config.target_span`)."""
    if means.shape[0] == 0:
        return []
    percentile = [j for j, text in enumerate(synthesis.targets) if parse_target(text).kind == "percentile"]
    column = {int(u): k for k, u in enumerate(unit_ids)}
    lines = [
        narrow_percentile_targets(int(unit), targets[i, percentile], float(np.ptp(means[:, column[int(unit)]])))
        for i, unit in enumerate(units)
    ]
    return [line for line in lines if line]


def target_rates(synthesis: Synthesis, units: np.ndarray, unit_ids: np.ndarray, means: np.ndarray) -> np.ndarray:
    """(len(units), n_targets) target rate in Hz (NaN = maximise).

    Raises
    ------
    SynthesisPlanError
        If a percentile target is asked for before any natural image was recorded.
    """
    column = {int(u): k for k, u in enumerate(unit_ids)}
    out = np.empty((len(units), len(synthesis.targets)))
    for j, text in enumerate(synthesis.targets):
        target = parse_target(text)
        if target.kind == "max":
            out[:, j] = np.nan
        elif target.kind == "rate":
            out[:, j] = target.value
        else:
            if means.shape[0] == 0:
                raise SynthesisPlanError(
                    f"target {text!r} is a percentile of measured natural-image rates, but "
                    "no natural-image responses have been recorded yet"
                )
            percentile = target.value
            if percentile is None:  # parse_target gives every percentile target its value
                raise RuntimeError(f"target {text!r} has no percentile")
            for i, unit in enumerate(units):
                out[i, j] = np.percentile(means[:, column[int(unit)]], percentile)
    return out
