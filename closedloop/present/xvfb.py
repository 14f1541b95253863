"""A virtual X display for the PsychoPy presenter on a machine without one (CI, servers).

`virtual_display` starts ``Xvfb`` on a free display number (``-displayfd`` lets the
server pick it and tell us), points ``DISPLAY`` at it for the duration, and stops it
afterwards.  ``scripts/system-deps.sh`` installs Xvfb and the GL libraries.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from closedloop.errors import ClosedLoopError
from closedloop.present.display import INSTALL_HINT

_START_TIMEOUT_S = 10.0


@contextmanager
def virtual_display(width_px: int = 1920, height_px: int = 1080) -> Iterator[str]:
    """Run the body with ``DISPLAY`` set to a fresh Xvfb screen; yields the display name.

    Raises
    ------
    ClosedLoopError
        Xvfb is not installed or did not start in time.
    """
    executable = shutil.which("Xvfb")
    if executable is None:
        raise ClosedLoopError(f"Xvfb is not installed; install it and the GL libraries with: {INSTALL_HINT}")
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        [
            executable,
            "-displayfd",
            str(write_end),
            "-screen",
            "0",
            f"{width_px}x{height_px}x24",
            "+extension",
            "GLX",
            "+extension",
            "RANDR",
            "-nolisten",
            "tcp",
        ],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    previous = os.environ.get("DISPLAY")
    try:
        with os.fdopen(read_end) as pipe:
            number = _read_display_number(pipe, server)
        display = f":{number}"
        os.environ["DISPLAY"] = display
        yield display
    finally:
        if previous is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = previous
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()


def _read_display_number(pipe, server: subprocess.Popen) -> int:
    import select

    ready, _, _ = select.select([pipe], [], [], _START_TIMEOUT_S)
    line = pipe.readline().strip() if ready else ""
    if not line.isdigit():
        server.kill()
        raise ClosedLoopError(
            f"Xvfb did not start within {_START_TIMEOUT_S:g} s (exit status {server.poll()}); "
            f"check the install with: {INSTALL_HINT}"
        )
    return int(line)
