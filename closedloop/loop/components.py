"""Each component of the loop, built from a rig and a protocol (the only place they are made).

`closedloop.loop.local` and `closedloop.loop.assemble` put them together in one process;
``closedloop serve COMPONENT`` runs one of them as its own process.  The rig decides
what the defaults are: its ports (`Endpoints.from_rig`), its acquisition section (the
simulated brain, the sync line of stimulus onsets), its compute device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from closedloop.acquisition import BrainSpec, ReplayAdapter, SimulatedArray
from closedloop.acquisition.base import AcquisitionAdapter
from closedloop.acquisition.recording import RECORDING_KINDS, recording_adapter
from closedloop.config.protocol import Protocol
from closedloop.config.rig import Rig
from closedloop.errors import ClosedLoopError
from closedloop.messages import ModelUpdated
from closedloop.present import PresenterComponent
from closedloop.present.component import PresenterKind
from closedloop.replay.driver import DriverSettings, ReplayDriver
from closedloop.replay.plan import ArchivePlan
from closedloop.replay.rows import BlockRow
from closedloop.runner.runner import Runner
from closedloop.runner.settings import RunnerSettings
from closedloop.sim.brain import spec_from_rig
from closedloop.transport import Endpoints

if TYPE_CHECKING:  # torch is heavy: the server is imported where one is made (`model_server`)
    from closedloop.server.component import ModelServer

#: On a real rig our adapter's heartbeats are not ordered with the recording system's own buffering
#: (Open Ephys, LSL): give a quiet stream this long after the last trial report before a block counts
#: as delivered without all its photodiode edges.
REAL_RIG_SETTLE_S = 1.0


def simulated_brain(rig: Rig, n_units: int | None = None) -> BrainSpec:
    """The brain a sim rig's acquisition section describes (``brain:``, else ``scenario:``)."""
    return spec_from_rig(rig, n_units)


def brain_units(brain: BrainSpec) -> tuple[np.ndarray, np.ndarray]:
    """(unit ids, channels) of a brain (builds it once: a population takes a second or two)."""
    source = brain.build()
    return np.asarray(source.unit_ids, np.int64), np.asarray(source.channels, np.int64)


def simulated_array(
    rig: Rig,
    endpoints: Endpoints,
    brain: BrainSpec | None = None,
    *,
    speed: float | None = None,
    seed: int | None = None,
    max_frames: int | None = None,
    name: str = "sim-array",
) -> SimulatedArray:
    """The simulated array of a sim rig, publishing on ``endpoints.spikes``.

    It watches the presenter's reports (``endpoints.stimulus``) and the runner's stream
    (``endpoints.responses``: the pixels of synthesized images).  ``brain``, ``speed``
    and ``seed`` default to the rig's acquisition section; ``max_frames`` (a report's
    frame-count bound) to the array's own limit, or pass the protocol's stimulus frames.
    """
    return SimulatedArray(
        endpoints.spikes,
        endpoints.stimulus,
        brain or simulated_brain(rig),
        name=name,
        speed=rig.acquisition.speed if speed is None else speed,
        refresh_hz=rig.display.refresh_hz,
        photodiode_line=rig.acquisition.onset_line,
        block_endpoint=endpoints.responses,
        max_frames=max_frames,
        seed=rig.acquisition.seed if seed is None else seed,
    )


def acquisition_adapter(rig: Rig, endpoints: Endpoints | None = None) -> AcquisitionAdapter:
    """The acquisition adapter the rig's ``acquisition.kind`` names (sim, replay, openephys or lsl).

    Raises
    ------
    ClosedLoopError
        A replay rig without ``acquisition.archive``.
    """
    endpoints = endpoints or Endpoints.from_rig(rig)
    acquisition = rig.acquisition
    if acquisition.kind == "sim":
        return simulated_array(rig, endpoints)
    if acquisition.kind == "replay":
        if not acquisition.archive:
            raise ClosedLoopError(f"{rig.path}: acquisition.archive is required when kind is replay")
        return ReplayAdapter(
            endpoints.spikes,
            acquisition.archive,
            speed=acquisition.speed,
            stimulus_endpoint=endpoints.stimulus,
            photodiode_line=acquisition.onset_line,
        )
    return recording_adapter(rig, endpoints.spikes)


def presenter(
    rig: Rig,
    protocol: Protocol,
    endpoints: Endpoints,
    kind: PresenterKind = "headless",
    options: dict[str, Any] | None = None,
) -> PresenterComponent:
    """The presenter component: blocks on ``endpoints.blocks``, trial reports on ``endpoints.stimulus``."""
    return PresenterComponent(
        "presenter",
        rig=rig,
        timing=protocol.frames(rig),
        request_endpoint=endpoints.blocks,
        shown_endpoint=endpoints.stimulus,
        presenter=kind,
        presenter_options=options,
    )


def model_server(
    rig: Rig,
    protocol: Protocol,
    endpoints: Endpoints | None = None,
    *,
    name: str = "model-server",
    out_dir: str | Path | None = None,
    session: str = "",
    device: str | None = None,
    seed: int | None = None,
    stimulus_size_px: int | None = None,
    first_version: int = 1,
) -> ModelServer:
    """The model server for ``protocol``'s ``fit`` section (`ServerSettings.from_configs`).

    ``endpoints`` default to the rig's ports; ``device``, ``seed`` and ``stimulus_size_px``
    replace the configs' values when given (a command line's choices, a replayed
    archive's image size; `closedloop.server.settings.device_choice`).  ``first_version``
    numbers the first model it fits: a resumed session's goes on from its last.
    """
    # torch (the server and its settings' synthesis defaults) is heavy: only where a server runs here
    from closedloop.server.component import ModelServer
    from closedloop.server.settings import ServerSettings  # torch, as above

    endpoints = endpoints or Endpoints.from_rig(rig)
    settings = ServerSettings.from_configs(
        rig,
        protocol,
        out_dir=out_dir,
        request_endpoint=endpoints.model,
        events_endpoint=endpoints.model_events,
        session=session,
        device=device,
        seed=seed,
        stimulus_size_px=stimulus_size_px,
        first_version=first_version,
    )
    return ModelServer(name, settings)


def replay_components(
    plan: ArchivePlan,
    rig: Rig,
    protocol: Protocol,
    endpoints: Endpoints,
    *,
    session: str,
    device: str,
    seed: int | None = None,
    speed: float = 0.0,
    fit_every: int = 1,
    wait: bool = True,
    max_blocks: int | None = None,
    on_row: Callable[[BlockRow], None] | None = None,
    on_model: Callable[[ModelUpdated], None] | None = None,
) -> tuple[ModelServer, ReplayDriver, ReplayAdapter]:
    """The model server, the passive driver and the replay adapter of `closedloop replay`, in start order.

    The adapter plays ``plan``'s recording and the presenter's reports at ``speed``; the
    driver cuts the stream into blocks, sends them to the server (refit every
    ``fit_every``-th block, waiting for it with ``wait``) and calls ``on_row`` /
    ``on_model`` from its thread.
    """
    server = model_server(
        rig, protocol, endpoints, session=session, device=device, seed=seed, stimulus_size_px=plan.image_size
    )
    driver = ReplayDriver(
        plan,
        endpoints,
        DriverSettings(
            window_s=protocol.response.window_s,
            frame_s=1.0 / rig.display.refresh_hz,
            fit_every=fit_every,
            wait=wait,
            max_blocks=max_blocks,
        ),
        session=session,
        on_row=on_row,
        on_model=on_model,
    )
    adapter = ReplayAdapter(
        endpoints.spikes,
        plan.path,
        name="replay-adapter",
        speed=speed,
        stimulus_endpoint=endpoints.stimulus,
        refresh_hz=rig.display.refresh_hz,
        photodiode_line=plan.photodiode_line,
        session=session,
        # inproc: the driver is connected before the adapter binds; tcp: wait for it
        wait_for_subscriber_s=0.0 if endpoints.spikes.startswith("inproc://") else 10.0,
    )
    return server, driver, adapter


def runner(
    rig: Rig,
    protocol: Protocol,
    session_path: str | Path,
    endpoints: Endpoints,
    *,
    unit_ids: np.ndarray | None = None,
    channels: np.ndarray | None = None,
    resume: bool = False,
    overwrite: bool = False,
    settings: RunnerSettings = RunnerSettings(),
) -> Runner:
    """The runner; on a real recording system it waits for acquisition data before any block.

    A real recording system must be acquiring before anything is shown
    (`RunnerSettings.require_acquisition_data`): a protocol shown to nobody is lost.  There
    the runner creates its session only once data flows, listening for the units first when
    ``unit_ids`` is ``None`` (``acquisition.discover_units_s``), and settles at least
    `REAL_RIG_SETTLE_S`.
    """
    if rig.acquisition.kind in RECORDING_KINDS:
        settings = dataclasses.replace(
            settings, require_acquisition_data=True, settle_s=max(settings.settle_s, REAL_RIG_SETTLE_S)
        )
    return Runner(
        rig,
        protocol,
        session_path,
        endpoints,
        unit_ids=unit_ids,
        channels=channels,
        resume=resume,
        overwrite=overwrite,
        settings=settings,
    )
