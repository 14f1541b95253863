"""SynthesizeRequest → synthesis jobs on a served model, and the images back at display size."""

from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np

from closedloop.config.protocol import Target
from closedloop.messages.types import SynthesizeRequest, SynthesizeResult
from closedloop.server.checks import RequestError, listing
from closedloop.server.refit import Cancelled, ServedModel
from closedloop.server.scheduling import JobCancel
from closedloop.synth.canvas import Canvas
from closedloop.synth.optimise import SynthesisSettings, synthesize
from closedloop.synth.targets import SynthesisJob

#: Step caps above this are refused: one request must not hold the server for minutes.
MAX_STEPS = 10_000


def synthesis_jobs(served: ServedModel, request: SynthesizeRequest, max_images: int) -> list[SynthesisJob]:
    """One job per (unit, target) pair of ``request``; NaN target = maximise.

    Raises
    ------
    RequestError
        ``bad_request`` (nothing asked, too many images or steps), ``unknown_unit``
        (not a unit of the model) or ``bad_target`` (infinite or negative rate).
    """
    unit_ids = np.asarray(request.unit_ids, dtype=np.int64)
    targets = np.asarray(request.targets, dtype=np.float64)
    if unit_ids.size == 0:
        raise RequestError("bad_request", "nothing to synthesize: unit_ids is empty")
    if unit_ids.size > max_images:
        raise RequestError("bad_request", f"{unit_ids.size} images asked for; at most {max_images} per request")
    if request.steps > MAX_STEPS:
        raise RequestError("bad_request", f"steps {request.steps} is above the server's cap of {MAX_STEPS}")
    column = {int(unit): index for index, unit in enumerate(served.unit_ids)}
    unknown = sorted({int(u) for u in unit_ids if int(u) not in column})
    if unknown:
        excluded = {u.unit_id for u in served.result.excluded_units}
        not_fitted = [u for u in unknown if u in excluded]
        note = f" ({listing(not_fitted)} could not be fitted)" if not_fitted else ""
        raise RequestError("unknown_unit", f"model version {served.version} has no unit {listing(unknown)}{note}")
    bad = [float(t) for t in targets if math.isinf(t) or t < 0]
    if bad:
        raise RequestError("bad_target", f"targets must be rates >= 0 Hz or NaN (maximise), got {bad[:5]}")
    jobs = []
    for unit, target in zip(unit_ids, targets):
        parsed = Target("max") if math.isnan(target) else Target("rate", float(target))
        jobs.append(SynthesisJob(unit=column[int(unit)], target=parsed, target_hz=float(target)))
    return jobs


def run_synthesis(
    served: ServedModel,
    request: SynthesizeRequest,
    jobs: list[SynthesisJob],
    canvas: Canvas,
    steps: int,
    cancel: threading.Event | JobCancel,
    heldout_members: int = SynthesisSettings().heldout_members,
    start: str = "blank",
) -> SynthesizeResult:
    """Optimise the images (background thread) and package the reply; stops when ``cancel.is_set()``.

    ``start`` "blank": every image starts from the blank screen; "natural": rate targets
    start from the served model's fit images (`closedloop.synth.starts`).
    """

    def progress(step: int, cap: int, active: int) -> None:
        if cancel.is_set():
            raise Cancelled("synthesis cancelled: the server is stopping")

    if canvas.max_contrast is None and served.contrast_bound is not None:  # the natural images' contrast
        canvas = dataclasses.replace(canvas, max_contrast=served.contrast_bound, min_contrast=served.contrast_floor)
    result = synthesize(
        served.result.model,
        jobs,
        canvas=canvas,
        scale_hz=served.scale_hz,
        settings=SynthesisSettings(steps=steps, heldout_members=heldout_members),
        seed=request.seed,
        progress=progress,
        progress_every=1,
        starts=served.starts if start == "natural" else None,
    )  # a cancel or time budget takes effect within one step
    return SynthesizeResult(
        unit_ids=np.asarray(request.unit_ids, dtype=np.int64),
        targets=np.asarray(request.targets, dtype=np.float64),
        images=np.clip(canvas.to_display(result.images), 0.0, 1.0).astype(np.float32),
        achieved=result.achieved_hz.astype(np.float64),
        model_version=served.version,
        seed=request.seed,
        spread=result.spread_hz,
        start_ids=result.start_image_ids,
    )
