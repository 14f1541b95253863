"""Drive the online pipeline with an archived recording, then fit the same data offline.

Three components run under one `Supervisor` (threads on ``inproc://`` endpoints by
default): the real `ModelServer`, the passive `ReplayDriver`, and the `ReplayAdapter`
streaming the archive (started last, so the driver is listening before anything is
sent).  The run ends when the driver has replayed its blocks and the last refit has
finished; the offline batch fit (`closedloop.replay.offline`) then uses the server's
data, model and split.

Online and offline see the same network input: the server gets the archive's display
images as stored (float32 session pixels, uint8 pvc-8 images) and its `preprocess`
call is the loader's, on the same arrays; so the model server's stimulus size is the
archive's image size, whatever the rig says.  `check_inputs` verifies it every run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from closedloop.config.protocol import Protocol
from closedloop.config.rig import Rig
from closedloop.errors import ClosedLoopError
from closedloop.loop.components import replay_components
from closedloop.loop.local import run_until_done
from closedloop.messages import ModelUpdated
from closedloop.model.split import MIN_IMAGES
from closedloop.replay.offline import Comparison, InputCheck, check_inputs, compare_fits, offline_dataset, server_split
from closedloop.replay.plan import ArchivePlan, Units, read_plan
from closedloop.replay.rows import BlockRow
from closedloop.server.settings import ServerSettings, resolved_device
from closedloop.transport import Endpoints


class ReplayFailed(ClosedLoopError):
    """The replay started but could not finish (a component failed, the stream stalled…)."""


@dataclass(frozen=True)
class ReplayOptions:
    """What to replay and how (the command line's options).

    Attributes
    ----------
    speed
        1 = real time, N = N× faster, 0 = as fast as possible.
    fit_every
        Refit after every K-th block that added data.
    block_trials
        Split blocks into pieces of at most N trials.
    max_blocks
        Stop after N blocks.
    wait
        Wait for each refit before the next block.
    device, seed
        Override the protocol/rig device; seed of the server (split, refits) and the offline fit.
    units
        pvc-8 units: ``indcent`` or ``all``.
    offline
        Fit the same data offline at the end and compare.
    endpoints
        ``inproc`` (threads of this process), ``rig`` (the rig's tcp ports, so
        ``closedloop monitor`` can watch), or explicit `Endpoints` (tests listen in).
    """

    speed: float = 0.0
    fit_every: int = 1
    block_trials: int | None = None
    max_blocks: int | None = None
    wait: bool = True
    device: str | None = None
    seed: int | None = None
    units: Units = "indcent"
    offline: bool = True
    endpoints: Literal["inproc", "rig"] | Endpoints = "inproc"


@dataclass
class ReplayOutcome:
    """Everything a replay found: per-block rows, the models, and the offline comparison."""

    plan: ArchivePlan
    server: ServerSettings
    rows: list[BlockRow]
    models: dict[int, ModelUpdated]
    online_seconds: float
    inputs: InputCheck | None = None
    comparison: Comparison | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def final_version(self) -> int:
        return max(self.models, default=0)


def prepare(archive: str | Path, protocol: Protocol, rig: Rig, options: ReplayOptions) -> tuple[ArchivePlan, list[str]]:
    """Read and check everything before any component starts; the plan and notes for the user.

    Raises
    ------
    ClosedLoopError
        An unreadable archive, a protocol without ``fit`` or whose response window does
        not fit the archive's trials, or too few images for any fit.
    """
    if protocol.fit is None:
        raise protocol.error("fit", "replay fits the model online: the protocol needs a 'fit:' section")
    # the device as the server will resolve it: an explicit cuda without a GPU is bad input
    resolved_device(options.device, protocol, rig)
    plan = read_plan(archive, units=options.units, block_trials=options.block_trials)
    if plan.layout == "pvc8" and rig.acquisition.photodiode_line is not None:
        plan.photodiode_line = int(rig.acquisition.photodiode_line)
    problem = plan.window_problem(protocol.response.window_s)
    if problem:
        raise protocol.error("response.window_ms", problem)
    pre = protocol.fit.preprocessing
    if pre.crop * pre.downsample > plan.image_size:
        raise protocol.error(
            "fit.preprocessing",
            f"a {pre.crop}-px crop after {pre.downsample}x downsampling needs "
            f"{pre.crop * pre.downsample}-px images; {plan.path.name} has {plan.image_size}-px images",
        )
    blocks = plan.blocks[: options.max_blocks]
    if not blocks:
        raise ClosedLoopError(f"{plan.path}: no block to replay")
    plan.check_enough_images(blocks)
    notes = list(plan.notes)
    counts = plan.fit_images_through(blocks)
    if counts[0] < MIN_IMAGES:
        first = int((counts >= MIN_IMAGES).argmax())
        notes.append(
            f"block 0 has {counts[0]} image(s) that fitting uses; a fit needs {MIN_IMAGES}, so the first "
            f"refit comes after block {first} ({first + 1} blocks)"
        )
    flagged = [b for b in blocks if b.flagged]
    if flagged:
        notes.append(
            f"{len(flagged)} block(s) flagged in the archive are replayed but not fitted (the offline "
            "loader leaves them out too)"
        )
    if plan.image_size != rig.stimulus.size_px:
        notes.append(
            f"the archive's images are {plan.image_size} px (rig: {rig.stimulus.size_px} px); the model "
            "server takes them at the archive's size so its input equals the offline loader's"
        )
    return plan, notes


def replay_archive(
    archive: str | Path,
    protocol: Protocol,
    rig: Rig,
    options: ReplayOptions = ReplayOptions(),
    *,
    on_row: Callable[[BlockRow], None] | None = None,
    on_model: Callable[[ModelUpdated], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    prepared: tuple[ArchivePlan, list[str]] | None = None,
) -> ReplayOutcome:
    """Replay ``archive`` through the online pipeline, then compare with an offline fit.

    ``prepared`` is what `prepare` returned for the same arguments (saves reading the
    archive twice); ``on_row``/``on_model`` are called from the driver's thread.

    Raises
    ------
    ClosedLoopError
        Bad input (`prepare`).
    ReplayFailed
        The replay stopped (a component failed, the stream stalled, Ctrl-C).
    """
    stage = on_stage or (lambda text: None)
    plan, notes = prepared or prepare(archive, protocol, rig, options)
    endpoints = options.endpoints
    if not isinstance(endpoints, Endpoints):
        endpoints = Endpoints.inproc() if endpoints == "inproc" else Endpoints.from_rig(rig)
    # resolved here, so the summary names the device used, not "auto"
    device = resolved_device(options.device, protocol, rig)
    server, driver, adapter = replay_components(
        plan,
        rig,
        protocol,
        endpoints,
        session=Path(archive).stem,
        device=device,
        seed=options.seed,
        speed=options.speed,
        fit_every=options.fit_every,
        wait=options.wait,
        max_blocks=options.max_blocks,
        on_row=on_row,
        on_model=on_model,
    )
    settings = server.settings
    started = time.perf_counter()
    report = run_until_done([server, driver, adapter], runner_name=driver.name)
    online_seconds = time.perf_counter() - started
    if driver.error:
        raise ReplayFailed(f"replay stopped: {driver.error}")
    failed = [f"{state.name}: {'; '.join(state.errors)}" for state in report.components.values() if state.errors]
    if failed or not driver.finished:
        raise ReplayFailed(f"replay stopped ({report.reason}): " + ("; ".join(failed) or "interrupted"))
    outcome = ReplayOutcome(plan, settings, driver.rows, driver.models, online_seconds, notes=notes)
    if server.store is None or server.store.n_images < MIN_IMAGES or server.model is None:
        outcome.notes.append("no online model was fitted, so there is nothing to compare offline")
        return outcome
    online_data, _ = server.store.snapshot()
    fit = protocol.fit
    if fit is None:  # prepare refuses it
        raise protocol.error("fit", "replay fits the model online: the protocol needs a 'fit:' section")
    offline_data = offline_dataset(
        plan.path,
        preprocessing=fit.preprocessing,
        window_s=protocol.response.window_s,
        units=plan.units,
        sent_repeats=driver.sent_repeats,
    )
    outcome.inputs = check_inputs(online_data, offline_data)
    if options.offline:
        stage(f"offline batch fit of the same {offline_data.n_images} images on the server's split")
        outcome.comparison = compare_fits(
            server.model,
            offline_data,
            server_split(server.store, offline_data),
            settings.model,
            device=device,
            seed=int(settings.seed),
        )
    return outcome
