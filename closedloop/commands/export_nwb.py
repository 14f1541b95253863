"""Write a session file as NWB (Neurodata Without Borders), readable with pynwb.

The NWB file holds the units with their spike times, one trial per stimulus
presentation (onset, stimulus id, block, dropped frames, block flag), the images
shown, the photodiode/TTL events, the per-trial responses, and the rig and protocol
YAML.  Only committed blocks are exported; a session still being written is exported
as far as it has been committed.  The file is written under a temporary name and
renamed when complete.

Subject, experimenter, institution, lab and description come from the ``session:``
sections of the rig and protocol the session was recorded with, and from
``--metadata META.yaml`` (a file with a ``session:`` section, e.g. the animal of the day;
its keys win).  A DANDI upload needs the subject's id, species, sex and age: the
export warns when one is missing.
"""

# Work modules are imported inside run() and its helpers: cli.py imports every command module to
# build its parser, so each must load fast.
from __future__ import annotations

import argparse
from pathlib import Path

from closedloop.commands.common import add_json_option, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", type=Path, metavar="SESSION.h5", help="closedloop session file")
    parser.add_argument(
        "out",
        type=Path,
        metavar="OUT.nwb",
        help="NWB file to write (its folder must exist; .nwb is added when OUT has no extension)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.nwb if it exists")
    parser.add_argument(
        "--metadata",
        type=Path,
        default=None,
        metavar="META.yaml",
        help="YAML with a session: section (subject, experimenter, institution, lab, description); "
        "overrides the rig's and protocol's",
    )
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from closedloop.data.nwb import export_nwb
    from closedloop.data.session_integrity import refuse_damaged

    refuse_damaged(args.session, "an export would drop that data")
    out = args.out if args.out.suffix else args.out.with_name(args.out.name + ".nwb")
    summary = export_nwb(args.session, out, overwrite=args.overwrite, metadata=args.metadata)
    print(summary.text())
    write_json(args.json, summary.to_dict())
    return 0
