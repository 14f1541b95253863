"""Run a protocol on a rig: present, record, fit, synthesize, present again.

``closedloop run PROTOCOL.yaml --rig RIG.yaml`` starts, in this process, the parts the
rig needs — the acquisition (the simulated array for a simulated rig, the Open Ephys
translator for an Open Ephys rig), the presenter, the model server (unless one is
already serving: ``--model remote``) — and the runner, on the rig's ports so
``closedloop monitor`` can watch.  Every block is committed to the session file as it
ends; Ctrl-C stops after writing what was recorded, and ``--resume SESSION.h5``
continues where the run stopped.
"""

# Work modules are imported inside run() and its helpers: cli.py imports every command module to
# build its parser, so each must load fast.
from __future__ import annotations

import argparse
import time
from pathlib import Path

from closedloop.commands.common import add_json_option, write_json
from closedloop.config import load_protocol, load_rig, validate
from closedloop.errors import ClosedLoopError
from closedloop.paths import shipped_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("protocol", type=Path, help="protocol YAML (see protocols/kindel2017.yaml)")
    parser.add_argument("--rig", type=Path, required=True, help="rig YAML (see rigs/example_openephys.yaml)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--session", type=Path, default=None, help="session file to write (default: PROTOCOL-NAME-DATE-TIME.h5 here)"
    )
    where.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="SESSION",
        help="continue an interrupted session file where it stopped",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --session file")
    parser.add_argument(
        "--presenter",
        choices=("auto", "psychopy", "headless"),
        default="auto",
        help="psychopy (a window), headless (simulation); auto: headless on a simulated rig",
    )
    parser.add_argument(
        "--model",
        choices=("local", "remote"),
        default="local",
        help="local: run the model server here (default); remote: use 'closedloop serve model'",
    )
    parser.add_argument("--model-out", type=Path, default=None, help="save every model version in this folder")
    parser.add_argument(
        "--device", default=None, help="model device (default: protocol fit.device, rig compute.device)"
    )
    parser.add_argument(
        "--units",
        default=None,
        help="unit ids of a new session on a real rig, e.g. 1-96 or 3,5,7-9 (default: the units "
        "heard in the rig's acquisition.discover_units_s before the first block)",
    )
    parser.add_argument(
        "--inproc",
        action="store_true",
        help="in-process sockets instead of the rig's TCP ports (no monitor can attach)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="stop after this many seconds (as Ctrl-C)")
    add_json_option(parser)


def parse_units(text: str) -> list[int]:
    """``"1-3,7"`` → ``[1, 2, 3, 7]``; raises ClosedLoopError naming the bad part."""
    units: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                first, last = (int(v) for v in part.split("-", 1))
                if last < first:
                    raise ValueError
                units.extend(range(first, last + 1))
            else:
                units.append(int(part))
        except ValueError:
            raise ClosedLoopError(f"--units: {part!r} is not a unit id or a range like 1-96") from None
    if len(set(units)) != len(units) or any(u < 0 for u in units):
        raise ClosedLoopError("--units: unit ids must be non-negative and listed once")
    return units


def default_session_path(protocol_name: str) -> Path:
    return Path(f"{protocol_name}-{time.strftime('%Y%m%d-%H%M%S')}.h5")


def check_display(presenter: str, rig) -> None:
    """A PsychoPy presenter needs a display: say why there is none and how to fix it."""
    if presenter != "psychopy":
        return
    from closedloop.present.display import display_problem

    problem = display_problem(rig.display.width_px, rig.display.height_px)
    if problem:
        raise ClosedLoopError(problem + "; or run with --presenter headless")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from closedloop.loop import run_until_done
    from closedloop.transport import Endpoints, use_rig_security
    from closedloop.loop.assemble import build_loop, presenter_for
    from closedloop.runner.resume import check_resumable
    from closedloop.runner.session_size import check_room_for_run

    rig, protocol = load_rig(shipped_file(args.rig)), load_protocol(shipped_file(args.protocol))
    validate(rig, protocol)
    use_rig_security(rig, "runner")  # every socket of this process: CURVE when the rig asks for it
    if args.resume is not None and not args.resume.is_file():
        raise ClosedLoopError(f"{args.resume}: no such session file to resume")
    session = args.resume or args.session or default_session_path(protocol.name)
    check_display(presenter_for(rig, args.presenter), rig)
    units = None if args.units is None else np.asarray(parse_units(args.units), dtype=np.int64)
    check_room_for_run(session, rig, protocol, None if units is None else units.size, args.resume is not None)
    first_version = 1
    if args.resume is not None:  # a damaged file is refused before anything starts; versions go on from its last
        first_version = check_resumable(args.resume)  # a remote server hears it from the runner
    loop = build_loop(
        rig,
        protocol,
        session,
        presenter=args.presenter,
        model=args.model,
        endpoints=Endpoints.inproc() if args.inproc else None,
        resume=args.resume is not None,
        overwrite=args.overwrite,
        unit_ids=units,
        model_out=args.model_out,
        device=args.device,
        first_version=first_version,
    )
    print(
        f"{'resuming' if args.resume else 'running'} {protocol.name} on {rig.name} -> {session}; Ctrl-C stops "
        "after writing what was recorded"
    )
    report = run_until_done(loop, timeout_s=args.timeout)
    return finish(report, loop.runner, session, args)


def finish(report, runner, session: Path, args: argparse.Namespace) -> int:
    """Print what happened; the exit status says whether the protocol finished."""
    from closedloop.reports.summary import RunSummary

    summary = RunSummary.from_session(session) if Path(session).exists() else None
    if summary is not None:
        print(summary.text())
    write_json(
        getattr(args, "json", None),
        {
            "finished": bool(runner.finished),
            "reason": report.reason,
            "summary": None if summary is None else summary.to_dict(),
        },
    )
    failures = [
        f"{name}: {'; '.join(state.errors)}" for name, state in report.components.items() if state.state == "failed"
    ]
    if runner.finished and not failures:
        return 0
    again = (
        f"closedloop serve runner --rig {args.rig} --protocol {args.protocol}"
        if getattr(args, "component", None) == "runner"
        else f"closedloop run {args.protocol} --rig {args.rig}"
    )
    resume = (
        f"continue with: {again} --resume {session}"
        if Path(session).exists()
        else "nothing was recorded (no session file written)"
    )
    if report.reason in ("signal", "timeout", "stopped") and not failures:
        print(f"stopped ({report.reason}) before the protocol ended; {resume}")
        return 130 if report.reason == "signal" else 1
    reason = "; ".join(failures) or runner.stop_reason or report.reason
    raise ClosedLoopError(f"the run did not finish: {reason}; {resume}")
