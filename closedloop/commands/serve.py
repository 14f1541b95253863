"""Run one component of the loop as its own process: ``closedloop serve COMPONENT --rig RIG.yaml``.

``acquisition`` runs the adapter the rig's ``acquisition.kind`` names (sim, replay,
openephys or lsl; a sim rig's ``acquisition.brain``), publishing on the rig's
``network.ports.spikes``.  ``model`` runs the model server for ``--protocol``'s ``fit``
section (on ``--device``, default the protocol's or rig's), answering on ``network.ports.model`` and
publishing on ``network.ports.model_events``, saving every model version under
``--out`` when given.  ``presenter`` opens the window (``--presenter psychopy``, the
default, or ``headless``) and takes blocks on ``network.ports.blocks``, reporting each
trial on ``network.ports.stimulus`` — on the stimulus computer, say.  ``runner`` runs
``--protocol`` against components served elsewhere, writing ``--session`` (or
continuing ``--resume``).  Each runs until Ctrl-C, SIGTERM or ``--timeout``; the
runner also stops when its protocol is done.  ``--protocol`` is required by ``model``,
``presenter`` and ``runner``; ``--json PATH`` writes what the component did.
"""

# Work modules are imported inside run() and its helpers: cli.py imports every command module to
# build its parser, so each must load fast.
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from closedloop.commands.common import add_json_option, positive_int, write_json
from closedloop.commands.run import check_display, default_session_path, finish, parse_units
from closedloop.config import load_protocol, validate
from closedloop.config.rig import DEVICE_PATTERN, load_rig
from closedloop.errors import ClosedLoopError
from closedloop.paths import shipped_file
from closedloop.wording import counted

COMPONENTS = ("acquisition", "model", "presenter", "runner")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("component", choices=COMPONENTS, help="which component to run")
    parser.add_argument("--rig", type=Path, required=True, help="rig YAML file")
    parser.add_argument(
        "--protocol",
        type=Path,
        default=None,
        help="protocol YAML file; required by model (its fit section), presenter (its timing) "
        "and runner (what to run); not used by acquisition",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="model: save every model version as OUT/model_vNNN.pt (default: not saved)",
    )
    parser.add_argument(
        "--presenter",
        choices=("psychopy", "headless"),
        default="psychopy",
        help="presenter: a PsychoPy window (default) or the headless one",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--session", type=Path, default=None, help="runner: the session file to write")
    where.add_argument("--resume", type=Path, default=None, help="runner: continue this session file")
    parser.add_argument(
        "--units",
        default=None,
        help="runner: unit ids of a new session (e.g. 1-96); "
        "a simulated rig's array knows its own, a real rig's runner listens for them "
        "(acquisition.discover_units_s)",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="model: auto, cpu, cuda or cuda:N (default: the protocol's fit.device, else the rig's)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="stop after this many seconds (default: never)")
    parser.add_argument(
        "--first-version",
        type=positive_int,
        default=1,
        metavar="N",
        help="model: number the first model N (default 1; a resuming runner raises it past its session's versions)",
    )
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from closedloop.transport.security import use_rig_security

    if args.timeout is not None and args.timeout <= 0:
        raise ClosedLoopError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    if args.device is not None and (args.component != "model" or not DEVICE_PATTERN.fullmatch(args.device)):
        raise ClosedLoopError(f"--device {args.device}: only for 'serve model', and one of auto, cpu, cuda, cuda:N")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    rig = load_rig(shipped_file(args.rig))
    use_rig_security(rig, args.component)  # the component's role names its certificate
    if args.component == "model":
        return _serve_model(rig, args)
    if args.component == "presenter":
        return _serve_presenter(rig, args)
    if args.component == "runner":
        return _serve_runner(rig, args)
    from closedloop.loop.components import acquisition_adapter

    adapter = acquisition_adapter(rig)
    print(f"serving {adapter.name} ({rig.acquisition.kind}) on {adapter.endpoint}; Ctrl-C stops")
    report = _supervise(adapter, args.timeout)
    state = report.components[adapter.name]
    _report_end(
        args,
        adapter.name,
        report,
        f"{state.state} ({report.reason}); sent {vars(adapter.stats)}",
        {"sent": vars(adapter.stats)},
    )
    if not report.ok:
        raise ClosedLoopError(f"{adapter.name} failed: {'; '.join(state.errors)}")
    return 0


def _serve_model(rig, args: argparse.Namespace) -> int:
    from closedloop.loop.components import model_server

    if args.protocol is None:
        raise ClosedLoopError("'serve model' needs --protocol P.yaml (its fit section says what to fit)")
    protocol = load_protocol(shipped_file(args.protocol))
    validate(rig, protocol)  # the stimulus array must be large enough for the preprocessing
    server = model_server(
        rig, protocol, name="model", out_dir=args.out, device=args.device, first_version=args.first_version
    )
    settings = server.settings
    print(
        f"serving the model ({settings.model.describe_members()}{settings.model.architecture}, device "
        f"{settings.device}, seed {settings.seed}) on {settings.request_endpoint}, events on "
        f"{settings.events_endpoint}; Ctrl-C stops",
        flush=True,
    )
    report = _supervise(server, args.timeout)
    state = report.components[server.name]
    counts = ", ".join(f"{key} {value}" for key, value in sorted(server.counts.items())) or "no requests"
    saved = f"; models in {args.out}" if args.out is not None and server.version else ""
    _report_end(
        args,
        server.name,
        report,
        f"{state.state} ({report.reason}); model version {server.version}; {counts}{saved}",
        {"model_version": server.version, "counts": dict(server.counts), "device": str(settings.device)},
    )
    if not report.ok:
        raise ClosedLoopError(f"{server.name} failed: {'; '.join(state.errors)}")
    return 0


def _needs_protocol(args: argparse.Namespace, what: str):
    if args.protocol is None:
        raise ClosedLoopError(f"'serve {args.component}' needs --protocol P.yaml ({what})")
    return load_protocol(shipped_file(args.protocol))


def _serve_presenter(rig, args: argparse.Namespace) -> int:
    from closedloop.loop.components import presenter as presenter_component
    from closedloop.transport import Endpoints

    protocol = _needs_protocol(args, "its timing section gives the frames per stimulus")
    validate(rig, protocol)
    check_display(args.presenter, rig)
    presenter = presenter_component(rig, protocol, Endpoints.from_rig(rig), args.presenter)
    print(
        f"serving the {args.presenter} presenter: blocks on {presenter.request_endpoint}, trials on "
        f"{presenter.shown_endpoint}; Ctrl-C stops",
        flush=True,
    )
    report = _supervise(presenter, args.timeout)
    state = report.components[presenter.name]
    _report_end(
        args,
        presenter.name,
        report,
        f"{state.state} ({report.reason}); {counted(presenter.blocks_shown, 'block')} shown, "
        f"{presenter.blocks_rejected} refused",
        {"blocks_shown": presenter.blocks_shown, "blocks_refused": presenter.blocks_rejected},
    )
    if not report.ok:
        raise ClosedLoopError(f"{presenter.name} failed: {'; '.join(state.errors)}")
    return 0


def _serve_runner(rig, args: argparse.Namespace) -> int:
    import numpy as np

    from closedloop.acquisition.recording import RECORDING_KINDS
    from closedloop.loop.components import brain_units, runner as runner_component, simulated_brain
    from closedloop.loop.local import run_until_done
    from closedloop.loop.progress import ProgressPrinter
    from closedloop.runner.resume import check_resumable
    from closedloop.runner.session_size import check_room_for_run
    from closedloop.transport import Endpoints

    protocol = _needs_protocol(args, "what to run")
    validate(rig, protocol)
    if args.resume is not None and not args.resume.is_file():
        raise ClosedLoopError(f"{args.resume}: no such session file to resume")
    session = args.resume or args.session or default_session_path(protocol.name)
    units = None
    if args.units is not None:
        units = np.asarray(parse_units(args.units), dtype=np.int64)
    elif args.resume is None and rig.acquisition.kind == "sim":
        units = brain_units(simulated_brain(rig))[0]
    elif args.resume is None and rig.acquisition.kind not in RECORDING_KINDS:
        raise ClosedLoopError("a new session needs its unit ids: give --units, e.g. --units 1-96")
    check_room_for_run(session, rig, protocol, None if units is None else units.size, args.resume is not None)
    if args.resume is not None:  # refused here if damaged; the model server hears its next version from the runner
        check_resumable(args.resume)
    endpoints = Endpoints.from_rig(rig)
    # A real rig (loop.components.runner): no block before data flows; without --units it listens for them.
    runner = runner_component(rig, protocol, session, endpoints, unit_ids=units, resume=args.resume is not None)
    progress = ProgressPrinter(endpoints.responses, endpoints.model_events)
    print(f"running {protocol.name} against the components serving on {rig.network.host} -> {session}", flush=True)
    report = run_until_done([progress, runner], timeout_s=args.timeout)
    return finish(report, runner, session, args)


def _report_end(args: argparse.Namespace, name: str, report, line: str, details: dict) -> None:
    """Print the component's end ``line``, with the connections refused for lacking an allowed key
    (CURVE), and write ``--json``: its end state and what it did."""
    from closedloop.transport.guard import refused_connections

    refused = refused_connections()
    if refused:
        line += f"; {counted(refused, 'connection')} without an allowed key refused"
    print(f"{name}: {line}")
    state = report.components[name]
    write_json(
        args.json,
        {
            "component": args.component,
            "name": name,
            "state": state.state,
            "reason": report.reason,
            "ok": bool(report.ok),
            "errors": list(state.errors),
            "refused_connections": refused,
            **details,
        },
    )


def _supervise(component, timeout: float | None):
    from closedloop.runtime import Supervisor

    return Supervisor([component], mode="thread", setup_timeout_s=120).run(timeout_s=timeout)
