"""Write a session file while the session runs (docs/architecture.md, Files).

The file is created with every dataset in place and then switched to HDF5 SWMR mode,
so the monitor and other processes can read it while blocks are appended.  A block is
the unit of durability: `SessionWriter.append_block` writes the block's trials,
responses, spikes and sync events, flushes, then marks the block committed and flushes
again.  A writer killed at any moment leaves every committed block readable.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, UTC
from pathlib import Path
from typing import cast

import h5py
import numpy as np
from numpy.typing import ArrayLike

import closedloop
from closedloop.data import session_lock
from closedloop.data.responses import (
    check_window,
    counts_to_rates,
    window_counts_from_spike_times,
)
from closedloop.data.session_format import (
    COLUMNS,
    FORMAT_NAME,
    FORMAT_VERSION,
    LIBVER,
    NO_CHUNK_CACHE,
    BlockFlag,
    BlockKind,
    StimulusKind,
    committed_lengths,
    create_layout,
    parse_enum,
)
from closedloop.data.session_recovery import open_for_resume
from closedloop.data.session_space import StorageError, describe_error, storage_error
from closedloop.errors import DataFileError

logger = logging.getLogger(__name__)

_PROVENANCE = tuple(name for name in COLUMNS["stimuli"] if name not in ("id", "kind", "committed"))


class SessionWriter:
    """Create a session file and append stimuli and blocks to it.

    Parameters
    ----------
    path
        The ``.h5`` file to create.
    session_id
        Name of the session, stored as an attribute.
    unit_ids, channels
        (n_units,) unit identifiers (int64) and their electrode channels.
    stimulus_shape
        (H, W) of every stored stimulus.
    response_window_s
        (start, stop) after onset of the responses stored per trial.
    rig_yaml, protocol_yaml
        The configuration text the session ran with, stored verbatim.
    seeds, metadata
        JSON-serialisable dicts (seeds used, anything else worth keeping).
    overwrite
        Replace an existing file instead of refusing.

    Use `SessionWriter.resume` to continue a session that was closed or killed.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        session_id: str,
        unit_ids: Sequence[int] | np.ndarray,
        channels: Sequence[int] | np.ndarray,
        stimulus_shape: tuple[int, int],
        response_window_s: tuple[float, float],
        rig_yaml: str = "",
        protocol_yaml: str = "",
        seeds: dict | None = None,
        metadata: dict | None = None,
        overwrite: bool = False,
    ) -> None:
        path = Path(path)
        unit_ids = np.asarray(unit_ids, dtype=np.int64).ravel()
        channels = np.asarray(channels, dtype=np.int64).ravel()
        if unit_ids.shape != channels.shape:
            raise ValueError(f"{unit_ids.size} unit ids but {channels.size} channels")
        if np.unique(unit_ids).size != unit_ids.size:
            raise ValueError("unit ids must be unique")
        height, width = (int(v) for v in stimulus_shape)
        if height < 1 or width < 1:
            raise ValueError(f"stimulus_shape must be positive (H, W), got {stimulus_shape}")
        window = check_window(response_window_s)
        try:
            seeds_json = json.dumps(seeds or {}, sort_keys=True)
            metadata_json = json.dumps(metadata or {}, sort_keys=True)
        except TypeError as error:
            raise ValueError(f"seeds and metadata must be JSON-serialisable: {error}") from None
        if path.exists() and not overwrite:
            raise DataFileError(
                path,
                "already exists; pass overwrite=True to replace it, or use "
                "SessionWriter.resume to continue that session",
            )
        lock = session_lock.acquire(path)
        try:
            file = h5py.File(path, "w", libver=LIBVER, rdcc_nbytes=NO_CHUNK_CACHE)
        except OSError as error:
            session_lock.release(path, lock)
            raise storage_error(path, "the new session file", error) from None
        try:
            attrs = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "session_id": str(session_id),
                "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                "closedloop_version": closedloop.__version__,
                "seeds_json": seeds_json,
                "metadata_json": metadata_json,
                "rig_yaml": str(rig_yaml),
                "protocol_yaml": str(protocol_yaml),
                "stimulus_shape": np.array([height, width], dtype=np.int64),
                "response_window_s": np.array(window, dtype=np.float64),
            }
            create_layout(file, attrs, unit_ids, channels, (height, width))
            file.flush()
            file.swmr_mode = True
        except BaseException as error:
            _close_quietly(file)
            path.unlink(missing_ok=True)  # an empty layout that may be half written: nothing to keep
            session_lock.release(path, lock)
            if isinstance(error, Exception):
                raise storage_error(path, "the new session file's layout", error) from None
            raise
        self._attach(path, file, lock)

    @classmethod
    def resume(cls, path: str | Path) -> SessionWriter:
        """Reopen a session that was closed, or whose writer was killed, to keep appending.

        Anything after the last committed block (a block cut short by a crash) is
        dropped; every committed block, and every committed stimulus, is kept.

        After a kill HDF5 refuses to open the file for writing (its superblock still says
        "open for SWMR write"; HDF5's ``h5clear`` tool would clear that).  h5py cannot clear
        those flags, so the committed part is copied into a fresh file, which then
        atomically replaces the old one (see `closedloop.data.session_recovery`).

        Raises
        ------
        DataFileError
            If the file is missing, not a session, or another process is writing it.
        """
        path = Path(path)
        if not path.exists():
            raise DataFileError(path, "does not exist; nothing to resume")
        lock = session_lock.acquire(path)
        try:
            file = open_for_resume(path)
        except BaseException:
            session_lock.release(path, lock)
            raise
        writer = cls.__new__(cls)
        writer._attach(path, file, lock)
        return writer

    def _attach(self, path: Path, file: h5py.File, lock: int | None) -> None:
        self._path, self._file, self._lock = path, file, lock
        self._failure: StorageError | None = None
        self._unit_ids = file["units/id"][()]
        self._stimulus_shape = cast(tuple[int, int], tuple(int(v) for v in file.attrs["stimulus_shape"]))
        self._window = cast(tuple[float, float], tuple(float(v) for v in file.attrs["response_window_s"]))
        lengths = committed_lengths(file)
        self._n_blocks, self._n_trials = lengths["blocks"], lengths["trials"]
        self._n_spikes, self._n_sync = lengths["spikes"], lengths["sync"]
        self._n_stimuli = lengths["stimuli"]
        shown = file["trials/stimulus_id"][: self._n_trials]
        self._times_shown = np.bincount(shown, minlength=self._n_stimuli).astype(np.int64)

    # ----------------------------------------------------------------- properties
    @property
    def path(self) -> Path:
        return self._path

    @property
    def n_blocks(self) -> int:
        return self._n_blocks

    @property
    def n_stimuli(self) -> int:
        return self._n_stimuli

    @property
    def n_trials(self) -> int:
        return self._n_trials

    @property
    def unit_ids(self) -> np.ndarray:
        return self._unit_ids.copy()

    @property
    def response_window_s(self) -> tuple[float, float]:
        return self._window

    @property
    def failure(self) -> StorageError | None:
        """The write error that stopped this writer, or None while every write succeeded."""
        return self._failure

    # -------------------------------------------------------------------- writing
    def add_stimuli(
        self,
        pixels: np.ndarray,
        kind: StimulusKind | str | int,
        **provenance: float | int | np.ndarray | None,
    ) -> np.ndarray:
        """Store stimuli and return their ids (consecutive, from 0 in a new session).

        Parameters
        ----------
        pixels
            (n, H, W) or (H, W); float in [0, 1] (grey 0.5) or uint8 (scaled by 1/255).
        kind
            ``natural``, ``grating``, ``synthesized`` or ``other`` (or a `StimulusKind`).
        **provenance
            Any of ``source_index``, ``orientation_deg``, ``phase_deg``, ``sf_cpd``,
            ``radius_px``, ``annulus`` (0 disc, 1 annulus), ``unit_id``, ``target_hz``,
            ``model_version``, ``seed``, ``achieved_hz``, ``spread_hz`` (the ensemble's std of
            the prediction ``achieved_hz``), ``start_stimulus_id`` (the stimulus a synthesized
            image's optimisation started from; -1: the blank screen): a scalar for all stimuli
            or one value each.
            Omitted fields are stored as NaN (floats) or -1 (integers).

        Returns
        -------
        numpy.ndarray
            (n,) int64 stimulus ids.
        """
        self._check_open()
        kind = parse_enum(StimulusKind, kind, "stimulus kind")
        pixels = _as_stimulus_pixels(pixels, self._stimulus_shape)
        n = pixels.shape[0]
        unknown = sorted(set(provenance) - set(_PROVENANCE))
        if unknown:
            raise TypeError(f"unknown stimulus provenance {unknown}; known: {list(_PROVENANCE)}")
        start = self._n_stimuli
        ids = np.arange(start, start + n, dtype=np.int64)
        columns = {"id": ids, "kind": np.full(n, int(kind))}
        for name in _PROVENANCE:
            dtype, fill = COLUMNS["stimuli"][name]
            value = provenance.get(name)
            columns[name] = _column(name, fill if value is None else value, n, dtype)
        rows = {f"stimuli/{name}": values.astype(COLUMNS["stimuli"][name][0]) for name, values in columns.items()}
        rows["stimuli/pixels"] = pixels
        rows["stimuli/committed"] = np.zeros(n, dtype=np.uint8)
        what = f"stimuli {start}-{start + n - 1}"
        self._durably(
            what, lambda: self._write_and_commit(rows, {"stimuli": start}, "stimuli/committed", slice(start, start + n))
        )
        self._n_stimuli += n
        self._times_shown = np.concatenate([self._times_shown, np.zeros(n, dtype=np.int64)])
        return ids

    def append_block(
        self,
        kind: BlockKind | str | int,
        *,
        stimulus_ids: np.ndarray,
        onsets_s: np.ndarray,
        flip_s: np.ndarray | None = None,
        n_frames: np.ndarray | None = None,
        dropped_frames: np.ndarray | None = None,
        repeats: np.ndarray | None = None,
        spike_unit_ids: ArrayLike = (),
        spike_times_s: ArrayLike = (),
        sync_times_s: ArrayLike = (),
        sync_lines: ArrayLike | int = (),
        sync_states: ArrayLike = (),
        responses_hz: np.ndarray | None = None,
        flag: BlockFlag | str | int = BlockFlag.NONE,
    ) -> int:
        """Write one block and make it durable; return its index.

        Parameters
        ----------
        kind
            ``natural``, ``grating``, ``synthesized``, ``mixed`` or ``other``.
        stimulus_ids, onsets_s
            (n_trials,) the stimulus of each trial (ids from `add_stimuli`) and its onset
            on the acquisition clock.
        flip_s, n_frames, dropped_frames
            (n_trials,) presenter flip time (presenter clock), frames shown and frames
            dropped; NaN / -1 / 0 when not given.
        repeats
            (n_trials,) repeat number of each trial; by default how often the stimulus
            was shown earlier in the session.
        spike_unit_ids, spike_times_s
            (n_spikes,) spikes received for this block (acquisition clock).
        sync_times_s, sync_lines, sync_states
            (n_events,) photodiode/TTL events.
        responses_hz
            (n_trials, n_units) rates in the session's response window; by default
            counted from this block's spikes.
        flag
            A `BlockFlag` (e.g. ``photodiode_mismatch``); the block is flagged unless NONE.
        """
        self._check_open()
        kind = parse_enum(BlockKind, kind, "block kind")
        flag = parse_enum(BlockFlag, flag, "block flag")
        stimulus_ids = np.asarray(stimulus_ids, dtype=np.int64).ravel()
        n = stimulus_ids.size
        if n and (stimulus_ids.min() < 0 or stimulus_ids.max() >= self._n_stimuli):
            raise ValueError(
                f"stimulus ids must be in 0..{self._n_stimuli - 1} (add_stimuli first), "
                f"got {stimulus_ids.min()}..{stimulus_ids.max()}"
            )
        onsets = _column("onsets_s", onsets_s, n, np.float64)
        if not np.all(np.isfinite(onsets)):
            raise ValueError("onsets_s must be finite")
        spike_units = np.asarray(spike_unit_ids, dtype=np.int64).ravel()
        spike_times = _column("spike_times_s", spike_times_s, spike_units.size, np.float64)
        sync_times = np.asarray(sync_times_s, dtype=np.float64).ravel()
        sync_line = _column("sync_lines", sync_lines, sync_times.size, np.int32)
        sync_state = _column("sync_states", sync_states, sync_times.size, np.int8)
        # NaN times and unit -1 are what unwritten rows read back as: never store them as data
        if not (np.all(np.isfinite(spike_times)) and np.all(np.isfinite(sync_times))):
            raise ValueError("spike_times_s and sync_times_s must be finite")
        if spike_units.size and spike_units.min() < 0:
            raise ValueError(f"spike unit ids must be 0 or more, got {spike_units.min()}")
        if repeats is None:
            # how often each stimulus was shown before, counting earlier trials of this block
            order = np.argsort(stimulus_ids, kind="stable")
            sorted_ids = stimulus_ids[order]
            first = np.searchsorted(sorted_ids, sorted_ids, side="left")
            repeats = np.empty(n, dtype=np.int64)
            repeats[order] = np.arange(n) - first
            repeats += self._times_shown[stimulus_ids]
        if responses_hz is None:
            counts = window_counts_from_spike_times(spike_units, spike_times, onsets, self._window, self._unit_ids)
            responses_hz = counts_to_rates(counts, self._window)
        responses_hz = np.asarray(responses_hz, dtype=np.float32)
        if responses_hz.shape != (n, self._unit_ids.size):
            raise ValueError(
                f"responses_hz must be (n_trials={n}, n_units={self._unit_ids.size}), got {responses_hz.shape}"
            )
        if flag == BlockFlag.NONE and not np.all(np.isfinite(responses_hz)):
            raise ValueError("responses_hz of an unflagged block must be finite (flag a block whose rates are unknown)")
        index = self._n_blocks
        trials = {
            "stimulus_id": stimulus_ids,
            "block": np.full(n, index),
            "repeat": _column("repeats", repeats, n, np.int64),
            "onset_s": onsets,
            "flip_s": _column("flip_s", np.nan if flip_s is None else flip_s, n, np.float64),
            "n_frames": _column("n_frames", -1 if n_frames is None else n_frames, n, np.int32),
            "dropped_frames": _column("dropped_frames", 0 if dropped_frames is None else dropped_frames, n, np.int32),
        }
        rows = {f"trials/{name}": values.astype(COLUMNS["trials"][name][0]) for name, values in trials.items()}
        rows.update(
            {
                "responses": responses_hz,
                "spikes/unit_id": spike_units,
                "spikes/time_s": spike_times,
                "sync/time_s": sync_times,
                "sync/line": sync_line,
                "sync/state": sync_state,
            }
        )
        block = {
            "index": index,
            "kind": int(kind),
            "trial_start": self._n_trials,
            "trial_stop": self._n_trials + n,
            "spike_start": self._n_spikes,
            "spike_stop": self._n_spikes + spike_units.size,
            "sync_start": self._n_sync,
            "sync_stop": self._n_sync + sync_times.size,
            "flagged": int(flag != BlockFlag.NONE),
            "flag_code": int(flag),
            "committed": 0,
        }
        rows.update(
            {f"blocks/{name}": np.array([value], dtype=COLUMNS["blocks"][name][0]) for name, value in block.items()}
        )
        starts = {
            "trials": self._n_trials,
            "responses": self._n_trials,
            "spikes": self._n_spikes,
            "sync": self._n_sync,
            "blocks": index,
        }
        self._durably(
            f"block {index}", lambda: self._write_and_commit(rows, starts, "blocks/committed", slice(index, index + 1))
        )
        self._n_blocks += 1
        self._n_trials += n
        self._n_spikes += spike_units.size
        self._n_sync += sync_times.size
        np.add.at(self._times_shown, stimulus_ids, 1)
        return index

    def close(self) -> None:
        """Flush and close the file and release the writer lock (safe to call twice).

        After a failed write the file is closed without raising: HDF5 cannot flush
        what it failed to write, and the committed blocks are already on disk.
        """
        if self._file is None:
            return
        try:
            if self._failure is None:
                try:
                    self._file.close()
                except Exception as error:  # noqa: BLE001 - h5py reports a failed write as OSError or RuntimeError
                    _close_quietly(self._file)
                    raise storage_error(
                        self._path,
                        "the session file's last metadata on closing",
                        error,
                        f"its {self._n_blocks} committed block(s) were already on disk",
                    ) from None
            else:
                _close_quietly(self._file)
        finally:
            self._file = None
            session_lock.release(self._path, self._lock)

    def __enter__(self) -> SessionWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._file is None:
            raise ValueError(f"session writer for {self._path} is closed")

    # --------------------------------------------------------------- durability
    def _durably(self, what: str, write: Callable[[], None]) -> None:
        """Run ``write``; on any failure stop this writer for good and raise a `StorageError`."""
        try:
            write()
        except Exception as error:  # noqa: BLE001 - h5py reports I/O errors as OSError or RuntimeError
            committed = self._n_blocks
            safe = {0: "no block was committed yet", 1: "block 0 is committed and readable"}.get(
                committed, f"blocks 0-{committed - 1} are committed and readable"
            )
            self._failure = storage_error(self._path, what, error, f"nothing of {what} was committed; {safe}")
            raise self._failure from None

    def _write_and_commit(self, rows: dict[str, np.ndarray], starts: dict[str, int], flag: str, flagged: slice) -> None:
        """Write ``rows`` after the committed part, flush, read them back, then set the commit flag.

        Rows go right after the committed rows of their table (``starts``), so nothing
        left by an earlier failed attempt can end up inside a committed range.  With the
        chunk cache off (`NO_CHUNK_CACHE`) the read-back reads the file, not a cache: a
        block whose data did not reach the file is never committed.
        """
        f = self._file
        for name, values in rows.items():
            start = starts[name.split("/")[0]]
            dataset = f[name]
            dataset.resize(start + values.shape[0], axis=0)
            dataset[start:] = values
        f.flush()  # everything the commit flag vouches for is on disk ...
        for name, values in rows.items():
            start = starts[name.split("/")[0]]
            stored = f[name][start : start + values.shape[0]]
            if not np.array_equal(stored, values, equal_nan=values.dtype.kind == "f"):
                raise OSError(errno.EIO, f"{name} read back differently from what was written")
        f[flag][flagged] = 1
        f.flush()  # ... before the flag says so
        if not np.all(f[flag][flagged] == 1):
            raise OSError(errno.EIO, f"{flag} read back differently from what was written")


def _close_quietly(file: h5py.File) -> None:
    """Close a file whose last write failed; HDF5 may refuse to flush it, which changes nothing now."""
    try:
        file.close()
    except Exception as error:  # noqa: BLE001 - the write error was already reported
        logger.warning("closing %s after a failed write: %s", file.filename, describe_error(error))


def _column(name: str, value, n: int, dtype) -> np.ndarray:
    """``value`` (scalar or (n,)) as an (n,) array of ``dtype``."""
    array = np.asarray(value, dtype=dtype)
    if array.ndim == 0:
        return np.full(n, array, dtype=dtype)
    array = array.ravel()
    if array.size != n:
        raise ValueError(f"{name} has {array.size} values, expected {n}")
    return array


def _as_stimulus_pixels(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    if pixels.ndim != 3 or tuple(pixels.shape[1:]) != shape:
        raise ValueError(f"stimulus pixels must be (n, {shape[0]}, {shape[1]}), got {pixels.shape}")
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / np.float32(255)
    pixels = pixels.astype(np.float32)
    if pixels.size and not (np.all(np.isfinite(pixels)) and pixels.min() >= 0 and pixels.max() <= 1):
        raise ValueError("stimulus pixels must be finite and in [0, 1] (grey is 0.5)")
    return pixels
