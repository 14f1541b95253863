"""Run the main job in simulation on this machine: the closed loop against a simulated V1.

Everything a rig runs, in this process: a simulated Utah array that "sees" each
stimulus and spikes like V1, a presenter, the model server and the runner executing
``protocols/demo.yaml`` on ``rigs/sim.yaml`` — record natural images, fit, then in a
loop synthesize images for the best-predicted units, show them, and refit on what the
neurons did.  It ends with a report per loop iteration: the model's held-out r and
r/rmax, and each synthesized image's target against the measured response (simulated
spikes) and against the ground truth (the simulated neuron's expected rate), with a
figure.  Watch it live with ``closedloop monitor`` (add ``--rig-ports``), or open the
session file afterwards: ``closedloop monitor OUT/demo.h5``.
"""

# Work modules are imported inside run() and its helpers: cli.py imports every command module to
# build its parser, so each must load fast.
from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

from closedloop.commands.common import add_json_option, write_json
from closedloop.config import load_protocol, load_rig, validate
from closedloop.errors import ClosedLoopError
from closedloop.paths import shipped_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("out/demo"), help="folder for the demo's files (default out/demo)"
    )
    parser.add_argument("--protocol", type=Path, default=None, help="protocol YAML (default protocols/demo.yaml)")
    parser.add_argument("--rig", type=Path, default=None, help="simulated rig YAML (default rigs/sim.yaml)")
    parser.add_argument(
        "--presenter",
        choices=("headless", "psychopy"),
        default="headless",
        help="headless (fast, default) or psychopy (a real window; under Xvfb when there is no display)",
    )
    parser.add_argument("--device", default=None, help="model device: auto, cpu, cuda (default: the protocol's/rig's)")
    parser.add_argument(
        "--rig-ports",
        action="store_true",
        help="use the rig's TCP ports so 'closedloop monitor --rig RIG' can watch live",
    )
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from closedloop.loop import run_until_done, simulated_brain
    from closedloop.transport import Endpoints, use_rig_security
    from closedloop.loop.assemble import build_loop
    from closedloop.reports.loop_report import loop_report

    rig = load_rig(args.rig or shipped_file("rigs/sim.yaml"))
    protocol = load_protocol(args.protocol or shipped_file("protocols/demo.yaml"))
    validate(rig, protocol)
    use_rig_security(rig, "runner")  # every socket of this process: CURVE when the rig asks for it
    if rig.acquisition.kind != "sim":
        raise ClosedLoopError(
            f"{rig.path}: the demo needs a simulated rig (acquisition.kind: sim); for a real rig use 'closedloop run'"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    session, models = args.out / "demo.h5", args.out / "models"
    print(
        f"closed loop in simulation: {protocol.name} on {rig.name}, {args.presenter} presenter -> {session}", flush=True
    )
    started = time.perf_counter()
    with _display_for(args.presenter, rig):
        loop = build_loop(
            rig,
            protocol,
            session,
            presenter=args.presenter,
            model="local",
            endpoints=None if args.rig_ports else Endpoints.inproc(),
            overwrite=True,
            model_out=models,
            device=args.device,
        )
        report = run_until_done(loop)
    seconds = time.perf_counter() - started
    if not loop.runner.finished:
        failures = "; ".join(
            f"{name}: {'; '.join(state.errors)}" for name, state in report.components.items() if state.errors
        )
        raise ClosedLoopError(
            f"the demo stopped before the protocol ended ({report.reason}"
            + (f": {failures}" if failures else "")
            + f"); what was recorded is in {session}"
        )
    print(f"\nloop finished in {seconds:.0f} s; report (simulated spikes vs ground truth):\n", flush=True)
    result = loop_report(session, simulated_brain(rig), models_dir=models)
    print(result.text())
    figure = result.figure(args.out / "loop.png")
    print(f"\nfigure: {figure}\nsession: {session} (open it with: closedloop monitor {session})")
    write_json(
        args.json, {"seconds": seconds, "session": str(session), "figure": str(figure), "report": result.to_dict()}
    )
    return 0


def _display_for(presenter: str, rig):
    """Xvfb for a PsychoPy window when this machine has no display; nothing otherwise."""
    if presenter != "psychopy":
        return contextlib.nullcontext()
    from closedloop.present.display import display_problem
    from closedloop.present.xvfb import virtual_display

    if display_problem(rig.display.width_px, rig.display.height_px) is None:
        return contextlib.nullcontext()
    print("no display here: running the PsychoPy window under Xvfb", flush=True)
    return virtual_display(rig.display.width_px, rig.display.height_px)
