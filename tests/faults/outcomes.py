"""How one hostile input fared, shared by the fault tests and ``benchmarks/faults.py``.

Each case of a hostile corpus feeds one input to a real component and reports one
`Outcome`: ``refused`` (our error type, one clear line), ``accepted`` (the input was
in fact valid, e.g. a fuzzed value inside its range), ``silently_accepted`` (known
bad but taken), ``crash`` (any other exception, traceback or signal) or ``hang``
(past the case's time bound).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

OUTCOMES = ("refused", "accepted", "silently_accepted", "crash", "hang")


@dataclass(frozen=True)
class Case:
    """One hostile input: a name, its group and a callable that returns an `Outcome`."""

    group: str
    name: str
    run: Callable[[], Outcome]


@dataclass(frozen=True)
class Outcome:
    """What happened to one input, with the message or exception seen."""

    kind: str
    detail: str = ""
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        """True when the input was refused clearly or was valid and accepted."""
        return self.kind in ("refused", "accepted")


def timed(kind: str, detail: str, started: float, bound_s: float) -> Outcome:
    """An outcome that becomes ``hang`` when it took longer than ``bound_s``."""
    seconds = time.monotonic() - started
    if seconds > bound_s:
        return Outcome("hang", f"took {seconds:.1f} s (bound {bound_s:g} s): {detail}", seconds)
    return Outcome(kind, detail, seconds)


def one_line(message: str) -> bool:
    """A clear error is one non-empty line without a traceback."""
    return bool(message.strip()) and "\n" not in message.strip() and "Traceback" not in message
