"""The session file (docs/architecture.md, Files): written while a session runs, readable while written.

`SessionWriter` creates and appends (and resumes after a crash), `SessionReader` reads;
the layout and the stimulus/block codes live in `closedloop.data.session_format`.
"""

from __future__ import annotations

from closedloop.data.session_format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    BlockFlag,
    BlockKind,
    StimulusKind,
)
from closedloop.data.session_reader import SessionReader
from closedloop.data.session_writer import SessionWriter

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "BlockFlag",
    "BlockKind",
    "SessionReader",
    "SessionWriter",
    "StimulusKind",
]
