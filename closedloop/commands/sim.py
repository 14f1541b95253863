"""Simulated V1: write archived recordings with known ground truth.

`closedloop sim make-archive` runs a seeded simulated population through a natural-image
and grating experiment and writes it either as a closedloop session file (HDF5) or as a
pvc-8 MATLAB file with the real dataset's variable names, shapes and stimulus layout.
"""

# Work modules are imported inside run() and its helpers: cli.py imports every command module to
# build its parser, so each must load fast.
from __future__ import annotations

import argparse
from pathlib import Path

from closedloop.commands.common import add_json_option, positive_int, non_negative_int, write_json
from closedloop.commands.stage_progress import StageProgress
from closedloop.errors import ClosedLoopError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sim_command", metavar="SUBCOMMAND", required=True)
    make = sub.add_parser(
        "make-archive",
        help="write a simulated recording",
        description="Write a simulated recording with known ground truth.",
    )
    make.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output file: .h5 for session, .mat for pvc8 (added when OUT has no extension)",
    )
    make.add_argument(
        "--layout",
        choices=("session", "pvc8"),
        default="session",
        help="closedloop session HDF5 file, or a pvc-8 MATLAB v5 file (default: session)",
    )
    make.add_argument("--seed", type=non_negative_int, default=0, help="seed of population and trials (default 0)")
    make.add_argument(
        "--image-seed",
        type=non_negative_int,
        default=None,
        help="seed of the natural-image set (default: derived from --seed); sessions made with the same "
        "--image-seed show the same images, as the sessions of pvc-8 do",
    )
    make.add_argument("--units", type=positive_int, default=None, help="number of units (default: the scenario's)")
    make.add_argument(
        "--images",
        type=positive_int,
        default=270,
        help="natural images (pvc8: small ones, each also shown large; default 270)",
    )
    make.add_argument("--repeats", type=positive_int, default=20, help="repeats of each stimulus (default 20)")
    make.add_argument(
        "--scenario", type=Path, default=None, help="population scenario YAML (default: sim/default.yaml)"
    )
    make.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_json_option(make)


#: The file extension of each layout.
EXTENSIONS = {"session": ".h5", "pvc8": ".mat"}


def output_path(out: Path, layout: str) -> Path:
    """``out`` with the layout's extension added when it has none; a wrong one is refused."""
    wanted = EXTENSIONS[layout]
    if not out.suffix:
        return out.with_name(out.name + wanted)
    if out.suffix.lower() in EXTENSIONS.values() and out.suffix.lower() != wanted:
        raise ClosedLoopError(
            f"--out {out}: a {layout} archive is a {wanted} file; name it "
            f"{out.with_suffix(wanted)} or choose --layout "
            f"{next(k for k, v in EXTENSIONS.items() if v == out.suffix.lower())}"
        )
    return out


def run(args: argparse.Namespace) -> int:
    from closedloop.sim.archive import ArchiveSpec, make_archive

    spec = ArchiveSpec(
        layout=args.layout,
        seed=args.seed,
        n_units=args.units,
        n_images=args.images,
        n_repeats=args.repeats,
        scenario=args.scenario,
        image_seed=args.image_seed,
    )
    progress = StageProgress()
    try:
        summary = make_archive(output_path(args.out, args.layout), spec, overwrite=args.overwrite, progress=progress)
    finally:
        progress.close()
    print(summary.text())
    write_json(args.json, summary.to_dict())
    return 0
