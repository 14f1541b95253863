"""Batched network inversion: pixels → target rates (docs/methods.md, Synthesis).

All jobs (unit, target, population pattern) optimise together in one tensor.  Each
step, following Walker et al. (2019):

1. forward the active images through the model (an ensemble predicts its members' mean);
2. per-image loss — ``½((rate − target)/s)²`` for a rate target, ``−rate/s`` when
   maximising, plus ``½((rate_h − baseline_h)/s_h)²`` for every held unit, an
   optional total-variation penalty and, for "max" images, an optional penalty
   ``w · sd/s`` on the ensemble members' disagreement about the driven unit (``sd`` =
   their standard deviation: "max" then maximises the lower confidence bound
   ``rate − w · sd``)
   (``s`` = the unit's natural-image rate range, so units of 2 Hz and 60 Hz weigh
   the same);
3. blur the gradient with a Gaussian whose σ anneals geometrically (3 → 0.01 px by
   default) — the low-pass gradient keeps images from turning into adversarial noise —
   and normalise it to unit RMS inside the aperture;
4. step with a size that anneals geometrically (0.1 → 0.005 of the display range),
   capped for rate targets by the Newton step that would bring the loss to zero, so
   images settle on their targets instead of oscillating around them;
5. project back onto the canvas (grey outside the aperture, range, mean luminance,
   optional contrast cap, and for rate targets an optional contrast floor;
   `closedloop.synth.canvas.Projection`).

An image stops (is frozen and leaves the batch) once its unit — and every held unit —
is within ``tolerance_hz`` of its target; maximising images run to the step cap.  The
best image seen (lowest loss) is what is returned, so a late overshoot never costs.

Held-out members (``heldout_members``, default 1, used when at least two members are
left to optimise): the images are optimised against the other members only, and the
rates reported for them (``achieved_hz``, ``predictions``) are the held-out members'
mean; which members are held out rotates from image to image.  An image pushed to
where the optimising members over-predict — the winner's curse of maximising a model —
is then judged by a member that was not pushed there: on five simulated V1 families
(benchmarks/generalise.py, two synthesis seeds) the median predicted/true rate of
"max" images fell from 1.15–2.20 to 0.93–1.47 (classic 0.95–1.00,
off-centre 0.93, textures 1.14–1.15, normalisation 1.31–1.38, deep CNN 1.43–1.47), for
images that beat the units' best natural images as often as before.  Two held-out
members judged the deep family better (1.20) but made weaker images (off-centre: 53–59 %
instead of 65 % beat their best natural image; normalisation's percentile accuracy
0.88–0.91 instead of 0.94–0.95).  The spread reported is all members' standard
deviation, so disagreement between the optimising and the held-out members shows there.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from closedloop.config.protocol import DEFAULT_HELDOUT_MEMBERS
from closedloop.errors import ClosedLoopError
from closedloop.model.networks import extrapolating_tails
from closedloop.synth.canvas import Canvas, Projection
from closedloop.synth.starts import BLANK, StartImages, choose_starts
from closedloop.synth.targets import SynthesisJob

ProgressCallback = Callable[[int, int, int], None]  # (step, step cap, images still active)


@dataclass(frozen=True)
class SynthesisSettings:
    """How the optimiser runs; every field is recorded in the stimulus library.

    Attributes
    ----------
    steps
        Step cap per image.
    tolerance_hz
        An image stops when its unit (and every held unit) is this close to target.
    init_std
        Standard deviation of the Gaussian white noise images start from.  Low (2 %
        of the range) on purpose: rate targets are then reached by the blurred,
        structured gradient rather than by reweighting noise, which on simulated V1
        gives images the model predicts better and that resemble the receptive field
        (benchmarks/synth.py: p80 − p20 vs true RF similarity 0.45 at 0.02, 0.2 at 0.05).
    step_start, step_end
        Step size (display-range units per unit-RMS gradient), annealed geometrically.
    blur_start, blur_end
        Gradient blur σ in model pixels, annealed geometrically; below 0.3 no blur.
        Starting at 3 px rather than 1.5 made percentile images' true rates follow
        their targets better on ten of twelve simulated fits (pooled r +0.012;
        benchmarks/README.md, generalise.py).
    tv_weight
        Weight of the total-variation penalty (0: none).
    hold_weight
        Weight of each held unit's term relative to the driven unit's.
    disagreement_weight
        Weight ``w`` of the ensemble-disagreement penalty ``w · sd / s`` on "max"
        images (0: none; needs an ensemble of two or more members): they then stay
        where the members agree, so the promised rate is one the data support.
    heldout_members
        Ensemble members kept out of the optimisation whose mean prediction is the
        reported rate (see the module notes; 0: every member optimises and reports).
        Used only when at least two members are left to optimise; otherwise every
        member does both (the result's ``extra["heldout_members"]`` says which).
    """

    steps: int = 500
    tolerance_hz: float = 0.5
    init_std: float = 0.02
    step_start: float = 0.1
    step_end: float = 0.005
    blur_start: float = 3.0
    blur_end: float = 0.01
    tv_weight: float = 0.0
    hold_weight: float = 1.0
    disagreement_weight: float = 0.0
    heldout_members: int = DEFAULT_HELDOUT_MEMBERS

    def __post_init__(self) -> None:
        checks = {
            "steps": self.steps >= 1,
            "tolerance_hz": self.tolerance_hz > 0,
            "init_std": self.init_std >= 0,
            "step_start": self.step_start > 0,
            "step_end": self.step_end > 0,
            "blur_start": self.blur_start >= 0,
            "blur_end": self.blur_end >= 0,
            "tv_weight": self.tv_weight >= 0,
            "hold_weight": self.hold_weight >= 0,
            "disagreement_weight": self.disagreement_weight >= 0,
            "heldout_members": isinstance(self.heldout_members, int) and self.heldout_members >= 0,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if not ok or not math.isfinite(value):
                raise ClosedLoopError(f"synthesis setting {name} = {value!r} is out of range")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SynthesisResult:
    """What `synthesize` made, one row per job.

    Attributes
    ----------
    images
        (n, model_size, model_size) float32 in the display range.
    achieved_hz
        (n,) the model's prediction for the driven unit (the held-out members' mean
        when members were held out of the optimisation).
    spread_hz
        (n,) standard deviation of all the ensemble members' predictions for the
        driven unit: how sure the model is (NaN for one network or a model that cannot
        report its members).
    predictions
        (n, n_model_units) predictions of every model unit (as ``achieved_hz``).
    predictions_spread
        (n, n_model_units) the members' standard deviation for every model unit.
    target_hz
        (n,) requested rate; NaN when maximising.
    converged
        (n,) the optimising members' prediction is within tolerance of the target (and
        of every held baseline); always ``False`` for maximising images, which run to
        the step cap.
    steps
        (n,) steps run before the image stopped.
    seeds
        (n,) the noise seed of each image (``torch.Generator().manual_seed(seed)``
        then ``randn`` gives its starting noise).
    seconds
        Wall-clock time of the optimisation (device synchronised).
    start_image_ids
        (n,) the stimulus id of the fitted image each image started from; ``BLANK`` (−1)
        for the blank screen.
    """

    jobs: list[SynthesisJob]
    images: np.ndarray
    achieved_hz: np.ndarray
    predictions: np.ndarray
    target_hz: np.ndarray
    converged: np.ndarray
    steps: np.ndarray
    seeds: np.ndarray
    seconds: float
    device: str
    settings: SynthesisSettings
    canvas: Canvas
    extra: dict = field(default_factory=dict)
    spread_hz: np.ndarray | None = None
    predictions_spread: np.ndarray | None = None
    start_image_ids: np.ndarray | None = None

    @property
    def gap_hz(self) -> np.ndarray:
        """achieved − target (NaN when maximising)."""
        return self.achieved_hz - self.target_hz


def image_seeds(seed: int, n: int) -> np.ndarray:
    """Independent per-image noise seeds derived from one run seed."""
    return np.random.SeedSequence(int(seed)).generate_state(n, dtype=np.uint32).astype(np.int64)


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma < 0.3:
        return images
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, images.shape[-1] - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = images.unsqueeze(1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def _total_variation(images: torch.Tensor) -> torch.Tensor:
    return (
        (images[:, 1:, :] - images[:, :-1, :]).abs().sum((1, 2))
        + (images[:, :, 1:] - images[:, :, :-1]).abs().sum((1, 2))
    ) / images[0].numel()


def _anneal(start: float, end: float, step: int, steps: int) -> float:
    # Geometric from start to end over the run; linear when either end is 0.
    fraction = step / (steps - 1) if steps > 1 else 0.0
    if start > 0 and end > 0:
        return start * (end / start) ** fraction
    return start + (end - start) * fraction


#: Steps between dropping finished images from the batch on a GPU, where each drop reads a mask
#: back from the device (a sync); on the CPU that is free and finished images go at once.
_GPU_COMPACT_EVERY = 10


class _Objective:
    """Per-image losses for a batch of jobs, as tensors indexed by job row."""

    def __init__(
        self,
        jobs: Sequence[SynthesisJob],
        n_units: int,
        scale_hz: np.ndarray,
        settings: SynthesisSettings,
        device: torch.device,
    ):
        n = len(jobs)
        self.unit = torch.as_tensor([job.unit for job in jobs], dtype=torch.long, device=device)
        self.maximise = torch.as_tensor([job.maximise for job in jobs], device=device)
        target = np.asarray([0.0 if job.maximise else job.target_hz for job in jobs], dtype=np.float32)
        self.target = torch.as_tensor(target, device=device)
        hold_weight = np.zeros((n, n_units), np.float32)
        hold_hz = np.zeros((n, n_units), np.float32)
        for row, job in enumerate(jobs):
            hold_weight[row, list(job.hold)] = 1.0
            hold_hz[row, list(job.hold)] = job.hold_hz
        self.hold_mask = torch.as_tensor(hold_weight > 0, device=device)
        self.any_hold = bool(np.any(hold_weight > 0))  # known here, so no step needs to ask the device
        self.hold_hz = torch.as_tensor(hold_hz, device=device)
        self.scale = torch.as_tensor(np.asarray(scale_hz, np.float32), device=device)
        self.settings = settings

    def losses(
        self, rows: torch.Tensor, rates: torch.Tensor, images: torch.Tensor, spread: torch.Tensor | None = None
    ) -> torch.Tensor:
        unit = self.unit[rows]
        scale = self.scale[unit]
        rate = rates.gather(1, unit[:, None]).squeeze(1)
        error = (rate - self.target[rows]) / scale
        loss = torch.where(self.maximise[rows], -rate / scale, 0.5 * error**2)
        if spread is not None and self.settings.disagreement_weight > 0:
            # Only "max" images: a rate target already pins the prediction (on simulated V1 the
            # penalty there pulled images off their targets: percentile accuracy fell from 0.9 to 0.3).
            penalty = self.settings.disagreement_weight * spread.gather(1, unit[:, None]).squeeze(1) / scale
            loss = loss + torch.where(self.maximise[rows], penalty, torch.zeros_like(penalty))
        if self.any_hold:
            held = self.hold_mask[rows]
            held_error = (rates - self.hold_hz[rows]) / self.scale
            loss = loss + self.settings.hold_weight * 0.5 * (held_error**2 * held).sum(1)
        if self.settings.tv_weight > 0:
            loss = loss + self.settings.tv_weight * _total_variation(images)
        return loss

    def within_tolerance(self, rows: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
        tol = self.settings.tolerance_hz
        rate = rates.gather(1, self.unit[rows][:, None]).squeeze(1)
        ok = ((rate - self.target[rows]).abs() <= tol) & ~self.maximise[rows]
        held_ok = (((rates - self.hold_hz[rows]).abs() <= tol) | ~self.hold_mask[rows]).all(1)
        return ok & held_ok


def synthesize(
    model: torch.nn.Module,
    jobs: Sequence[SynthesisJob],
    *,
    canvas: Canvas,
    scale_hz: np.ndarray,
    settings: SynthesisSettings = SynthesisSettings(),
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: ProgressCallback | None = None,
    progress_every: int = 25,
    starts: StartImages | None = None,
) -> SynthesisResult:
    """Optimise one image per job, all in one batch.

    Parameters
    ----------
    model
        ``forward(images (B, S, S) in the display range) -> (B, n_units)`` Hz; an
        ensemble's forward is its members' mean.  Put in eval mode for the run.
    jobs
        What to make (`closedloop.synth.targets.build_jobs`).
    canvas
        Geometry and photometry the images must respect.
    scale_hz
        (n_units,) rate scale per unit (natural-image rate range) for the losses.
    settings
        Optimiser settings.
    seed
        Run seed; image ``i`` starts from the noise of ``image_seeds(seed, n)[i]``.
    starts
        Images the model was fitted on, with their measured rates: each rate target starts
        from one close to what is asked (`closedloop.synth.starts.choose_starts`);
        ``None``: every image starts from the blank screen.  The noise is added to the
        start either way.
    device
        Where to run; ``None``: where the model's parameters are.
    progress, progress_every
        Called every ``progress_every`` steps with (step, step cap, active images); it may
        raise to stop the run.

    Raises
    ------
    ClosedLoopError
        No jobs, a unit column outside the model, or a non-finite target.
    """
    if not jobs:
        raise ClosedLoopError("nothing to synthesize: no (unit, target) pairs")
    parameter = next(model.parameters(), None)
    device = (
        torch.device(device)
        if device is not None
        else (parameter.device if parameter is not None else torch.device("cpu"))
    )
    n_units = int(model.n_units)  # type: ignore[arg-type]  # the model's own count, an int
    for job in jobs:
        if not 0 <= job.unit < n_units or any(not 0 <= h < n_units for h in job.hold):
            raise ClosedLoopError(f"job for model column {job.unit} is outside the model's {n_units} units")
        if not job.maximise and not (math.isfinite(job.target_hz) and job.target_hz >= 0):
            raise ClosedLoopError(f"target {job.target_hz!r} Hz for column {job.unit} is not a finite rate >= 0")
    scale_hz = np.asarray(scale_hz, dtype=np.float64)
    scale_hz = np.where(np.isfinite(scale_hz) & (scale_hz > 1e-3), scale_hz, 1.0)

    n = len(jobs)
    seeds = image_seeds(seed, n)
    noise = torch.stack(
        [
            torch.randn(canvas.model_size, canvas.model_size, generator=torch.Generator().manual_seed(int(s)))
            for s in seeds
        ]
    )
    project = Projection(canvas, device)
    objective = _Objective(jobs, n_units, scale_hz, settings, device)
    inside = project.inside.to(torch.float32)
    members = _MemberSplit(_n_members(model), settings.heldout_members, n, device)
    # Members are only evaluated one by one when the penalty needs their spread at every step.
    penalised = settings.disagreement_weight > 0 and members.n_optimising > 1

    was_training = model.training
    model.eval()
    _synchronise(device)
    started = time.perf_counter()
    try:
        first, start_ids = canvas.blank(n), np.full(n, BLANK, dtype=np.int64)
        if starts is not None:
            first, start_ids = choose_starts(model, jobs, starts, canvas, scale_hz, device)
        # The contrast floor is for rate targets; "max" images run to the cap anyway.
        floored = ~objective.maximise
        images = project((torch.as_tensor(first) + settings.init_std * noise).to(device), floored)
        best_images = images.clone()
        best_loss = torch.full((n,), math.inf, device=device)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        steps_run = torch.full((n,), settings.steps, dtype=torch.long, device=device)
        rows = torch.arange(n, device=device)
        compact_every = 1 if device.type == "cpu" else _GPU_COMPACT_EVERY
        for step in range(settings.steps + 1):
            if step % compact_every == 0 and step:
                # Drop finished images from the batch now and then, not every step: reading the
                # mask back is a host sync, which on a GPU costs more than a few wasted rows.
                rows = torch.nonzero(~done).squeeze(1)
                if rows.numel() == 0:
                    break
            x = images[rows].detach().requires_grad_(True)
            # "max" images are pushed past a flat output tail's ceiling (`extrapolating_tails`);
            # the rates they are promised below are the model's own, ceiling included.
            with torch.enable_grad(), extrapolating_tails(objective.maximise[rows]):
                rates, spread = members.optimising_rates(model, x, rows, penalised)
                loss = objective.losses(rows, rates, x, spread)
                (gradient,) = torch.autograd.grad(loss.sum(), x)
            loss = loss.detach()
            finished = done[rows]
            better = (loss < best_loss[rows]) & ~finished
            best_loss[rows] = torch.where(better, loss, best_loss[rows])
            best_images[rows] = torch.where(better[:, None, None], x.detach(), best_images[rows])
            if step == settings.steps:  # the last evaluation only scores the final images
                break
            stop = objective.within_tolerance(rows, rates.detach()) & ~finished
            # An in-tolerance image is the answer: keep it, and never let a later one replace it.
            best_images[rows] = torch.where(stop[:, None, None], x.detach(), best_images[rows])
            best_loss[rows] = torch.where(stop, -math.inf, best_loss[rows])
            steps_run[rows] = torch.where(stop, step, steps_run[rows])
            done[rows] = finished | stop
            sigma = _anneal(settings.blur_start, settings.blur_end, step, settings.steps)
            size = _anneal(settings.step_start, settings.step_end, step, settings.steps)
            direction = _gaussian_blur(gradient, sigma) * inside
            rms = direction.pow(2).sum((1, 2)).div(project.n_inside).sqrt().clamp_min(1e-12)
            direction = direction / rms[:, None, None]
            slope = (gradient * direction).sum((1, 2))  # dL/dα along −direction, > 0
            newton = torch.where(
                objective.maximise[rows], torch.full_like(loss, math.inf), loss / slope.clamp_min(1e-12)
            )
            alpha = newton.clamp(max=size)
            moved = project(x.detach() - alpha[:, None, None] * direction, floored[rows])
            images[rows] = torch.where((finished | stop)[:, None, None], images[rows], moved)
            if progress is not None and step % progress_every == 0:
                progress(step, settings.steps, int((~done).sum()))
        final = best_images
        with torch.no_grad():
            every = torch.arange(n, device=device)
            scored = [members.final_rates(model, final[i : i + 512], every[i : i + 512]) for i in range(0, n, 512)]
            predictions = torch.cat([judged for judged, _, _ in scored])
            optimised = torch.cat([mean for _, mean, _ in scored])
            spreads = [sd for _, _, sd in scored]
        _synchronise(device)
        seconds = time.perf_counter() - started
    finally:
        model.train(was_training)

    predictions_np = predictions.float().cpu().numpy()
    optimised_np = optimised.float().cpu().numpy()
    achieved = predictions_np[np.arange(n), [job.unit for job in jobs]]
    optimised_achieved = optimised_np[np.arange(n), [job.unit for job in jobs]]
    known = [sd for sd in spreads if sd is not None]
    spread_np = (
        torch.cat(known).float().cpu().numpy() if len(known) == len(spreads) else np.full_like(predictions_np, np.nan)
    )
    target_hz = np.asarray([job.target_hz for job in jobs], dtype=np.float64)
    # Stopped in the loop, or within tolerance at the final evaluation (by the members it optimised).
    converged = done.cpu().numpy() | (
        np.asarray([not job.maximise for job in jobs])
        & (np.abs(optimised_achieved - target_hz) <= settings.tolerance_hz)
    )
    for row, job in enumerate(jobs):
        if job.hold and converged[row] and not done[row]:
            held = optimised_np[row, list(job.hold)]
            converged[row] = bool(np.all(np.abs(held - np.asarray(job.hold_hz)) <= settings.tolerance_hz))
    return SynthesisResult(
        jobs=list(jobs),
        images=final.float().cpu().numpy(),
        achieved_hz=achieved.astype(np.float64),
        predictions=predictions_np,
        target_hz=target_hz,
        converged=converged,
        steps=steps_run.cpu().numpy(),
        seeds=seeds,
        seconds=seconds,
        device=str(device),
        settings=settings,
        canvas=canvas,
        spread_hz=spread_np[np.arange(n), [job.unit for job in jobs]].astype(np.float64),
        predictions_spread=spread_np,
        start_image_ids=start_ids,
        extra={"heldout_members": members.n_heldout},
    )


def _n_members(model: torch.nn.Module) -> int:
    return int(getattr(model, "n_members", 1)) if hasattr(model, "forward_members") else 1


class _MemberSplit:
    """Which ensemble members optimise each image and which judge it (see the module notes).

    Image ``i`` holds out members ``i·k … i·k + k − 1`` (mod M), so every member judges
    some images and no one network's quirks set every reported rate.
    """

    def __init__(self, n_members: int, heldout: int, n_images: int, device: torch.device):
        self.n_heldout = heldout if heldout and n_members - heldout >= 2 else 0
        self.n_optimising = n_members - self.n_heldout
        first = (torch.arange(n_images, device=device) * self.n_heldout)[None, :]
        offset = (torch.arange(n_members, device=device)[:, None] - first) % max(n_members, 1)
        self.judging = (offset < self.n_heldout).to(torch.float32)  # (M, n_images)

    def optimising_rates(
        self, model: torch.nn.Module, images: torch.Tensor, rows: torch.Tensor, want_spread: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, U) the optimising members' mean and, when asked, their std (population)."""
        # One member's std is 0 by construction: that would read as "sure", so it has none.
        if not self.n_heldout and not (want_spread and self.n_optimising > 1):
            return model(images), None
        rates = model.forward_members(images)  # type: ignore[operator]  # (M, B, U)
        mean, sd = _masked_moments(rates, 1.0 - self.judging[:, rows])
        return mean, (sd if want_spread else None)

    def final_rates(
        self, model: torch.nn.Module, images: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, U) the reported (held-out) mean, the optimising mean and all members' std."""
        if self.n_optimising + self.n_heldout < 2:
            mean = model(images)
            return mean, mean, None
        rates = model.forward_members(images)  # type: ignore[operator]
        judging = self.judging[:, rows]
        optimising, _ = _masked_moments(rates, 1.0 - judging)
        judged = _masked_moments(rates, judging)[0] if self.n_heldout else optimising
        return judged, optimising, rates.std(dim=0, unbiased=False)


def _masked_moments(rates: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population std over the members with weight 1, per image: rates (M, B, U), weight (M, B)."""
    w = weight[:, :, None]
    count = w.sum(0)
    mean = (w * rates).sum(0) / count
    variance = (w * (rates - mean) ** 2).sum(0) / count
    return mean, variance.clamp_min(0.0).sqrt()


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
