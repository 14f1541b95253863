"""Run the `closedloop` command with the disk made full at one chosen write.

Used by ``test_disk_full.py`` as a child process, so a crash (a segfault) shows as the
child's exit status::

    python -m tests.faults.disk_filler MODE DIR WHERE N -- ARGS...

WHERE is ``block`` (`SessionWriter.append_block`), ``stimuli`` (`SessionWriter.add_stimuli`)
or ``journal`` (`Journal.append`); the disk becomes full just before the N-th call
(0-based).  For the journal only calls whose line needs a new page of the file count:
a full filesystem still takes a line that fits in the journal's last allocated page.  MODE ``fill`` writes a
filler file into DIR until the filesystem (a small
tmpfs) is really full (but for ``$DISK_FILLER_LEAVE`` bytes, if set); MODE ``inject`` (for a test not running
as root, which cannot
mount one) makes HDF5's next flush, or the journal's write, fail with ENOSPC instead.
"""

from __future__ import annotations

import errno
import os
import sys
import types
from pathlib import Path

import h5py

from closedloop.cli import main
from closedloop.data.session_writer import SessionWriter
from closedloop.runner import journal

FILLER = "filler.bin"
PAGE = 4096  # tmpfs (and ext4) allocate whole pages


def fill(folder: Path, leave: int = 0) -> None:
    """Write zeros into ``folder/filler.bin`` until the filesystem has no room left but ``leave`` bytes."""
    block = bytes(64 * 1024)
    with open(folder / FILLER, "wb", buffering=0) as file:
        for size in (len(block), 4096, 512, 1):
            try:
                while True:
                    file.write(block[:size])
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
        if leave:
            file.truncate(max(0, file.tell() - leave))


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def inject(where: str) -> None:
    """Make the next write of ``where`` fail as a full disk would."""
    if where == "journal":
        journal.os = types.SimpleNamespace(**{**vars(os), "write": _enospc})
    else:
        h5py.File.flush = lambda self: _enospc()


def _needs_new_page(path: Path, record) -> bool:
    size = path.stat().st_size if path.exists() else 0
    line = len(record.to_json().encode()) + 1
    return -(-(size + line) // PAGE) > -(-size // PAGE)


def arm(mode: str, folder: Path, where: str, n: int) -> None:
    owner, name = {
        "block": (SessionWriter, "append_block"),
        "stimuli": (SessionWriter, "add_stimuli"),
        "journal": (journal.Journal, "append"),
    }[where]
    original = getattr(owner, name)
    calls = [0]

    def wrapped(self, *args, **kwargs):
        counts = where != "journal" or _needs_new_page(self.path, args[0])
        if counts and calls[0] == n:
            fill(folder, int(os.environ.get("DISK_FILLER_LEAVE", "0"))) if mode == "fill" else inject(where)
        calls[0] += counts
        return original(self, *args, **kwargs)

    setattr(owner, name, wrapped)


if __name__ == "__main__":
    mode, folder, where, n, dashes, *args = sys.argv[1:]
    assert dashes == "--" and mode in ("fill", "inject")
    arm(mode, Path(folder), where, int(n))
    sys.exit(main(args))
