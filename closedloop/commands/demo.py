"""Run the main job in simulation on this machine.

Until the closed loop exists, the demo runs what does: it simulates a V1 population,
records a natural-image and grating session from it into a session file, and prints
what was recorded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from closedloop.commands.common import add_json_option, non_negative_int, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for the demo's files (default out/demo)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the simulated population (default 0)")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from closedloop.sim.archive import ArchiveSpec, make_archive

    args.out.mkdir(parents=True, exist_ok=True)
    session = args.out / "sim_session.h5"
    print(f"simulating a V1 population and recording a session into {session} ...", flush=True)
    spec = ArchiveSpec(layout="session", seed=args.seed, n_units=40, n_images=270, n_repeats=20)
    summary = make_archive(session, spec, overwrite=True)
    print(summary.text())
    write_json(args.json, {"archive": summary.to_dict()})
    return 0
