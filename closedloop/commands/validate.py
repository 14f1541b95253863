"""Check a rig file, and optionally a protocol against it, without starting anything.

Every file a setting names (a scenario, an archive, a brain's checkpoint) must exist;
relative paths are taken from the folder of the file that names them.  The files
shipped with closedloop can be named from any folder: ``closedloop validate
rigs/sim.yaml protocols/demo.yaml``.

Exit status 0 and a short summary when both are valid; otherwise one line naming
the file, line and field that is wrong, and exit status 2.
"""

# Work modules are imported inside run() and its helpers: cli.py imports every command module to
# build its parser, so each must load fast.
from __future__ import annotations

import argparse
from pathlib import Path

from closedloop.commands.common import add_json_option, write_json
from closedloop.config import load_protocol, load_rig, validate
from closedloop.paths import shipped_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rig", type=Path, metavar="RIG.yaml", help="rig file (rigs/*.yaml)")
    parser.add_argument("protocol", type=Path, nargs="?", metavar="PROTOCOL.yaml", help="protocol file")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    rig = load_rig(shipped_file(args.rig))
    protocol = load_protocol(shipped_file(args.protocol)) if args.protocol else None
    summary = validate(rig, protocol)
    estimate = None
    if protocol is not None:
        from closedloop.runner.session_size import estimate_session

        estimate = estimate_session(rig, protocol)
        summary += "\n" + estimate.text()
    print(summary)
    write_json(
        args.json,
        {
            "rig": str(args.rig),
            "protocol": str(args.protocol or ""),
            "valid": True,
            "summary": summary,
            "session_bytes": None if estimate is None else estimate.bytes,
        },
    )
    return 0
