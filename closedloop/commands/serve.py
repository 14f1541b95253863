"""Run one component of the loop as its own process: ``closedloop serve COMPONENT --rig RIG.yaml``.

Only ``acquisition`` exists so far: it runs the adapter the rig's ``acquisition.kind``
names (sim, replay or openephys), publishing on the rig's ``network.ports.spikes``,
until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from closedloop.errors import ClosedLoopError

COMPONENTS = ("acquisition", "model", "presenter", "runner")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("component", choices=COMPONENTS, help="which component to run")
    parser.add_argument("--rig", type=Path, required=True, help="rig YAML file")
    parser.add_argument("--timeout", type=float, default=None, help="stop after this many seconds (default: never)")


def build_acquisition(rig):
    """The acquisition adapter a rig describes."""
    from closedloop.acquisition import BrainSpec, OpenEphysAdapter, ReplayAdapter, SimulatedArray

    acquisition, network = rig.acquisition, rig.network
    spikes, stimulus = network.endpoint("spikes"), network.endpoint("stimulus")
    line = acquisition.photodiode_line if acquisition.photodiode_line is not None else 1
    if acquisition.kind == "sim":
        brain = BrainSpec(scenario=acquisition.scenario, seed=acquisition.seed, size_px=rig.stimulus.size_px)
        return SimulatedArray(spikes, stimulus, brain, speed=acquisition.speed, refresh_hz=rig.display.refresh_hz,
                              photodiode_line=line, seed=acquisition.seed)
    if acquisition.kind == "replay":
        if not acquisition.archive:
            raise ClosedLoopError(f"{rig.path}: acquisition.archive is required when kind is replay")
        return ReplayAdapter(spikes, acquisition.archive, speed=acquisition.speed, stimulus_endpoint=stimulus,
                             photodiode_line=line)
    return OpenEphysAdapter(spikes, acquisition.event_endpoint, sample_rate_hz=acquisition.sample_rate_hz)


def run(args: argparse.Namespace) -> int:
    from closedloop.config.rig import load_rig
    from closedloop.runtime import Supervisor

    if args.component != "acquisition":
        raise ClosedLoopError(f"'serve {args.component}' is not built yet; only 'serve acquisition' runs today")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    rig = load_rig(args.rig)
    adapter = build_acquisition(rig)
    print(f"serving {adapter.name} ({rig.acquisition.kind}) on {adapter.endpoint}; Ctrl-C stops")
    report = Supervisor([adapter], mode="thread", setup_timeout_s=120).run(timeout_s=args.timeout)
    state = report.components[adapter.name]
    print(f"{adapter.name}: {state.state} ({report.reason}); sent {vars(adapter.stats)}")
    if not report.ok:
        raise ClosedLoopError(f"{adapter.name} failed: {'; '.join(state.errors)}")
    return 0
