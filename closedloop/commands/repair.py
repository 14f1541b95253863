"""Copy the intact part of a damaged or interrupted session file into a new file.

``closedloop repair SESSION.h5 OUT.h5`` copies every committed block up to the first
damaged one, the stimuli they show and the runner journal's records of those blocks
(``OUT.runner.jsonl``), so OUT.h5 opens with plain h5py, exports to NWB, and can be
continued with ``closedloop run ... --resume OUT.h5``.  SESSION.h5 is never changed.
Use it after a crash (HDF5 refuses plain readers of a file whose writer was killed),
after a disk filled up, or when ``export-nwb`` or ``--resume`` refuse a session.
"""

# Work modules are imported inside run() and its helpers: cli.py imports every command module to
# build its parser, so each must load fast.
from __future__ import annotations

import argparse
from pathlib import Path

from closedloop.commands.common import add_json_option, write_json
from closedloop.errors import ClosedLoopError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", type=Path, metavar="SESSION.h5", help="session file to repair (left unchanged)")
    parser.add_argument("out", type=Path, metavar="OUT.h5", help="new session file to write (its folder must exist)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.h5 (and its journal) if they exist")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from closedloop.data.session_repair import repair_session
    from closedloop.runner.journal import copy_records, journal_path

    session, out = args.session, args.out
    if not session.is_file():
        raise ClosedLoopError(f"{session}: no such session file")
    if out.resolve() == session.resolve():
        raise ClosedLoopError(f"{out}: give a new file for the repaired copy; {session} itself is never changed")
    if not out.parent.is_dir():
        raise ClosedLoopError(f"{out.parent}: no such folder for the repaired copy")
    for path in (out, journal_path(out)):
        if path.exists() and not args.overwrite:
            raise ClosedLoopError(f"{path}: already exists; pass --overwrite to replace it")
    report = repair_session(session, out)
    records = copy_records(journal_path(session), journal_path(out), report.kept_blocks)
    print(report.text())
    resumable = records == report.kept_blocks > 0
    if report.kept_blocks == 0:
        print("  no block to keep: the session has to be started again")
    elif resumable:
        print(
            f"  journal: {records} records copied to {journal_path(out)}; continue with "
            f"'closedloop run PROTOCOL.yaml --rig RIG.yaml --resume {out}'"
        )
    else:
        print(
            f"  journal: {journal_path(session)} has records of {records} of the {report.kept_blocks} blocks; "
            f"{out} can be read and exported but not resumed"
        )
    write_json(
        args.json,
        {
            "session": str(session),
            "out": str(out),
            "blocks_committed": report.integrity.n_blocks,
            "blocks_kept": report.kept_blocks,
            "stimuli_kept": report.kept_stimuli,
            "problems": report.integrity.problems,
            "uncommitted_rows": report.uncommitted_rows,
            "journal_records": records,
            "resumable": resumable,
        },
    )
    return 0
