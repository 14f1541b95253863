"""The components of one `closedloop run` / `demo`, built from a rig and a protocol.

What runs in this process depends on the rig: a simulated rig gets the simulated array;
a real rig (Open Ephys or Lab Streaming Layer) gets the adapter that translates its
recording system's broadcast into our stream.  The presenter and, unless the model
server runs as its own process (``closedloop serve model``), the model server run here
too.  A `ProgressPrinter` reports blocks and model versions as they happen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from collections.abc import Callable

import numpy as np

from closedloop.acquisition.recording import RECORDING_KINDS
from closedloop.config.protocol import Protocol
from closedloop.config.rig import Rig
from closedloop.errors import ClosedLoopError
from closedloop.loop import components as make
from closedloop.loop.local import LocalLoop, simulated_components
from closedloop.loop.progress import ProgressPrinter
from closedloop.present.component import PresenterKind
from closedloop.runner.settings import RunnerSettings
from closedloop.runtime.component import Component
from closedloop.transport import Endpoints

PresenterChoice = Literal["auto", "psychopy", "headless"]
ModelChoice = Literal["local", "remote"]


def presenter_for(rig: Rig, choice: PresenterChoice) -> PresenterKind:
    """``auto``: the fast headless presenter for a simulated rig, PsychoPy for a real one."""
    if choice == "auto":
        return "headless" if rig.acquisition.kind == "sim" else "psychopy"
    return choice


def build_loop(
    rig: Rig,
    protocol: Protocol,
    session_path: str | Path,
    *,
    presenter: PresenterChoice = "auto",
    presenter_options: dict[str, Any] | None = None,
    model: ModelChoice = "local",
    endpoints: Endpoints | None = None,
    resume: bool = False,
    overwrite: bool = False,
    unit_ids: np.ndarray | None = None,
    model_out: str | Path | None = None,
    settings: RunnerSettings = RunnerSettings(),
    write: Callable[[str], None] | None = print,
    device: str | None = None,
    first_version: int = 1,
) -> LocalLoop:
    """Every component this process runs for ``protocol`` on ``rig``, in start order.

    Parameters
    ----------
    session_path
        Session file to write, or to continue with ``resume``.
    presenter
        ``auto`` (`presenter_for`), ``psychopy`` or ``headless``.
    model
        ``local``: a model server in this process; ``remote``: one already serving on
        ``endpoints.model`` (``closedloop serve model``).
    endpoints
        Default: the rig's TCP ports, so a monitor can attach.
    unit_ids
        Units of a new session on a real rig (the simulated array knows its own); ``None``:
        the runner listens for them (``acquisition.discover_units_s``).
    model_out
        Folder where the local model server saves every model version.
    write
        Where progress lines go; ``None`` for none.
    device
        The local model server's device (a command line's ``--device``); ``None``: the
        protocol's ``fit.device``, else the rig's (`ServerSettings.from_configs`).
    first_version
        The local model server's first model version (a resumed session goes on from its
        last: `closedloop.runner.resume.check_resumable`).

    Raises
    ------
    ClosedLoopError
        A replay rig (use ``closedloop replay``).
    """
    endpoints = endpoints or Endpoints.from_rig(rig)
    kind = presenter_for(rig, presenter)
    server = None
    if model == "local":
        server = make.model_server(
            rig,
            protocol,
            endpoints,
            out_dir=model_out,
            session=Path(session_path).stem,
            device=device,
            first_version=first_version,
        )
    if rig.acquisition.kind == "sim":
        loop = simulated_components(
            rig,
            protocol,
            session_path,
            endpoints=endpoints,
            model_server=server,
            presenter=kind,
            presenter_options=presenter_options,
            resume=resume,
            overwrite=overwrite,
            settings=settings,
        )
    elif rig.acquisition.kind in RECORDING_KINDS:
        loop = _recording_components(
            rig,
            protocol,
            session_path,
            endpoints,
            server,
            kind,
            presenter_options,
            resume,
            overwrite,
            unit_ids,
            settings,
        )
    else:
        raise ClosedLoopError(
            f"{rig.path}: acquisition.kind is {rig.acquisition.kind!r}; an archived recording "
            "goes through the loop with 'closedloop replay ARCHIVE --protocol P.yaml'"
        )
    if write is not None:
        progress = ProgressPrinter(endpoints.responses, endpoints.model_events, write=write)
        loop.components.insert(len(loop.components) - 1, progress)  # before the runner: sees its first block
    return loop


def _recording_components(
    rig: Rig,
    protocol: Protocol,
    session_path,
    endpoints: Endpoints,
    server: Component | None,
    presenter: PresenterKind,
    presenter_options,
    resume: bool,
    overwrite: bool,
    unit_ids: np.ndarray | None,
    settings: RunnerSettings,
) -> LocalLoop:
    adapter = make.acquisition_adapter(rig, endpoints)
    if presenter == "headless":  # the recording system runs on wall time: trials must too
        presenter_options = {"realtime": True, **(presenter_options or {})}
    shown = make.presenter(rig, protocol, endpoints, presenter, presenter_options)
    runner = make.runner(
        rig, protocol, session_path, endpoints, unit_ids=unit_ids, resume=resume, overwrite=overwrite, settings=settings
    )  # waits for acquisition data (a real rig)
    components: list[Component] = [adapter, shown]
    if server is not None:
        components.append(server)
    components.append(runner)
    return LocalLoop(components, runner, endpoints)
