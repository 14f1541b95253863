"""Fixed-size containers that keep the monitor's memory bounded over any session length.

Every container has a cap set at construction and never grows past it: the oldest
(or least recently used) entries are dropped first.  None of them is thread-safe;
`closedloop.monitor.state.MonitorState` guards them with one lock.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from numpy.typing import DTypeLike


class Ring:
    """The newest ``capacity`` rows of a growing table (numpy, circular).

    Parameters
    ----------
    capacity
        Rows kept.
    dtype
        Row dtype (may be structured).
    """

    def __init__(self, capacity: int, dtype: DTypeLike):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = int(capacity)
        self._data = np.zeros(self.capacity, dtype=dtype)
        self._next = 0  # total rows ever appended
        self.dropped = 0

    def __len__(self) -> int:
        return min(self._next, self.capacity)

    @property
    def total(self) -> int:
        """Rows ever appended (kept or dropped)."""
        return self._next

    def append(self, rows: np.ndarray) -> None:
        """Append rows (oldest first); only the newest ``capacity`` are kept."""
        rows = np.asarray(rows, dtype=self._data.dtype).ravel()
        n = rows.size
        if n == 0:
            return
        self.dropped += max(0, len(self) + n - self.capacity)
        if n >= self.capacity:
            rows = rows[-self.capacity :]
            start = (self._next + n - self.capacity) % self.capacity
        else:
            start = self._next % self.capacity
        where = (start + np.arange(rows.size)) % self.capacity
        self._data[where] = rows
        self._next += n

    def oldest(self):
        """The oldest kept row (the ring must not be empty)."""
        return self._data[self._next % self.capacity if self._next > self.capacity else 0]

    def values(self) -> np.ndarray:
        """A copy of the kept rows, oldest first."""
        n = len(self)
        if self._next <= self.capacity:
            return self._data[:n].copy()
        start = self._next % self.capacity
        return np.concatenate([self._data[start:], self._data[:start]])

    def clear(self) -> None:
        self._next = 0

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes)


class UnitColumns:
    """Unit id → column of the per-unit arrays, for at most ``capacity`` units.

    Units are given columns in the order they are first seen; ids past the cap get
    column -1 (left out and counted in ``refused``).
    """

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self._column: dict[int, int] = {}
        self.ids = np.zeros(0, dtype=np.int64)
        self.refused = 0

    def __len__(self) -> int:
        return self.ids.size

    def columns(self, unit_ids: np.ndarray) -> np.ndarray:
        """Columns of ``unit_ids`` (adding new ones while there is room); -1 = refused."""
        unit_ids = np.asarray(unit_ids, dtype=np.int64).ravel()
        out = np.empty(unit_ids.size, dtype=np.int64)
        added = []
        for k, unit in enumerate(unit_ids.tolist()):
            column = self._column.get(unit)
            if column is None:
                if len(self._column) >= self.capacity:
                    self.refused += 1
                    out[k] = -1
                    continue
                column = self._column[unit] = len(self._column)
                added.append(unit)
            out[k] = column
        if added:
            self.ids = np.concatenate([self.ids, np.asarray(added, dtype=np.int64)])
        return out

    def column(self, unit_id: int) -> int:
        """Column of a known unit, else -1 (does not add it)."""
        return self._column.get(int(unit_id), -1)


class StimulusTable:
    """Per stimulus and unit: sum, sum of squares and count of measured rates, and the newest prediction.

    Keeps at most ``capacity`` stimuli; when full, the stimulus updated least recently
    is dropped.  Columns grow with the number of units (`UnitColumns`).
    """

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self._slot: OrderedDict[int, int] = OrderedDict()
        self._free = list(range(self.capacity - 1, -1, -1))
        self.ids = np.full(self.capacity, -1, dtype=np.int64)
        self._alloc(0)
        self.evicted = 0

    def _alloc(self, n_columns: int) -> None:
        self.sum = np.zeros((self.capacity, n_columns))
        self.squares = np.zeros((self.capacity, n_columns))
        self.count = np.zeros((self.capacity, n_columns), dtype=np.int32)
        self.predicted = np.full((self.capacity, n_columns), np.nan)

    def ensure_columns(self, n_columns: int) -> None:
        """Make room for ``n_columns`` units (columns double, so this is rare)."""
        old = self.sum.shape[1]
        if n_columns <= old:
            return
        # Typed as arrays: mypy otherwise joins the float and int arrays' types to `object`
        # on some runs (it depends on the hash seed), and then rejects the assignment.
        keep: tuple[np.ndarray, ...] = (self.sum, self.squares, self.count, self.predicted)
        self._alloc(max(n_columns, 2 * old))
        grown: tuple[np.ndarray, ...] = (self.sum, self.squares, self.count, self.predicted)
        for new, previous in zip(grown, keep):
            new[:, :old] = previous

    def __len__(self) -> int:
        return len(self._slot)

    def slots(self, stimulus_ids: np.ndarray) -> np.ndarray:
        """Slots of these stimuli, taking new ones (evicting the least recently used)."""
        out = np.empty(len(stimulus_ids), dtype=np.int64)
        for k, stimulus in enumerate(np.asarray(stimulus_ids, dtype=np.int64).tolist()):
            slot = self._slot.get(stimulus)
            if slot is None:
                if not self._free:
                    _, freed = self._slot.popitem(last=False)
                    self._free.append(freed)
                    self.evicted += 1
                slot = self._free.pop()
                self.sum[slot] = 0
                self.squares[slot] = 0
                self.count[slot] = 0
                self.predicted[slot] = np.nan
                self.ids[slot] = stimulus
                self._slot[stimulus] = slot
            else:
                self._slot.move_to_end(stimulus)
            out[k] = slot
        return out

    def slot(self, stimulus_id: int) -> int:
        """Slot of a kept stimulus, else -1 (does not add it)."""
        return self._slot.get(int(stimulus_id), -1)

    def lookup(self, stimulus_ids: np.ndarray) -> np.ndarray:
        """Slots of ``stimulus_ids`` without adding or reordering; -1 where not kept."""
        return np.array(
            [self._slot.get(s, -1) for s in np.asarray(stimulus_ids, dtype=np.int64).tolist()], dtype=np.int64
        )

    def used_slots(self) -> np.ndarray:
        """Slots in use, least recently updated first."""
        return np.fromiter(self._slot.values(), dtype=np.int64, count=len(self._slot))

    def measured_mean(self, columns: np.ndarray | slice = slice(None)) -> np.ndarray:
        """(capacity, n_columns) mean measured rate (of ``columns`` only if given); NaN where nothing
        was measured."""
        total, n = self.sum[:, columns], self.count[:, columns]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, total / np.maximum(n, 1), np.nan)

    def add(self, slots: np.ndarray, columns: np.ndarray, rates: np.ndarray) -> None:
        """Add measured rates, one per (slot, column) pair (repeats allowed)."""
        np.add.at(self.sum, (slots, columns), rates)
        with np.errstate(over="ignore"):  # a hostile 1e200 Hz makes its variance NaN, not a warning
            np.add.at(self.squares, (slots, columns), rates**2)
        np.add.at(self.count, (slots, columns), 1)

    def measured_variance(self, columns: np.ndarray | slice = slice(None)) -> np.ndarray:
        """(capacity, n_columns) trial variance (``ddof=1``) of the measured rates (of ``columns``
        only if given); NaN below two trials."""
        total, n = self.sum[:, columns], self.count[:, columns].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            variance = (self.squares[:, columns] - total**2 / n) / (n - 1)
        return np.where(n > 1, np.maximum(variance, 0.0), np.nan)  # rounding can dip below 0

    @property
    def nbytes(self) -> int:
        arrays = (self.sum, self.squares, self.count, self.predicted, self.ids)
        return int(sum(a.nbytes for a in arrays))


class ImageCache:
    """The newest images by stimulus id, at most ``capacity`` of them (LRU)."""

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self._images: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._images)

    def put(self, stimulus_id: int, pixels: np.ndarray) -> None:
        # A copy: decoded arrays are views on the received buffer, which would stay alive.
        source = np.asarray(pixels)
        image = source.astype(np.float32)  # always a copy
        if source.dtype == np.uint8:
            image /= np.float32(255)
        self._images[int(stimulus_id)] = image
        self._images.move_to_end(int(stimulus_id))
        while len(self._images) > self.capacity:
            self._images.popitem(last=False)

    def get(self, stimulus_id: int) -> np.ndarray | None:
        return self._images.get(int(stimulus_id))

    @property
    def nbytes(self) -> int:
        return sum(image.nbytes for image in self._images.values())


class TrialTable:
    """The newest ``capacity`` trials: trial number, stimulus, block and every unit's rate."""

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.meta = Ring(self.capacity, [("trial", np.int64), ("stimulus", np.int64), ("block", np.int64)])
        self.rates = np.full((self.capacity, 0), np.nan, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.meta)

    def ensure_columns(self, n_columns: int) -> None:
        old = self.rates.shape[1]
        if n_columns > old:
            grown = np.full((self.capacity, max(n_columns, 2 * old)), np.nan, dtype=np.float32)
            grown[:, :old] = self.rates
            self.rates = grown

    def append(
        self, trial_ids: np.ndarray, stimulus_ids: np.ndarray, block: int, columns: np.ndarray, rates: np.ndarray
    ) -> None:
        """Rows of one `Responses` message; ``columns`` >= 0 select the kept units."""
        n = len(trial_ids)
        if n == 0:
            return
        rows = np.empty(n, dtype=self.meta._data.dtype)
        rows["trial"], rows["stimulus"], rows["block"] = trial_ids, stimulus_ids, block
        keep = slice(max(0, n - self.capacity), n)
        where = (self.meta.total + np.arange(n))[keep] % self.capacity
        self.meta.append(rows)
        self.rates[where] = np.nan
        valid = columns >= 0
        self.rates[np.ix_(where, columns[valid])] = np.asarray(rates)[keep][:, valid]

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        """(meta rows, rates) of the kept trials, oldest first."""
        n, total = len(self.meta), self.meta.total
        order = (total - n + np.arange(n)) % self.capacity
        return self.meta.values(), self.rates[order]

    @property
    def nbytes(self) -> int:
        return self.meta.nbytes + int(self.rates.nbytes)
