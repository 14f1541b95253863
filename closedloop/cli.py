"""The `closedloop` command line.

Each subcommand lives in its own module under `closedloop.commands`; this file only
builds the parser and turns the errors users can cause into one clear line and exit
status 2 (no traceback).  Heavy modules (torch, h5py) are imported by the subcommand
that needs them, so `closedloop validate` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from closedloop import __version__
from closedloop.errors import ClosedLoopError

# subcommand name -> module in closedloop.commands that defines add_arguments(parser) and run(args)
COMMANDS = {
    "demo": ("demo", "run the main job in simulation on this machine"),
    "validate": ("validate", "check a rig (and protocol) file without starting anything"),
    "sim": ("sim", "simulated V1: make archived recordings"),
    "fit": ("fit", "fit the CNN to archived sessions, offline and in parallel"),
    "synth": ("synth", "synthesize stimuli that drive fitted units to target rates"),
    "run": ("run", "run a protocol on a rig: present, record, fit, synthesize"),
    "replay": ("replay", "drive the online pipeline with an archived recording"),
    "monitor": ("monitor", "live view of predicted vs measured rates"),
    "export-nwb": ("export_nwb", "write a session file as NWB"),
    "repair": ("repair", "copy the intact part of a damaged or interrupted session into a new file"),
    "serve": ("serve", "run one component of the loop as its own process"),
    "keys": ("keys", "make the rig's CURVE certificates (authenticated, encrypted sockets)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="closedloop",
        description="Close the loop between a visual-neuroscience rig and a deep network.",
    )
    parser.add_argument("--version", action="version", version=f"closedloop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"closedloop.commands.{module_name}")
        command_parser = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `closedloop` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except ClosedLoopError as error:
        print(f"closedloop {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"closedloop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
