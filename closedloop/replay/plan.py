"""What a replay needs to know about an archive before it streams (docs/architecture.md).

The replay driver plays the runner's part without a presenter: the recording defines
the blocks, and the driver holds the display images a runner would have held.  This
module reads that once, up front: the trials in the order the `ReplayAdapter` reports
them (its ``StimulusShown.trial`` is the index into `ArchivePlan.stimulus_ids`), how they
group into replay blocks, which trials fitting uses, the units, and the images of the
stimuli fitting uses.

Which trials and units fitting uses follows `closedloop.data.loader.load_dataset`
exactly, so online and offline fits see the same data: session files use natural and
synthesized stimuli of unflagged blocks and all units; pvc-8 files use the small
natural images and the INDCENT == 1 units (or all units).

Images are kept as the archive stores them (float32 session pixels, uint8 pvc-8
images): the model server preprocesses them with the same `preprocess` call the loader
makes on the same arrays, so the network input is bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from closedloop.config.rig import PHOTODIODE_LINE
from closedloop.data.formats import detect_format
from closedloop.data.pvc8 import BIN_S, read_pvc8
from closedloop.data.responses import window_bins
from closedloop.data.session import BlockFlag, BlockKind, SessionReader, StimulusKind
from closedloop.errors import ClosedLoopError, DataFileError
from closedloop.model.split import MIN_IMAGES

#: Which pvc-8 units fitting uses: INDCENT == 1 (``"indcent"``) or ``"all"`` (`load_dataset`'s ``units``).
Units = Literal["indcent", "all"]


@dataclass(frozen=True)
class ReplayBlock:
    """One block of the replay: trials ``[trial_start, trial_stop)`` in replay order.

    ``flagged`` is why the archive itself flags the block ("" when it does not): such
    a block is replayed but not fitted, as the offline loader leaves it out too.
    """

    number: int
    trial_start: int
    trial_stop: int
    label: str
    kind: str
    flagged: str = ""

    @property
    def n_trials(self) -> int:
        return self.trial_stop - self.trial_start


@dataclass
class ArchivePlan:
    """An archive's trials, blocks, units and fitting images (see module notes).

    Attributes
    ----------
    path, layout
        The archive and its format (``"session"`` or ``"pvc8"``).
    unit_ids
        (n_units,) units whose responses are extracted (the ones the loader keeps).
    stimulus_ids
        (n_trials,) stimulus of each trial, in replay order.
    fit_trial
        (n_trials,) whether fitting uses the trial's stimulus.
    blocks
        Replay blocks in order.
    image_ids, images
        Sorted ids of every stimulus fitting uses, and their display images as stored.
    image_size
        Side of the display images (the model server's ``stimulus_size_px``).
    photodiode_line
        Sync line of the onset edges.
    trial_period_s
        Shortest interval between onsets within a block.
    stimulus_s
        Recorded stimulus duration (pvc-8: the length of ``resp_train``); ``None`` if unknown.
    notes
        Things about the archive worth saying (e.g. uncommitted blocks left out).
    """

    path: Path
    layout: Literal["session", "pvc8"]
    unit_ids: np.ndarray
    stimulus_ids: np.ndarray
    fit_trial: np.ndarray
    blocks: list[ReplayBlock]
    image_ids: np.ndarray
    images: np.ndarray
    image_size: int
    photodiode_line: int = PHOTODIODE_LINE
    trial_period_s: float = np.inf
    stimulus_s: float | None = None
    units: Units = "all"
    notes: list[str] = field(default_factory=list)

    @property
    def n_trials(self) -> int:
        return int(self.stimulus_ids.size)

    def images_of(self, stimulus_ids: np.ndarray) -> np.ndarray:
        """Display images of ``stimulus_ids`` (each must be a fitting stimulus)."""
        where = np.searchsorted(self.image_ids, np.asarray(stimulus_ids, dtype=np.int64))
        return self.images[where]

    def fit_images_through(self, blocks: list[ReplayBlock]) -> np.ndarray:
        """Distinct fitting images seen after each of ``blocks`` (unflagged blocks only)."""
        seen: set[int] = set()
        counts = []
        for block in blocks:
            if not block.flagged:
                span = slice(block.trial_start, block.trial_stop)
                seen.update(int(i) for i in self.stimulus_ids[span][self.fit_trial[span]])
            counts.append(len(seen))
        return np.asarray(counts, dtype=np.int64)

    def window_problem(self, window_s: tuple[float, float]) -> str | None:
        """Why a response window does not fit the archive's trials, or ``None`` when it does.

        pvc-8: the window must lie on 1 ms bins within the recorded stimulus (the
        loader counts ``resp_train`` bins); session: it must end before the next trial.
        """
        start_ms, stop_ms = 1000 * window_s[0], 1000 * window_s[1]
        if self.layout == "pvc8":
            if self.stimulus_s is None:  # read_plan gives every pvc-8 plan its stimulus duration
                raise RuntimeError(f"{self.path.name}: the pvc-8 plan has no stimulus duration")
            n_bins = int(round(self.stimulus_s / BIN_S))
            try:
                window_bins(window_s, BIN_S, n_bins)
            except ValueError as error:
                return (
                    f"{start_ms:g}-{stop_ms:g} ms does not fit {self.path.name}: pvc-8 records {n_bins} ms of "
                    f"each stimulus in 1 ms bins ({error}); choose a window on whole ms within 0-{n_bins} ms"
                )
        elif stop_ms > 1000 * self.trial_period_s + 1e-6:
            return (
                f"{start_ms:g}-{stop_ms:g} ms does not fit {self.path.name}: its trials start every "
                f"{1000 * self.trial_period_s:.0f} ms, so the window would count the next trial's spikes; "
                "end the window earlier"
            )
        return None

    def check_enough_images(self, blocks: list[ReplayBlock]) -> None:
        """Refuse a replay whose blocks never reach the images a fit needs."""
        counts = self.fit_images_through(blocks)
        total = int(counts[-1]) if counts.size else 0
        if total < MIN_IMAGES:
            what = "" if len(blocks) == len(self.blocks) else f" in the {len(blocks)} block(s) replayed"
            more = ""
            if len(blocks) < len(self.blocks):
                all_counts = self.fit_images_through(self.blocks)
                enough = np.flatnonzero(all_counts >= MIN_IMAGES)
                if enough.size:
                    more = f"; replay at least {int(enough[0]) + 1} blocks (--blocks)"
            raise ClosedLoopError(
                f"{self.path}: only {total} image(s) that fitting uses{what}: a fit needs at least {MIN_IMAGES}{more}"
            )


def read_plan(path: str | Path, *, units: Units = "indcent", block_trials: int | None = None) -> ArchivePlan:
    """Read the replay plan of a session file or pvc-8 file (told apart by content).

    Parameters
    ----------
    units
        pvc-8 only: ``"indcent"`` (the loader's default) or ``"all"``.
    block_trials
        Split blocks into pieces of at most this many trials (session files: within
        each recorded block; pvc-8: over the whole recording, across repeats).

    Raises
    ------
    DataFileError
        Missing, unreadable or not an archive; a session with non-square stimuli;
        a pvc-8 file without INDCENT units.
    """
    path = Path(path)
    if detect_format(path) == "pvc8":
        return _pvc8_plan(path, units, block_trials)
    return _session_plan(path, block_trials)


def _pieces(start: int, stop: int, size: int | None) -> list[tuple[int, int]]:
    size = size or (stop - start)
    return [(a, min(a + size, stop)) for a in range(start, stop, size)]


def _session_plan(path: Path, block_trials: int | None) -> ArchivePlan:
    with SessionReader(path) as reader:
        reader.check_events()  # the replay streams them all: refuse a damaged file before anything starts
        trials, blocks, stimuli = reader.trials, reader.blocks, reader.stimuli
        height, width = reader.stimulus_shape
        if height != width:
            raise DataFileError(path, f"stimuli are {height}x{width} px; the model server takes square images")
        fit_kind = np.isin(stimuli["kind"], [StimulusKind.NATURAL, StimulusKind.SYNTHESIZED])
        stimulus_ids = trials["stimulus_id"].astype(np.int64)
        fit_trial = fit_kind[stimulus_ids] if stimulus_ids.size else np.zeros(0, bool)
        image_ids = np.unique(stimulus_ids[fit_trial])
        images = reader.read_pixels(image_ids)
        unit_ids = reader.unit_ids
        line = reader.metadata.get("runner", {}).get("photodiode_line", PHOTODIODE_LINE)
        notes = _uncommitted_note(path, reader.n_blocks)
    if stimulus_ids.size == 0:
        raise DataFileError(path, "has no trials to replay")
    replay_blocks: list[ReplayBlock] = []
    for row in blocks:
        start, stop = int(row["trial_start"]), int(row["trial_stop"])
        if stop <= start:
            continue  # fit and synthesize blocks show nothing
        kind = BlockKind(int(row["kind"])).name.lower()
        flagged = BlockFlag(int(row["flag_code"])).name.lower() if row["flagged"] else ""
        pieces = _pieces(start, stop, block_trials)
        for a, b in pieces:
            part = f", trials {a - start}-{b - start - 1}" if len(pieces) > 1 else ""
            replay_blocks.append(
                ReplayBlock(
                    len(replay_blocks), a, b, f"archive block {int(row['index'])} ({kind}{part})", kind, flagged
                )
            )
    onsets = trials["onset_s"]
    same_block = np.diff(trials["block"]) == 0
    gaps = np.diff(onsets)[same_block]
    return ArchivePlan(
        path,
        "session",
        unit_ids,
        stimulus_ids,
        fit_trial,
        replay_blocks,
        image_ids,
        images,
        int(height),
        photodiode_line=int(line),
        trial_period_s=float(gaps.min()) if gaps.size else np.inf,
        units="all",
        notes=notes,
    )


def _uncommitted_note(path: Path, committed: int) -> list[str]:
    """A note when the file holds block rows after its committed part (a writer stopped mid-block)."""
    import h5py

    try:
        with h5py.File(path, "r", locking=False) as file:
            rows = int(file["blocks"]["committed"].shape[0])
    except (OSError, KeyError):
        return []  # the reader opened it; the count is only for the note
    if rows > committed:
        return [
            f"{rows - committed} uncommitted block(s) at the end of the file (the recording stopped while "
            f"writing) are left out; replaying the {committed} committed block(s)"
        ]
    return []


def _pvc8_plan(path: Path, units: Units, block_trials: int | None) -> ArchivePlan:
    recording = read_pvc8(path)
    try:
        unit_index = recording.selected_units(units)
    except ValueError as error:
        raise ClosedLoopError(str(error)) from None
    n_stimuli, n_repeats = recording.n_stimuli, recording.n_repeats
    stimulus_ids = np.tile(np.arange(n_stimuli, dtype=np.int64), n_repeats)
    image_ids = recording.natural_small_indices.astype(np.int64)
    fit_trial = np.isin(stimulus_ids, image_ids)
    if block_trials:
        spans = _pieces(0, stimulus_ids.size, block_trials)
        blocks = [ReplayBlock(k, a, b, f"trials {a}-{b - 1}", "pvc8") for k, (a, b) in enumerate(spans)]
    else:
        blocks = [ReplayBlock(r, r * n_stimuli, (r + 1) * n_stimuli, f"repeat {r}", "pvc8") for r in range(n_repeats)]
    return ArchivePlan(
        path,
        "pvc8",
        recording.unit_ids[unit_index],
        stimulus_ids,
        fit_trial,
        blocks,
        image_ids,
        recording.image_stack(image_ids),
        int(recording.images[0].shape[0]),
        stimulus_s=recording.n_bins * BIN_S,
        units=units,
    )
