"""Writing an output file under a temporary name, so a crash never leaves a half file.

Every output written this way (model checkpoints, synthesized-image libraries, NWB
files) gets the permissions a plainly created file would have: 0666 less the umask
(0644 with the usual umask 022), readable by the rest of the lab.  ``tempfile.mkstemp``
alone would leave it 0600.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting, then restore at once
    os.umask(mask)
    return mask


def write_via_temporary(path: str | Path, write: Callable[[Path], None], *, suffix: str = ".tmp") -> Path:
    """Call ``write(temporary)`` for a hidden file beside ``path``, then rename it to ``path``.

    The file is synced to disk before the rename and given the umask's permissions;
    on any error (or interruption) the temporary file is removed and ``path`` is untouched.

    Raises
    ------
    OSError
        The folder is not writable, or writing or renaming failed; whatever ``write`` raises.
    """
    path = Path(path)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
