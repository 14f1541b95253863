"""Which units a new session on a real rig records, found by listening, and units that show up later.

A new Open Ephys session needs no ``--units``: before its first block the runner listens
for the rig's ``acquisition.discover_units_s`` seconds (a progress line every few
seconds) and fixes the session's units to every unit that spiked meanwhile.  ``--units``
still overrides.  A unit first heard after that is not in the model's unit set (it keeps
the fixed set), but its spikes are stored with every block like all others, and
`LateUnits` reports it once, by its Open Ephys name, so nothing is silently dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator

import numpy as np

from closedloop.acquisition.openephys_units import UnitIds
from closedloop.config.rig import Rig

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 2.0


def unit_names(rig: Rig) -> UnitIds | None:
    """How an Open Ephys rig's unit ids read back as (stream, electrode, sorted id); ``None`` otherwise."""
    acquisition = rig.acquisition
    if acquisition.kind != "openephys":
        return None
    clock = acquisition.clock_stream or "(the stream the photodiode TTL arrives on)"
    return UnitIds({e.name: e.number for e in acquisition.electrodes}, [clock, *(s.name for s in acquisition.streams)])


def unit_metadata(rig: Rig, unit_ids: np.ndarray) -> dict:
    """Session-file metadata: each unit's Open Ephys source (empty for other rigs)."""
    names = unit_names(rig)
    if names is None:
        return {}
    return {
        "unit_sources": {
            "rule": "stream slot x 100000000 + kind x 10000000 + electrode x 1000 + sorted_id; "
            "slot 0 = clock stream; kind 0 Electrode, 1 Stereotrode, 2 Tetrode, 3 mapped",
            "units": names.table(unit_ids),
        }
    }


def describe(rig: Rig, unit_id: int) -> str:
    """``"unit 3001 (Electrode 3, sorted 1, stream X)"`` where the rig can name it, else ``"unit N"``."""
    names = unit_names(rig)
    if names is None:
        return f"unit {unit_id}"
    source = names.describe(unit_id)
    return f"unit {unit_id} ({source.electrode}, sorted {source.sorted_id}, stream {source.stream})"


def listen_for_units(
    pending_units: Callable[[], np.ndarray], seconds: float, progress: Callable[[str], None]
) -> Generator[None, None, np.ndarray]:
    """A generator that yields while listening; its return value is the sorted unit ids heard.

    Parameters
    ----------
    pending_units
        The unit ids received so far (the runner's collector keeps them for the first block).
    seconds
        How long to listen.
    progress
        Gets a line every `PROGRESS_EVERY_S` and at the end.
    """
    started = time.monotonic()
    progress(f"listening {seconds:g} s for the units the recording system sends (acquisition.discover_units_s)")
    shown = started
    while time.monotonic() - started < seconds:
        if time.monotonic() - shown >= PROGRESS_EVERY_S:
            shown = time.monotonic()
            progress(f"{shown - started:.0f} of {seconds:g} s: {np.unique(pending_units()).size} units so far")
        yield
    units = np.unique(pending_units()).astype(np.int64)
    progress(f"found {units.size} units in {seconds:g} s; the session records these")
    return units


class LateUnits:
    """Units spiking that are not among the session's units: each reported once."""

    def __init__(self, rig: Rig, session_units: np.ndarray, report: Callable[[str], None]):
        self.rig = rig
        self.known = {int(u) for u in np.asarray(session_units).tolist()}
        self.late: list[int] = []
        self.report = report

    def check(self, spike_units: np.ndarray) -> list[int]:
        """New late unit ids among ``spike_units`` (reported)."""
        new = sorted(set(np.unique(spike_units).tolist()) - self.known)
        if not new:
            return []
        self.known.update(new)
        self.late.extend(new)
        more = f" and {len(new) - 5} more" if len(new) > 5 else ""
        names = ", ".join(describe(self.rig, u) for u in new[:5]) + more
        self.report(
            f"{len(new)} unit(s) appeared after the session's units were fixed: {names}; their spikes are "
            "stored, the model keeps the session's units (start a new session to include them)"
        )
        return new
