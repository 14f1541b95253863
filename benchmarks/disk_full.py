"""Fill a small tmpfs at many points of `closedloop run` and count what survives.

For each point (which write, which call, how many bytes left free) the run goes on a
fresh 16 MB tmpfs (rigs/sim.yaml, a six-step protocol), the filesystem is filled just
before that write, and the outcome is graded: exit status (2 expected; a negative one is
a crash such as a segfault), whether the last stderr line names the file, the error and
the free space, committed blocks, whether any committed block or stimulus holds data
that was never written, whether plain h5py opens the file, and whether the journal has
exactly one whole record per committed block.  Needs root (to mount the tmpfs).

    .venv/bin/python benchmarks/disk_full.py [--leave 0,100000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.faults.test_disk_full import PROTOCOL  # noqa: E402 - the tiny protocol of the test

#: (write, call): every block of the protocol, the natural and synthesized images, three journal pages
POINTS = [("block", n) for n in range(6)] + [("stimuli", 0), ("stimuli", 1)] + [("journal", n) for n in range(3)]


def grade(folder: Path, result: subprocess.CompletedProcess) -> dict:
    import h5py

    from closedloop.data.session import SessionReader
    from closedloop.data.session_integrity import check_committed
    from closedloop.runner.journal import journal_path, read_records

    session = folder / "s.h5"
    last = (result.stderr.strip().splitlines() or [""])[-1]
    row = {
        "rc": result.returncode,
        "line_ok": "No space left on device" in last and "free on its filesystem" in last,
        "blocks": None,
        "bad_data": None,
        "plain_h5py": None,
        "journal_ok": None,
    }
    if session.exists():
        try:
            with SessionReader(session) as reader:
                row["blocks"], row["bad_data"] = reader.n_blocks, not check_committed(reader).ok
        except Exception as error:  # noqa: BLE001 - graded, not raised
            row["blocks"] = f"unreadable: {error}"
        try:
            h5py.File(session, "r").close()
            row["plain_h5py"] = True
        except OSError:
            row["plain_h5py"] = False
        journal = journal_path(session)
        try:
            records = read_records(journal) if journal.exists() else []
            row["journal_ok"] = [r.session_block for r in records] == list(range(row["blocks"] or 0))
        except Exception:  # noqa: BLE001
            row["journal_ok"] = False
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leave", default="0,100000", help="bytes left free after filling, comma-separated")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root to mount a tmpfs (tests/faults/test_disk_full.py injects ENOSPC instead)")
        return 2
    leaves = [int(v) for v in args.leave.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        protocol = Path(scratch) / "protocol.yaml"
        protocol.write_text(PROTOCOL)
        folder = Path(scratch) / "disk"
        folder.mkdir()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for where, n in POINTS:
            for leave in leaves:
                subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "bench-disk-full", str(folder)], check=True)
                try:
                    result = subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "tests.faults.disk_filler",
                            "fill",
                            str(folder),
                            where,
                            str(n),
                            "--",
                            "run",
                            str(protocol),
                            "--rig",
                            "rigs/sim.yaml",
                            "--inproc",
                            "--session",
                            str(folder / "s.h5"),
                        ],
                        cwd=REPO,
                        env={**env, "DISK_FILLER_LEAVE": str(leave)},
                        capture_output=True,
                        text=True,
                        timeout=600,
                        check=False,
                    )
                    row = {"where": where, "call": n, "leave": leave, **grade(folder, result)}
                finally:
                    subprocess.run(["umount", "-l", str(folder)], check=False)
                rows.append(row)
                print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    stopped = [r for r in rows if r["rc"] == 2]
    finished = [r for r in rows if r["rc"] == 0]  # the point was never reached, or the write still fitted
    crashed = [r for r in rows if r["rc"] < 0 or r["rc"] not in (0, 2)]
    print(
        f"\n{len(rows)} runs: {len(stopped)} stopped with exit 2 ({sum(r['line_ok'] for r in stopped)} with the "
        f"one-line error naming the free space), {len(finished)} finished (the write fitted), "
        f"{len(crashed)} crashed or other exit status"
    )
    print(
        f"committed blocks with never-written data: {sum(bool(r['bad_data']) for r in rows)}; "
        f"files plain h5py cannot open: {sum(r['plain_h5py'] is False for r in rows)}; "
        f"journals not matching the committed blocks: {sum(r['journal_ok'] is False for r in rows)}"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
