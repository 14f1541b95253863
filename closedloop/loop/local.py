"""The loop's local components for a simulated rig, and running them until the runner is done.

`simulated_components` puts together (`closedloop.loop.components` builds each), in start
order, the simulated array, the headless (or PsychoPy) presenter, an optional model server
component the caller passes in, and the runner; `run_until_done` supervises them until the
runner finishes, fails, or Ctrl-C (every component is then stopped in reverse start order:
the runner first, so it writes an interrupted block while acquisition still runs).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.acquisition import BrainSpec
from closedloop.config.protocol import Protocol
from closedloop.config.rig import Rig
from closedloop.loop import components as make
from closedloop.present.component import PresenterKind
from closedloop.runner.runner import Runner
from closedloop.runner.settings import RunnerSettings
from closedloop.runtime import Supervisor
from closedloop.runtime.component import Component
from closedloop.runtime.supervisor import SupervisorReport
from closedloop.transport import Endpoints


@dataclass
class LocalLoop:
    """The components of one local run, in start order, and the runner among them.

    Setting ``stop`` (from any thread) stops a `run_until_done` in progress, as Ctrl-C does.
    """

    components: list[Component]
    runner: Runner
    endpoints: Endpoints
    stop: threading.Event = field(default_factory=threading.Event)


def simulated_components(
    rig: Rig,
    protocol: Protocol,
    session_path: str | Path,
    *,
    endpoints: Endpoints | None = None,
    brain: BrainSpec | None = None,
    model_server: Component | None = None,
    presenter: PresenterKind = "headless",
    presenter_options: dict[str, Any] | None = None,
    speed: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    settings: RunnerSettings = RunnerSettings(),
    array_seed: int | None = None,
    units: tuple[np.ndarray, np.ndarray] | None = None,
) -> LocalLoop:
    """The components of a closed loop on a simulated rig, ready for `run_until_done`.

    Parameters
    ----------
    rig, protocol
        A rig (its ``acquisition`` section names the simulated population) and a protocol.
    session_path
        The session file to write (or continue with ``resume``).
    endpoints
        Default: fresh ``inproc://`` endpoints (all components threads of this process).
    brain
        Default: `simulated_brain` (the rig's ``brain:``, else its scenario and seed).
    model_server
        A model-server component bound to ``endpoints.model`` / ``model_events``, started
        before the runner; ``None`` when the server runs elsewhere (or not at all).
    presenter, presenter_options
        ``"headless"`` (virtual frame times) or ``"psychopy"``.
    speed
        Simulated array speed (default: the rig's ``acquisition.speed``; 0 = as fast as possible).
    resume, overwrite, settings
        Passed to the `Runner`.
    array_seed
        Seeds the array's spikes (default: the rig's ``acquisition.seed``).
    units
        (unit ids, channels) of ``brain`` when already known (saves building it here).
    """
    endpoints = endpoints or Endpoints.inproc()
    speed = rig.acquisition.speed if speed is None else speed
    if presenter == "headless" and speed > 0:
        # An array on wall time must see stimuli when a real rig would show them.
        presenter_options = {"realtime": True, **(presenter_options or {})}
    brain = brain or make.simulated_brain(rig)
    unit_ids, channels = units if units is not None else make.brain_units(brain)
    array = make.simulated_array(
        rig, endpoints, brain, speed=speed, seed=array_seed, max_frames=protocol.frames(rig).stimulus_frames
    )
    shown = make.presenter(rig, protocol, endpoints, presenter, presenter_options)
    runner = make.runner(
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
    components: list[Component] = [array, shown]
    if model_server is not None:
        components.append(model_server)
    components.append(runner)
    return LocalLoop(components, runner, endpoints)


def run_until_done(
    loop: LocalLoop | list[Component],
    runner_name: str = "runner",
    *,
    timeout_s: float | None = None,
    setup_timeout_s: float = 60.0,
) -> SupervisorReport:
    """Run components as threads until the runner has finished (or failed, Ctrl-C, ``loop.stop``, the timeout).

    Must be called from the main thread for Ctrl-C to reach the supervisor.  The
    report's ``reason`` is ``"runner finished"`` when the runner ended by itself.
    """
    components = loop.components if isinstance(loop, LocalLoop) else loop
    stop = loop.stop if isinstance(loop, LocalLoop) else threading.Event()
    supervisor = Supervisor(components, mode="thread", setup_timeout_s=setup_timeout_s)
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(0.05):
            if supervisor.states[runner_name].state in ("done", "failed", "stopped"):
                supervisor.request_stop("runner finished")
                return
            if stop.is_set():
                supervisor.request_stop("stopped")
                return

    watcher = threading.Thread(target=watch, name="runner-watch", daemon=True)
    watcher.start()
    try:
        return supervisor.run(timeout_s=timeout_s)
    finally:
        finished.set()
        watcher.join(1.0)
