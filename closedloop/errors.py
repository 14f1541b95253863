"""The error types users see.

Every error that comes from bad input outside the program (a file, a message, a
command-line argument) is one of these, and its message says where the problem is
and what to do about it.  The command line prints them without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class ClosedLoopError(Exception):
    """Base class for errors caused by input from outside the program."""


class ConfigError(ClosedLoopError):
    """A rig, protocol or scenario file is invalid.

    Parameters
    ----------
    path
        The file the problem is in.
    line
        1-based line number, or ``None`` when the problem is not tied to one line.
    field
        Dotted path of the offending key (``"display.refresh_hz"``), or ``None``.
    message
        What is wrong and what is allowed.
    """

    def __init__(self, path: str | Path, line: int | None, field: str | None, message: str):
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"{field}: {message}" if field else message
        super().__init__(f"{where}: {what}")


class DataFileError(ClosedLoopError):
    """A data file (session HDF5, pvc-8 .mat, checkpoint, library) is unreadable or wrong.

    Parameters
    ----------
    path
        The file.
    message
        What is wrong with it and, where possible, what to do.
    """

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")
