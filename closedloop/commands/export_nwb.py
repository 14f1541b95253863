"""Write a session file as NWB (Neurodata Without Borders), readable with pynwb.

The NWB file holds the units with their spike times, one trial per stimulus
presentation (onset, stimulus id, block, dropped frames, block flag), the images
shown, the photodiode/TTL events, the per-trial responses, and the rig and protocol
YAML.  Only committed blocks are exported; a session still being written is exported
as far as it has been committed.  The file is written under a temporary name and
renamed when complete.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from closedloop.commands.common import add_json_option, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", type=Path, metavar="SESSION.h5", help="closedloop session file")
    parser.add_argument("out", type=Path, metavar="OUT.nwb", help="NWB file to write (its folder must exist)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.nwb if it exists")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from closedloop.data.nwb import export_nwb
    from closedloop.data.session_integrity import refuse_damaged

    refuse_damaged(args.session, "an export would drop that data")
    summary = export_nwb(args.session, args.out, overwrite=args.overwrite)
    print(summary.text())
    write_json(args.json, summary.to_dict())
    return 0
