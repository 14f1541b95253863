"""Can this process open a window?  Say why not, and how to fix it, before PsychoPy tries.

Without an X server pyglet fails deep inside its import with a message about
``NoSuchDisplayException`` or a missing ``libGL.so``; the lab sees a traceback instead
of the two commands that fix it.  `display_problem` looks first.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

INSTALL_HINT = "apt-get install -y xvfb libgl1 libglx-mesa0 libgl1-mesa-dri libglu1-mesa"


def xvfb_command(width_px: int = 1920, height_px: int = 1080) -> str:
    """The ``xvfb-run`` prefix that gives a command a virtual screen of this size."""
    return f'xvfb-run -a -s "-screen 0 {width_px}x{height_px}x24 +extension GLX +extension RANDR"'


def no_display_message(reason: str, width_px: int = 1920, height_px: int = 1080) -> str:
    """The full message: what is wrong, how to run headless, how to install what is missing."""
    return (
        f"no display: {reason}. Run under Xvfb ({xvfb_command(width_px, height_px)} COMMAND) or set DISPLAY "
        f"to a running X server (e.g. DISPLAY=:0 on the stimulus computer); install Xvfb and the GL "
        f"libraries with: {INSTALL_HINT}"
    )


def display_problem(width_px: int = 1920, height_px: int = 1080) -> str | None:
    """Why no window can be opened here, or ``None`` when nothing obvious is missing.

    Checked on Linux only (other systems always have a display server): ``DISPLAY``
    must be set and an OpenGL library must be installed.  A display that is set but
    unreachable is only found when the window opens.
    """
    if not sys.platform.startswith("linux"):
        return None
    if not os.environ.get("DISPLAY"):
        return no_display_message("the DISPLAY environment variable is not set", width_px, height_px)
    if ctypes.util.find_library("GL") is None:
        return no_display_message("no OpenGL library (libGL.so.1) is installed", width_px, height_px)
    return None
