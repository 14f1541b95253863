"""Read a session file, also while another process is still writing it (HDF5 SWMR).

Only the committed part is shown (see `closedloop.data.session_format`): a block that
was being written when the reader looked, or when the writer was killed, is invisible
until it is committed.  Call `SessionReader.refresh` to see blocks appended since.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import h5py
import numpy as np

from closedloop.data.dataset import GratingResponses, Preprocessing, ResponseDataset
from closedloop.data.preprocess import preprocess
from closedloop.data.responses import (
    check_window,
    counts_to_rates,
    group_by_stimulus,
    window_counts_from_spike_times,
)
from closedloop.data.session_checks import check_committed
from closedloop.data.session_format import (
    COLUMNS,
    StimulusKind,
    check_not_truncated,
    committed_lengths,
    is_open_elsewhere,
    open_error,
    present_columns,
    table_datasets,
    table_dtype,
    validate,
)
from closedloop.errors import DataFileError

_DAMAGE = (OSError, KeyError, ValueError, RuntimeError, TypeError)
# A unit outside the unit table can be real (one that first spiked after the unit set was
# fixed); a negative id is the fill value of a row that was never written.
_BAD_SPIKE = "has a time that is not a number or a negative unit id"
_BAD_SYNC = "has a time that is not a number"
# Stored pixels are in [0, 1]; rounding may leave them a hair outside, damage much further.
_PIXEL_SLACK = 1e-4


class SessionReader:
    """Read-only view of a session file.

    Parameters
    ----------
    path
        The session ``.h5`` file.

    Raises
    ------
    DataFileError
        If the file is missing, not HDF5, truncated or corrupt, not a closedloop session,
        of another format version, or lacks a dataset.
    """

    def __init__(self, path: str | Path, *, check_values: bool = True) -> None:
        self._path = Path(path)
        # Off only for the integrity check and repair, which look for damage themselves.
        self._check_values = check_values
        self._open()

    def _open(self) -> None:
        if not self._path.is_file():
            raise DataFileError(self._path, "does not exist (or is not a file)")
        self._identity = _identity(self._path)
        # locking=False: a reader (e.g. the monitor) must never stop a crashed writer from
        # resuming; the commit flags, not the lock, keep what a reader sees consistent.
        try:
            self._file = h5py.File(self._path, "r", locking=False)
            self._mode = "plain"
        except OSError as error:
            if "locking flag values don't match" in str(error):
                # A writer in this very process has the file open (components running as
                # threads): HDF5 hands out the writer's own handle, which is always current.
                self._file = self._open_h5()  # the same (default) locking as the writer
                self._mode = "shared"
            elif is_open_elsewhere(error):
                # A writer in another process holds it (or was killed holding it).
                check_not_truncated(self._path)
                self._file = self._open_h5(swmr=True, locking=False)
                self._mode = "swmr"
            else:
                raise open_error(self._path, error) from None
        try:
            validate(self._file, self._path)
            attrs = self._file.attrs
            self._seeds = json.loads(attrs["seeds_json"])
            self._metadata = json.loads(attrs["metadata_json"])
            self._window = cast(tuple[float, float], tuple(float(v) for v in attrs["response_window_s"]))
            self._unit_ids = self._file["units/id"][()].astype(np.int64)
            self._channels = self._file["units/channel"][()]
            self._lengths = committed_lengths(self._file)
            check_committed(self._file, self._lengths, self._path)
        except DataFileError:
            self._file.close()
            raise
        except (*_DAMAGE, json.JSONDecodeError) as error:
            self._file.close()
            raise DataFileError(self._path, f"session file is damaged ({error})") from None

    def _open_h5(self, **options: bool) -> h5py.File:
        try:
            return h5py.File(self._path, "r", **options)
        except OSError as error:
            raise open_error(self._path, error) from None

    # ------------------------------------------------------------------ lifecycle
    def refresh(self) -> None:
        """See what the writer has committed since opening (or the last refresh).

        If the file was replaced (a resumed session after a crash) or changed while this
        reader had it open without SWMR (a closed session that was resumed), it is
        reopened.
        """
        identity = _identity(self._path)
        replaced = identity[0] != self._identity[0]
        if replaced or (self._mode == "plain" and identity != self._identity):
            self._file.close()
            self._open()
            return
        try:
            for attempt in range(2):
                if self._mode == "swmr":
                    for _, dataset in table_datasets(self._file):
                        dataset.refresh()
                lengths = committed_lengths(self._file)
                try:
                    check_committed(self._file, lengths, self._path, since=self._lengths)
                    break
                except DataFileError:
                    # A live writer may commit between two datasets' refreshes: look once more.
                    if attempt or self._mode != "swmr":
                        raise
            self._lengths = lengths
        except _DAMAGE as error:
            raise DataFileError(self._path, f"cannot refresh the session ({error})") from None

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SessionReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- attributes
    def _attr(self, name: str) -> str:
        value = self._file.attrs[name]
        return value.decode() if isinstance(value, bytes) else str(value)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def session_id(self) -> str:
        return self._attr("session_id")

    @property
    def created_utc(self) -> str:
        return self._attr("created_utc")

    @property
    def closedloop_version(self) -> str:
        return self._attr("closedloop_version")

    @property
    def rig_yaml(self) -> str:
        return self._attr("rig_yaml")

    @property
    def protocol_yaml(self) -> str:
        return self._attr("protocol_yaml")

    @property
    def seeds(self) -> dict:
        return dict(self._seeds)

    @property
    def metadata(self) -> dict:
        return dict(self._metadata)

    @property
    def stimulus_shape(self) -> tuple[int, int]:
        height, width = self._file.attrs["stimulus_shape"]
        return int(height), int(width)

    @property
    def response_window_s(self) -> tuple[float, float]:
        return self._window

    @property
    def unit_ids(self) -> np.ndarray:
        return self._unit_ids.copy()

    @property
    def channels(self) -> np.ndarray:
        return self._channels.copy()

    @property
    def n_blocks(self) -> int:
        return self._lengths["blocks"]

    @property
    def n_trials(self) -> int:
        return self._lengths["trials"]

    @property
    def n_stimuli(self) -> int:
        return self._lengths["stimuli"]

    # --------------------------------------------------------------------- tables
    def _refuse(self, what: str, bad: np.ndarray, problem: str, offset: int = 0) -> None:
        if self._check_values:
            _refuse(self._path, what, bad, problem, offset)

    def _table(self, table: str) -> np.ndarray:
        n = self._lengths[table]
        names = [name for name in COLUMNS[table] if name != "committed"]
        stored = set(present_columns(self._file, table))
        out = np.empty(n, dtype=np.dtype([(name, table_dtype(table)[name]) for name in names]))
        try:
            for name in names:
                # a column added after this file was written reads as its fill value
                out[name] = self._file[table][name][:n] if name in stored else COLUMNS[table][name][1]
        except _DAMAGE as error:
            raise DataFileError(self._path, f"cannot read {table}/{name} ({error})") from None
        return out

    @property
    def stimuli(self) -> np.ndarray:
        """Structured array, one row per stimulus: id, kind and provenance (no pixels)."""
        return self._table("stimuli")

    @property
    def stimulus_pixels(self) -> np.ndarray:
        """(n_stimuli, H, W) float32 pixels of every committed stimulus."""
        return self.read_pixels(np.arange(self.n_stimuli))

    def read_pixels(self, stimulus_ids: np.ndarray) -> np.ndarray:
        """(len(ids), H, W) float32 pixels of the given stimulus ids, in that order."""
        ids = np.asarray(stimulus_ids, dtype=np.int64).ravel()
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_stimuli):
            raise ValueError(f"stimulus ids must be in 0..{self.n_stimuli - 1}")
        unique, where = np.unique(ids, return_inverse=True)
        try:
            pixels = self._file["stimuli/pixels"][unique] if unique.size else None
        except _DAMAGE as error:
            raise DataFileError(self._path, f"cannot read stimuli/pixels ({error})") from None
        if pixels is None:
            return np.empty((0, *self.stimulus_shape), dtype=np.float32)
        if self._check_values:
            _check_pixels(self._path, unique, pixels)
        return pixels[where]

    @property
    def trials(self) -> np.ndarray:
        """Structured array: stimulus_id, block, repeat, onset_s, flip_s, n_frames, dropped_frames."""
        return self._table("trials")

    @property
    def spikes(self) -> np.ndarray:
        """Structured array: unit_id, time_s."""
        spikes = self._table("spikes")
        self._refuse("spike", ~np.isfinite(spikes["time_s"]) | (spikes["unit_id"] < 0), _BAD_SPIKE)
        return spikes

    def check_events(self, chunk: int = 1 << 20) -> None:
        """Refuse (`DataFileError`) committed spikes or sync events that are not valid, reading in chunks.

        What `spikes` and `sync` check when they load everything, with bounded memory: a
        replay checks the whole recording before anything starts.
        """
        columns = (
            ("spikes", "spike", ("time_s", "unit_id"), _BAD_SPIKE),
            ("sync", "sync event", ("time_s",), _BAD_SYNC),
        )
        for table, what, names, problem in columns:
            for start in range(0, self._lengths[table], chunk):
                stop = min(start + chunk, self._lengths[table])
                try:
                    values = {name: self._file[table][name][start:stop] for name in names}
                except _DAMAGE as error:
                    raise DataFileError(self._path, f"cannot read {table} ({error})") from None
                bad = ~np.isfinite(values["time_s"])
                if "unit_id" in values:
                    bad |= values["unit_id"] < 0
                self._refuse(what, bad, problem, offset=start)

    @property
    def sync(self) -> np.ndarray:
        """Structured array: time_s, line, state."""
        sync = self._table("sync")
        self._refuse("sync event", ~np.isfinite(sync["time_s"]), _BAD_SYNC)
        return sync

    @property
    def blocks(self) -> np.ndarray:
        """Structured array: index, kind, trial/spike/sync start and stop, flagged, flag_code."""
        return self._table("blocks")

    @property
    def responses(self) -> np.ndarray:
        """(n_trials, n_units) float32 rate in Hz in `response_window_s`."""
        try:
            responses = self._file["responses"][: self.n_trials]
        except _DAMAGE as error:
            raise DataFileError(self._path, f"cannot read responses ({error})") from None
        # A flagged block keeps its trials without responses (NaN); anywhere else NaN is damage.
        flagged = self._file["blocks"]["flagged"][: self.n_blocks][self._file["trials"]["block"][: self.n_trials]]
        with np.errstate(invalid="ignore"):
            bad = np.isinf(responses) | (responses < 0) | (np.isnan(responses) & (flagged == 0)[:, None])
        self._refuse(
            "trial", bad.any(axis=1), "has a response rate that is infinite, negative, or NaN outside a flagged block"
        )
        return responses

    # -------------------------------------------------------------------- dataset
    def to_dataset(
        self,
        preprocessing: Preprocessing = Preprocessing(),
        window_s: tuple[float, float] | None = None,
        include_flagged: bool = False,
    ) -> ResponseDataset:
        """The session as a `ResponseDataset` for fitting.

        Natural and synthesized stimuli become images (grouped by stimulus id, repeats
        NaN-padded); orientation gratings become `GratingResponses`.  With a
        ``window_s`` other than the stored one, rates are recounted from the spikes.
        Trials of flagged blocks are left out unless ``include_flagged``.
        """
        window = self._window if window_s is None else check_window(window_s)
        trials, blocks = self.trials, self.blocks
        keep = np.ones(trials.size, dtype=bool)
        if not include_flagged and blocks.size:
            keep = blocks["flagged"][trials["block"]] == 0
        trials = trials[keep]
        if np.allclose(window, self._window, rtol=0, atol=1e-9):
            rates = self.responses[keep]
        else:
            spikes = self.spikes
            counts = window_counts_from_spike_times(
                spikes["unit_id"], spikes["time_s"], trials["onset_s"], window, self._unit_ids
            )
            rates = counts_to_rates(counts, window)
        kinds = self.stimuli["kind"][trials["stimulus_id"]]
        is_image = np.isin(kinds, [StimulusKind.NATURAL, StimulusKind.SYNTHESIZED])
        image_ids, trial_rates = group_by_stimulus(trials["stimulus_id"][is_image], rates[is_image])
        if trial_rates.shape[1] == 0:
            trial_rates = np.empty((image_ids.size, 0, self._unit_ids.size), dtype=np.float32)
        images = preprocess(self.read_pixels(image_ids), preprocessing)
        gratings = self._orientation_responses(trials, rates, kinds == StimulusKind.GRATING)
        return ResponseDataset(
            images=images,
            trial_rates=trial_rates,
            unit_ids=self.unit_ids,
            image_ids=image_ids,
            source=str(self._path),
            preprocessing=preprocessing,
            window_s=window,
            gratings=gratings,
        )

    def _orientation_responses(
        self, trials: np.ndarray, rates: np.ndarray, is_grating: np.ndarray
    ) -> GratingResponses | None:
        """Mean rate per orientation over phases and repeats, or None without gratings.

        If gratings of several spatial frequencies or sizes were shown, the set that
        covers the most orientations is used, so other tuning curves do not blur it.
        """
        stimuli = self.stimuli
        shown = stimuli[trials["stimulus_id"][is_grating]]
        has_orientation = np.isfinite(shown["orientation_deg"])
        if not has_orientation.any():
            return None
        shown, grating_rates = shown[has_orientation], rates[is_grating][has_orientation]
        # NaN != NaN, so compare the configuration columns with NaN replaced.
        config = np.stack(
            [np.nan_to_num(shown[c], nan=-1e9) for c in ("sf_cpd", "radius_px")]
            + [shown["annulus"].astype(np.float64)],
            axis=1,
        )
        configs, which = np.unique(config, axis=0, return_inverse=True)
        which = which.ravel()
        coverage = [np.unique(shown["orientation_deg"][which == k]).size for k in range(len(configs))]
        chosen = which == int(np.argmax(coverage))
        orientation = np.round(shown["orientation_deg"][chosen], 6)
        orientations, group = np.unique(orientation, return_inverse=True)
        sums = np.zeros((orientations.size, rates.shape[1]), dtype=np.float64)
        np.add.at(sums, group, grating_rates[chosen])
        mean = sums / np.bincount(group, minlength=orientations.size)[:, None]
        return GratingResponses(orientations_deg=orientations, rates=mean.astype(np.float32))


def _refuse(path: Path, what: str, bad: np.ndarray, problem: str, offset: int = 0) -> None:
    """Committed rows are vouched for: one that is not valid means the file is damaged."""
    if bad.any():
        row = offset + int(np.flatnonzero(bad)[0])
        raise DataFileError(
            path,
            f"committed {what} {row} {problem}; the file is damaged (recover it with "
            "SessionWriter.resume or use a backup)",
        )


def _check_pixels(path: Path, ids: np.ndarray, pixels: np.ndarray) -> None:
    """Committed pixels are finite and in [0, 1]; anything else is damage, refused here once for every reader."""
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(pixels) | (pixels < -_PIXEL_SLACK) | (pixels > 1 + _PIXEL_SLACK)
    if bad.any():
        stimulus = int(ids[np.flatnonzero(bad.reshape(len(ids), -1).any(axis=1))[0]])
        raise DataFileError(
            path,
            f"stimulus {stimulus} has pixels that are NaN, infinite or outside [0, 1]; "
            "the file is damaged (recover it with SessionWriter.resume or use a backup)",
        )


def _identity(path: Path) -> tuple[int, int, int]:
    """(inode, size, mtime) of ``path``, to notice a replaced or rewritten file."""
    try:
        stat = path.stat()
    except OSError as error:
        raise DataFileError(path, f"cannot be read ({error})") from None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
