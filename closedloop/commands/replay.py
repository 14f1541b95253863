"""Drive the online pipeline with an archived recording and compare with offline fitting.

ARCHIVE (a closedloop session .h5 or a pvc-8 .mat) is streamed by the replay adapter
(at --speed: 1 = real time, 0 = as fast as possible); a passive driver aligns its
photodiode edges to the replayed trials, counts responses in the protocol's window and
sends every block to the real model server, which refits after every --fit-every
blocks.  A line per block shows the online model's held-out r after it.  At the end the
same data are fitted offline on the server's split and the two models are compared on
the same held-out images.  --out DIR writes replay.json and replay.png.

The rig file gives the display refresh (alignment tolerance), device and ports; the
model server takes images at the archive's own size so that its input is exactly the
offline loader's.

Exit status: 0 when the replay finished, 1 when it stopped part-way, 2 for bad
arguments or input (found before anything starts).
"""

# Work modules are imported inside run() and its helpers: cli.py imports every command module to
# build its parser, so each must load fast.
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from closedloop.commands.common import add_json_option, non_negative_int, positive_int, write_json
from closedloop.config import load_protocol, load_rig
from closedloop.errors import DataFileError
from closedloop.paths import shipped_file


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 (as fast as possible) or a positive factor, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("archive", type=Path, metavar="ARCHIVE", help="session .h5 or pvc-8 .mat file")
    parser.add_argument(
        "--protocol",
        type=Path,
        required=True,
        metavar="P.yaml",
        help="protocol whose response window and fit section are used",
    )
    parser.add_argument(
        "--rig",
        type=Path,
        default=Path("rigs/sim.yaml"),
        metavar="RIG.yaml",
        help="rig file: refresh rate, device and ports (default rigs/sim.yaml)",
    )
    parser.add_argument(
        "--speed", type=_speed, default=0.0, help="1 = real time, N = N times faster, 0 = as fast as possible (default)"
    )
    parser.add_argument(
        "--fit-every",
        type=positive_int,
        default=1,
        metavar="K",
        help="refit after every K-th block that added data (default 1)",
    )
    parser.add_argument(
        "--block-trials",
        type=positive_int,
        default=None,
        metavar="N",
        help="blocks of at most N trials (default: the archive's blocks; pvc-8: one per repeat)",
    )
    parser.add_argument("--blocks", type=positive_int, default=None, metavar="N", help="stop after N blocks")
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for each refit before the next block (default; --no-wait lets refits coalesce)",
    )
    parser.add_argument(
        "--device",
        default=None,
        metavar="DEVICE",
        help="auto, cpu, cuda or cuda:N (default: the protocol's fit.device, else the rig's)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=None,
        help="seed of the split, refits and offline fit (default: the protocol's seed)",
    )
    parser.add_argument(
        "--units",
        choices=("indcent", "all"),
        default="indcent",
        help="pvc-8 units: INDCENT == 1 (default, as the offline loader) or all",
    )
    parser.add_argument(
        "--rig-ports",
        action="store_true",
        help="use the rig's tcp ports instead of in-process endpoints, so closedloop monitor can watch",
    )
    parser.add_argument(
        "--no-offline", dest="offline", action="store_false", help="skip the offline batch fit at the end"
    )
    parser.add_argument("--out", type=Path, default=None, metavar="DIR", help="write replay.json and replay.png here")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from closedloop.replay.pipeline import ReplayFailed, ReplayOptions, prepare, replay_archive
    from closedloop.replay.summary import block_table, final_lines, replay_figure, summary_dict
    from closedloop.transport import use_rig_security

    rig_path = shipped_file(args.rig)
    rig, protocol = load_rig(rig_path), load_protocol(args.protocol)
    if args.rig_ports:
        use_rig_security(rig, "runner")
    options = ReplayOptions(
        speed=args.speed,
        fit_every=args.fit_every,
        block_trials=args.block_trials,
        max_blocks=args.blocks,
        wait=args.wait,
        device=args.device,
        seed=args.seed,
        units=args.units,
        offline=args.offline,
        endpoints="rig" if args.rig_ports else "inproc",
    )
    plan, notes = prepare(args.archive, protocol, rig, options)  # bad input: exit 2 before anything starts
    blocks = plan.blocks[: options.max_blocks]
    print(
        f"replaying {plan.path} ({plan.layout}): {len(blocks)} block(s), {blocks[-1].trial_stop} trials, "
        f"{plan.unit_ids.size} units, speed {'max' if args.speed == 0 else f'{args.speed:g}x'}",
        flush=True,
    )
    for note in notes:
        print(f"note: {note}", flush=True)

    def on_model(message) -> None:
        if not args.wait:
            m = message.metrics
            print(
                f"  model v{message.version} (asked by block {int(m.get('block', -1))}): held-out r mean "
                f"{m.get('r_mean', float('nan')):.3f} on {int(m.get('n_images', 0))} images",
                flush=True,
            )

    try:
        outcome = replay_archive(
            args.archive,
            protocol,
            rig,
            options,
            on_row=lambda row: print(row.text(), flush=True),
            on_model=on_model,
            on_stage=lambda text: print(f"{text} ...", flush=True),
            prepared=(plan, notes),
        )
    except ReplayFailed as error:
        print(f"closedloop replay: {error}", file=sys.stderr)
        return 1
    print()
    print(block_table(outcome.rows))
    print(f"online replay took {outcome.online_seconds:.1f} s on {outcome.server.device}")
    for line in final_lines(outcome):
        print(line)
    summary = summary_dict(
        outcome,
        protocol=str(args.protocol),
        rig=str(rig_path),
        options={
            "speed": args.speed,
            "fit_every": args.fit_every,
            "block_trials": args.block_trials,
            "blocks": args.blocks,
            "wait": args.wait,
            "units": args.units,
            "offline": args.offline,
            "endpoints": options.endpoints,
        },
    )
    if args.out is not None:
        _write(args.out / "replay.json", summary)
        figure = replay_figure(outcome, args.out / "replay.png")
        print(f"wrote {args.out / 'replay.json'} and {figure}")
    _write(args.json, summary)
    return 0


def _write(path: Path | None, summary: dict) -> None:
    if path is None:  # no --json
        return
    try:
        write_json(path, summary)
    except OSError as error:
        raise DataFileError(path, f"cannot write the summary ({error.strerror or error})") from None
