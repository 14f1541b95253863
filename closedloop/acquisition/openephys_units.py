"""Unit ids for Open Ephys spikes: one stable number per (stream, electrode, sorted id).

The GUI names a spike's source by its stream, its electrode (``"Electrode N"``,
``"Stereotrode N"`` or ``"Tetrode N"``, numbered per stream, so two streams both have an
``"Electrode 1"``) and the spike sorter's ``sorted_id`` (0 = unsorted).  Our unit id packs
the three into decimal digits, so it is the same in every run and readable by eye::

    unit id = stream slot × 100 000 000 + kind × 10 000 000 + N × 1000 + sorted_id

- stream slot: 0 for the session's clock stream, else the stream's place (1, 2, …) in the
  rig's ``acquisition.streams`` list;
- kind: 0 Electrode, 1 Stereotrode, 2 Tetrode, 3 a name given a number in the rig's
  ``acquisition.electrodes`` map;
- ``N`` 0..9999, ``sorted_id`` 0..999.

So ``Electrode 3`` / sorted 1 on the clock stream is unit 3001, ``Tetrode 1`` / sorted 2
is 20 001 002, and ``Electrode 3`` / sorted 1 on the first other stream is 100 003 001.
`describe` turns a unit id back into (stream, electrode, sorted id) for the session file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

UNIT_STRIDE = 1000
KIND_STRIDE = 10_000_000
STREAM_STRIDE = 100_000_000
MAX_ELECTRODE = 9999
MAX_STREAMS = 90
PREFIXES = ("Electrode", "Stereotrode", "Tetrode")
MAPPED_KIND = len(PREFIXES)
MAX_CACHED_NAMES = 4096
_NAME = re.compile(r"(Electrode|Stereotrode|Tetrode)\s+(\d+)", re.IGNORECASE)


class UnitIdError(ValueError):
    """A spike whose source cannot be given a unit id (``kind`` names the counter)."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True)
class UnitSource:
    """Where a unit's spikes come from, as the GUI names it."""

    stream: str
    electrode: str
    sorted_id: int


class UnitIds:
    """Unit ids of (stream slot, electrode name, sorted id), and back.

    Parameters
    ----------
    electrodes
        ``{name: number}`` for electrodes not named ``Electrode/Stereotrode/Tetrode N``.
    stream_names
        Names by slot, for `describe` (slot 0: the clock stream, ``""`` when not yet known).
    """

    def __init__(self, electrodes: Mapping[str, int] | None = None, stream_names: Sequence[str] = ("",)):
        self.electrodes = dict(electrodes or {})
        for name, number in self.electrodes.items():
            if not 0 <= number <= MAX_ELECTRODE:
                raise ValueError(f"electrode {name!r}: number {number} must be 0..{MAX_ELECTRODE}")
        self.names_by_number = {number: name for name, number in self.electrodes.items()}
        self.stream_names = list(stream_names)
        self._keys: dict[str, tuple[int, int]] = {}

    def electrode_key(self, name: str) -> tuple[int, int]:
        """(kind, N) of an electrode name; raises `UnitIdError` (``unmapped_electrode``/``out_of_range``)."""
        key = self._keys.get(name)
        if key is None:
            key = self._electrode_key(name)
            if len(self._keys) < MAX_CACHED_NAMES:  # the same few hundred names come again and again
                self._keys[name] = key
        return key

    def _electrode_key(self, name: str) -> tuple[int, int]:
        if name in self.electrodes:
            return MAPPED_KIND, self.electrodes[name]
        match = _NAME.fullmatch(name.strip())
        if match is None:
            raise UnitIdError(
                "unmapped_electrode",
                f"electrode {name[:40]!r} is not 'Electrode N', 'Stereotrode N' "
                "or 'Tetrode N'; give it a number in the rig's acquisition.electrodes",
            )
        number = int(match.group(2))
        if number > MAX_ELECTRODE:
            raise UnitIdError("out_of_range", f"electrode {name[:40]!r}: number above {MAX_ELECTRODE}")
        kind = [p.lower() for p in PREFIXES].index(match.group(1).lower())
        return kind, number

    def unit_id(self, slot: int, electrode: str, sorted_id: int) -> int:
        """The unit id of a spike (see module notes); raises `UnitIdError`."""
        kind, number = self.electrode_key(electrode)
        if not 0 <= sorted_id < UNIT_STRIDE:
            raise UnitIdError("out_of_range", f"sorted_id {sorted_id} is above {UNIT_STRIDE - 1}")
        if not 0 <= slot < MAX_STREAMS:
            raise UnitIdError("out_of_range", f"stream slot {slot} is above {MAX_STREAMS - 1}")
        return slot * STREAM_STRIDE + kind * KIND_STRIDE + number * UNIT_STRIDE + sorted_id

    def describe(self, unit_id: int) -> UnitSource:
        """(stream, electrode name, sorted id) of a unit id made by `unit_id`."""
        slot, rest = divmod(int(unit_id), STREAM_STRIDE)
        kind, rest = divmod(rest, KIND_STRIDE)
        number, sorted_id = divmod(rest, UNIT_STRIDE)
        stream = self.stream_names[slot] if slot < len(self.stream_names) else f"stream slot {slot}"
        if kind < len(PREFIXES):
            electrode = f"{PREFIXES[kind]} {number}"
        else:
            electrode = self.names_by_number.get(number, f"electrode number {number}")
        return UnitSource(stream, electrode, sorted_id)

    def table(self, unit_ids: Sequence[int] | np.ndarray) -> list[dict]:
        """JSON-ready rows ``{unit_id, stream, electrode, sorted_id}`` (stored in session files)."""
        rows = []
        for unit in np.asarray(unit_ids, dtype=np.int64).tolist():
            source = self.describe(unit)
            rows.append(
                {"unit_id": unit, "stream": source.stream, "electrode": source.electrode, "sorted_id": source.sorted_id}
            )
        return rows


def electrode_layout(channels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """How our broadcaster names units: per unit (electrode name, sorted id).

    Channel ``c`` is ``"Electrode {c + 1}"``; units sharing a channel get sorted ids
    1, 2, … in unit order, so on the clock stream the unit id is ``(c + 1) × 1000 + k``.
    """
    channels = np.asarray(channels, dtype=np.int64)
    names = [f"Electrode {c + 1}" for c in channels]
    sorted_ids = np.zeros(len(channels), dtype=np.int64)
    seen: dict[int, int] = {}
    for i, c in enumerate(channels):
        seen[int(c)] = seen.get(int(c), 0) + 1
        sorted_ids[i] = seen[int(c)]
    return names, sorted_ids
