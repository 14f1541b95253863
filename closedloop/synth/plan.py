"""Synthesis from a fitted checkpoint: units, targets and population patterns → images.

The one entry point the command line, the benchmark and the model server share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from closedloop.data.dataset import Preprocessing
from closedloop.data.loader import load_dataset
from closedloop.errors import ClosedLoopError
from closedloop.model.checkpoint import check_compatible
from closedloop.synth.canvas import Canvas
from closedloop.synth.contrast import DEFAULT_QUANTILE, FLOOR_QUANTILE, natural_bounds
from closedloop.synth.optimise import ProgressCallback, SynthesisResult, SynthesisSettings, synthesize
from closedloop.synth.starts import StartImages
from closedloop.synth.targets import Target, build_jobs, parse_targets, select_units


#: Units whose held-out r is below this are not synthesized for: their model is not
#: good enough to promise a rate (the protocol's ``synthesis.units.min_heldout_r``).
DEFAULT_MIN_HELDOUT_R = 0.3


@dataclass
class CheckpointSynthesis:
    """A `SynthesisResult` with what it was made from."""

    result: SynthesisResult
    unit_ids: np.ndarray  # the model's unit ids, output order
    baseline_hz: np.ndarray  # (n_units,) prediction for the blank (mean-luminance) screen
    scale_hz: np.ndarray  # (n_units,) natural-image rate range used to weigh losses
    skipped: list[tuple[int, float]] = field(default_factory=list)  # (unit id, held-out r) below the threshold
    contrast: dict = field(default_factory=dict)  # the RMS-contrast bound used and where it came from


def well_fit(columns: np.ndarray, heldout_r: np.ndarray | None, min_r: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Split model columns into those with held-out r >= ``min_r`` and those below (NaN counts as below).

    With no threshold or no recorded r, every column is kept.
    """
    columns = np.asarray(columns, dtype=np.int64)
    if min_r is None or heldout_r is None:
        return columns, columns[:0]
    r = np.asarray(heldout_r, dtype=np.float64)[columns]
    good = np.isfinite(r) & (r >= min_r)
    return columns[good], columns[~good]


def contrast_bound(checkpoint, requested: float | str | None) -> dict:
    """The RMS-contrast bounds to use: ``"natural"`` (default), a cap, or ``None``/``"none"`` for none.

    ``"natural"``: the fit images' own range, capped at their `DEFAULT_QUANTILE` and raised
    to at least their `FLOOR_QUANTILE` (`closedloop.synth.contrast`); a number caps only.
    Returns ``{"max_contrast": value or None, "min_contrast": value or None, "source": text}``.
    """
    if requested is None or requested == "none":
        return {"max_contrast": None, "min_contrast": None, "source": "none (no contrast bound asked for)"}
    if requested == "natural":
        metrics = checkpoint.metrics if isinstance(checkpoint.metrics, dict) else {}
        value, floor = natural_bounds(metrics.get("image_statistics"))
        if value is None:
            return {
                "max_contrast": None,
                "min_contrast": None,
                "source": "none: the model records no natural-image contrast "
                "(fitted by an older closedloop); pass --contrast RMS",
            }
        return {
            "max_contrast": value,
            "min_contrast": floor,
            "source": f"natural images: the {FLOOR_QUANTILE:g} to {DEFAULT_QUANTILE:g} quantiles of the fit "
            "images' RMS contrast",
        }
    value = float(requested)
    if not np.isfinite(value) or value <= 0:
        raise ClosedLoopError(f"contrast bound must be a positive RMS contrast, 'natural' or 'none', got {requested!r}")
    return {"max_contrast": value, "min_contrast": None, "source": "given"}


def heldout_r(metrics: dict, n_units: int) -> np.ndarray | None:
    """Held-out r per model unit from a checkpoint's metrics (``None`` if not recorded)."""
    try:
        values = metrics["metrics"]["units"]["r"]
    except (KeyError, TypeError):
        return None
    r = np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return r if r.size == n_units else None


def unit_metric(metrics: dict, name: str, n_units: int) -> np.ndarray | None:
    """Any per-unit held-out metric (``r``, ``rmax``, ``r_over_rmax`` …) or ``None``."""
    try:
        values = metrics["metrics"]["units"][name]
    except (KeyError, TypeError):
        return None
    out = np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return out if out.size == n_units else None


def natural_rate_range(percentiles: np.ndarray) -> np.ndarray:
    """(n_units,) max − min of each unit's natural-image mean rates (fit images)."""
    percentiles = np.asarray(percentiles, dtype=np.float64)
    return percentiles[-1] - percentiles[0]


def baseline_rates(model: torch.nn.Module, canvas: Canvas, device: torch.device) -> np.ndarray:
    """The model's prediction for the blank screen at mean luminance, (n_units,)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(torch.as_tensor(canvas.blank(1), device=device)).float().cpu().numpy()[0].astype(np.float64)
    finally:
        model.train(was_training)


def synthesize_from_checkpoint(
    checkpoint,
    units: str | Sequence[int] = "all",
    targets: str | Sequence[str | float | Target] = "p20,p35,p50,p65,p80",
    *,
    hold_others: bool = False,
    hold: Sequence[int] | None = None,
    settings: SynthesisSettings = SynthesisSettings(),
    canvas: Canvas | None = None,
    seed: int = 0,
    images_per_target: int = 1,
    progress: ProgressCallback | None = None,
    min_heldout_r: float | None = DEFAULT_MIN_HELDOUT_R,
    contrast: float | str | None = "natural",
    starts: StartImages | None = None,
) -> CheckpointSynthesis:
    """Synthesize images for a loaded `closedloop.model.checkpoint.Checkpoint`.

    Parameters
    ----------
    checkpoint
        The fitted model (ensemble) and its records; runs on its model's device.
    units
        ``"all"``, ``"top:K"``, ``"3,7,12"`` or a list of unit ids.
    targets
        ``"p20,p50,max,12.5hz"`` or a list (see `closedloop.synth.targets.parse_targets`).
    hold_others
        Hold every other *selected* unit at its baseline while driving each unit.
    hold
        Unit ids to hold at baseline while driving each unit (added to ``hold_others``).
    settings, canvas, seed, images_per_target, progress
        As for `closedloop.synth.optimise.synthesize`; ``canvas`` defaults to the
        checkpoint's preprocessing on a 66-px display with a 60-px aperture.
    min_heldout_r
        Selected units with a held-out r below this are skipped (listed in
        ``skipped``); ``None`` keeps every unit.
    contrast
        RMS-contrast bound (see `contrast_bound`); used only when ``canvas`` has none.
    starts
        The images the model was fitted on (`checkpoint_starts`): each rate target edits one
        close to it (`closedloop.synth.starts`); ``None``: images start from the blank screen.

    Raises
    ------
    ClosedLoopError
        Unknown units, bad targets, no selected unit above ``min_heldout_r``, or a
        checkpoint without rate statistics.
    """
    model = checkpoint.model
    unit_ids = np.asarray(checkpoint.unit_ids, dtype=np.int64)
    n_units = unit_ids.size
    canvas = canvas or Canvas.for_preprocessing(checkpoint.preprocessing)
    if canvas.model_size != checkpoint.input_size:
        raise ClosedLoopError(f"canvas is {canvas.model_size} px but the model takes {checkpoint.input_size} px")
    percentiles = np.asarray(checkpoint.rate_statistics.percentiles, dtype=np.float64)
    if percentiles.shape != (101, n_units) or not np.all(np.isfinite(percentiles)):
        raise ClosedLoopError(
            f"{checkpoint.path}: the model's rate percentiles are missing or damaged "
            f"(shape {percentiles.shape}); refit it with this closedloop"
        )
    r = heldout_r(checkpoint.metrics, n_units)
    columns, below = well_fit(select_units(units, unit_ids, r), r, min_heldout_r)
    skipped = [(int(unit_ids[c]), float(r[c])) for c in below] if r is not None else []
    if columns.size == 0:
        listing = ", ".join(f"{u} (r {v:.2f})" for u, v in skipped[:10])
        raise ClosedLoopError(
            f"no selected unit has a held-out r >= {min_heldout_r}: {listing}; the model cannot "
            "promise rates for them (lower --min-r to synthesize anyway)"
        )
    if canvas.max_contrast is None:
        bound = contrast_bound(checkpoint, contrast)
        canvas = replace(canvas, max_contrast=bound["max_contrast"], min_contrast=bound["min_contrast"])
    else:
        bound = {"max_contrast": canvas.max_contrast, "min_contrast": canvas.min_contrast, "source": "given"}
    parsed = parse_targets(targets)
    if images_per_target < 1:
        raise ClosedLoopError(f"images per target must be at least 1, got {images_per_target}")
    device = next(model.parameters()).device
    baseline = baseline_rates(model, canvas, device)
    held: list[int] = list(columns) if hold_others else []
    if hold:
        held += [int(c) for c in select_units(list(hold), unit_ids) if int(c) not in held]
    jobs = build_jobs(
        columns, parsed, percentiles, hold=held or None, baseline_hz=baseline, images_per_target=images_per_target
    )
    scale = natural_rate_range(percentiles)
    result = synthesize(
        model,
        jobs,
        canvas=canvas,
        scale_hz=scale,
        settings=settings,
        seed=seed,
        device=device,
        progress=progress,
        starts=starts,
    )
    result.extra.update(
        contrast_bound=bound,
        min_heldout_r=min_heldout_r,
        skipped_units=[{"unit_id": u, "heldout_r": v} for u, v in skipped],
    )
    return CheckpointSynthesis(
        result=result, unit_ids=unit_ids, baseline_hz=baseline, scale_hz=scale, skipped=skipped, contrast=bound
    )


def checkpoint_starts(checkpoint, data: str | Path | None = None) -> StartImages:
    """The images a checkpoint was fitted on (train and early-stopping images), with their measured rates.

    Parameters
    ----------
    checkpoint
        The fitted model (`closedloop.model.checkpoint.Checkpoint`).
    data
        The session or pvc-8 file it was fitted on; ``None``: the file the model records.

    Raises
    ------
    ClosedLoopError
        The file is missing or unreadable, or it is not the data the model was fitted on
        (other preprocessing, other units, or the fitted images are not in it).
    """
    metrics = checkpoint.metrics if isinstance(checkpoint.metrics, dict) else {}
    path = Path(data) if data is not None else (Path(metrics["source"]) if metrics.get("source") else None)
    if path is None:
        raise ClosedLoopError(f"{checkpoint.path} does not record the file it was fitted on")
    if not path.is_file():
        raise ClosedLoopError(
            f"{path}: no such file (the data {checkpoint.path} was fitted on); give it with --data FILE"
        )
    window = metrics.get("window_s")
    dataset = load_dataset(
        path,
        preprocessing=Preprocessing(**checkpoint.preprocessing),
        window_s=None if window is None else (float(window[0]), float(window[1])),
        units="all",  # pvc-8: every unit, whichever the fit kept; the model's own are picked below
    )
    check_compatible(checkpoint, dataset)
    row_of = {int(image): row for row, image in enumerate(dataset.image_ids)}
    fitted = np.asarray(checkpoint.image_ids, dtype=np.int64)[checkpoint.split.fit]
    absent = [int(image) for image in fitted if int(image) not in row_of]
    if absent:
        raise ClosedLoopError(
            f"{path} lacks {len(absent)} of the images {checkpoint.path} was fitted on (ids {absent[:5]}): "
            "not the data the model was fitted on"
        )
    return StartImages.from_dataset(dataset, np.asarray([row_of[int(i)] for i in fitted]), checkpoint.unit_ids)
