"""Which presented stimulus is which synthesized image: targets vs achieved responses.

A `SynthesizeResult` names units, targets and images but no stimulus ids; the runner
gives each image a stimulus id when it sends it to the presenter (in the `BlockRequest`
it publishes, with the pixels, the first time the image is shown).  We match the two by
*pixel fingerprint*: a hash of the image quantised to 8 bits, so a runner that stores or
sends the image as uint8 or float32 still matches, and block order, other blocks in
between or a skipped block cannot pair the wrong images.  Only when no fingerprint
matches (a runner that transformed the pixels) do we fall back to order: the new images
of a block whose kind names synthesized images, paired in order with the unmatched
images of the newest result, if the counts agree.

The runner's and the model server's streams are separate connections, so the monitor
may see the `BlockRequest` before the `SynthesizeResult` it came from: the fingerprints
of recently presented images are kept too (bounded), and a late result is matched
against them.

Each image's promise (`synthesized_promises`) and 95 % interval for its measured mean
(`synthesized_intervals`) are the loop report's: a rate image is promised its prediction, a
"max" image its prediction times the measured / predicted rate the model that made it recorded
at its units' top-predicted held-out photographs (``heldout_top_ratio`` in its `ModelUpdated`
metrics); the interval is promise ± k·√(spread² + se²), k from the earlier iterations' images
once there are enough of them, else the one the model recorded from its held-out photographs
(``heldout_interval_sds``).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from closedloop.model.metrics import calibrated_interval_sds, interval_halfwidths, promise_ratio


def fingerprint(image: np.ndarray) -> bytes:
    """Hash of an image in [0, 1] (float) or 0..255 (uint8), quantised to 8 bits."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.round(np.clip(np.nan_to_num(image.astype(np.float64)), 0, 1) * 255).astype(np.uint8)
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()


@dataclass
class SynthRecord:
    """One synthesized image: what it was made for and, once presented, its stimulus id."""

    unit_id: int
    target_hz: float  # NaN = maximise
    achieved_hz: float  # the model's predicted rate for the image
    model_version: int
    iteration: int
    stimulus_id: int = -1
    fingerprint: bytes = b""
    spread_hz: float = math.nan  # std of the ensemble members' predictions (NaN: not sent or not saved)


def is_synthesized_kind(kind: str) -> bool:
    """Whether a block kind presents synthesized images (``present_synthesized``, ``synthesized``…)."""
    return "synth" in kind.lower()


class SynthTracker:
    """Synthesized images of the session, newest ``capacity`` kept."""

    def __init__(self, capacity: int = 2000):
        self.records: deque[SynthRecord] = deque(maxlen=int(capacity))
        self.results = 0
        self.matched_by_pixels = 0
        self.matched_by_order = 0
        self._last_result: list[SynthRecord] = []
        # fingerprint -> presented stimulus ids no record has claimed yet (newest capacity kept)
        self._presented: OrderedDict[bytes, list[int]] = OrderedDict()
        self._capacity = int(capacity)
        # model version -> the k it recorded from its held-out photographs, and the measured / predicted
        # rate at its units' top-predicted ones (newest capacity kept)
        self.photographs_k: OrderedDict[int, float] = OrderedDict()
        self.top_ratios: OrderedDict[int, float] = OrderedDict()

    def add_model(self, version: int, metrics: dict) -> None:
        """Note the interval factor (``heldout_interval_sds``) and the top ratio (``heldout_top_ratio``)
        a model version recorded, those that are positive numbers."""
        for kept, key in ((self.photographs_k, "heldout_interval_sds"), (self.top_ratios, "heldout_top_ratio")):
            value = metrics.get(key)
            if isinstance(value, float | int) and math.isfinite(value) and value > 0:
                kept[int(version)] = float(value)
                kept.move_to_end(int(version))
                while len(kept) > self._capacity:
                    kept.popitem(last=False)

    def add_result(
        self,
        unit_ids: np.ndarray,
        targets: np.ndarray,
        achieved: np.ndarray,
        images: np.ndarray,
        model_version: int,
        iteration: int,
        spread: np.ndarray | None = None,
    ) -> None:
        """Add the images of a `SynthesizeResult`.

        Parameters
        ----------
        unit_ids, targets, achieved, images
            The message's arrays: driven unit, target (NaN: maximise), predicted rate and pixels.
        model_version, iteration
            The model that made them and the loop iteration they belong to.
        spread
            The ensemble's std of each predicted rate; ``None`` (a server that sends none) is NaN.
        """
        spreads = _spreads(spread, len(unit_ids))
        batch = [
            SynthRecord(
                int(u),
                float(t),
                float(a),
                int(model_version),
                int(iteration),
                fingerprint=fingerprint(image),
                spread_hz=sd,
            )
            for u, t, a, image, sd in zip(unit_ids, targets, achieved, images, spreads)
        ]
        for record in batch:  # images the runner already presented (its stream was faster)
            waiting = self._presented.get(record.fingerprint)
            if waiting:
                record.stimulus_id = waiting.pop(0)
                self.matched_by_pixels += 1
        self.records.extend(batch)
        self._last_result = batch
        self.results += 1

    def add_known(
        self,
        stimulus_ids: np.ndarray,
        unit_ids: np.ndarray,
        targets: np.ndarray,
        achieved: np.ndarray,
        model_versions: np.ndarray,
        spread: np.ndarray | None = None,
    ) -> None:
        """Add synthesized stimuli whose ids are already known (a session file's provenance).

        Parameters
        ----------
        stimulus_ids, unit_ids, targets, achieved, model_versions
            The session file's ``stimuli`` columns of those rows.
        spread
            Their ``spread_hz`` column; ``None`` or NaN (a file from before it) is no spread.
        """
        spreads = _spreads(spread, len(stimulus_ids))
        for s, u, t, a, v, sd in zip(stimulus_ids, unit_ids, targets, achieved, model_versions, spreads):
            self.records.append(
                SynthRecord(int(u), float(t), float(a), int(v), int(v), stimulus_id=int(s), spread_hz=sd)
            )

    def add_presented(self, kind: str, image_ids: np.ndarray, pixels: np.ndarray) -> int:
        """New images of a `BlockRequest`; returns how many were matched to records."""
        waiting: dict[bytes, list[SynthRecord]] = {}
        for record in self.records:
            if record.stimulus_id < 0:
                waiting.setdefault(record.fingerprint, []).append(record)
        matched = 0
        unmatched: list[tuple[bytes, int]] = []
        for stimulus_id, image in zip(np.asarray(image_ids).tolist(), pixels):
            key = fingerprint(image)
            candidates = waiting.get(key)
            if candidates:
                # the same image made twice (same unit/target/seed) is one stimulus per copy
                candidates.pop(0).stimulus_id = int(stimulus_id)
                matched += 1
            else:
                unmatched.append((key, int(stimulus_id)))
        self.matched_by_pixels += matched
        if matched == 0 and is_synthesized_kind(kind):
            open_records = [r for r in self._last_result if r.stimulus_id < 0]
            if open_records and len(open_records) == len(unmatched):
                for record, (_, stimulus_id) in zip(open_records, unmatched):
                    record.stimulus_id = stimulus_id
                unmatched = []
                self.matched_by_order += len(open_records)
                matched = len(open_records)
        for key, stimulus_id in unmatched:  # a result that comes later may claim them
            self._presented.setdefault(key, []).append(stimulus_id)
            self._presented.move_to_end(key)
        while len(self._presented) > self._capacity:
            self._presented.popitem(last=False)
        return matched

    def arrays(self) -> dict[str, np.ndarray]:
        """Columns of every kept record (for the targets-vs-achieved panel)."""
        records = list(self.records)
        return {
            "unit_id": np.array([r.unit_id for r in records], dtype=np.int64),
            "target_hz": np.array([r.target_hz for r in records], dtype=np.float64),
            "achieved_hz": np.array([r.achieved_hz for r in records], dtype=np.float64),
            "spread_hz": np.array([r.spread_hz for r in records], dtype=np.float64),
            "model_version": np.array([r.model_version for r in records], dtype=np.int64),
            "iteration": np.array([r.iteration for r in records], dtype=np.int64),
            "stimulus_id": np.array([r.stimulus_id for r in records], dtype=np.int64),
        }


def synthesized_promises(columns: dict[str, np.ndarray], top_ratios: Mapping[int, float]) -> np.ndarray:
    """Each synthesized image's promised rate, as the loop report sets it: the prediction, times
    its model's `closedloop.model.metrics.promise_ratio` for a "max" image (NaN target).

    Parameters
    ----------
    columns
        `SynthTracker.arrays`.
    top_ratios
        Model version -> the ``heldout_top_ratio`` it recorded.
    """
    ratios = np.array([promise_ratio(top_ratios.get(int(v))) for v in columns["model_version"].tolist()])
    return np.where(np.isnan(columns["target_hz"]), ratios, 1.0) * columns["achieved_hz"]


def synthesized_intervals(
    columns: dict[str, np.ndarray], photographs_k: Mapping[int, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Each synthesized image's 95 % interval for its measured mean, as the loop report sets it.

    Parameters
    ----------
    columns
        `SynthTracker.arrays` with ``promised_hz`` (`synthesized_promises`), ``measured_hz`` and
        ``measured_se_hz`` (NaN: not yet shown).
    photographs_k
        Model version -> the k it recorded from its held-out photographs.

    Returns
    -------
    tuple of numpy.ndarray
        Per image: k, and the half-width k·√(spread² + se²) (NaN where unknown: no spread, not yet
        shown, or no k).
    """
    iteration, version = columns["iteration"], columns["model_version"]
    promised, spread = columns["promised_hz"], columns["spread_hz"]
    measured, se = columns["measured_hz"], columns["measured_se_hz"]
    k = np.full(iteration.size, np.nan)
    for number in np.unique(iteration).tolist():
        earlier = iteration < number
        for made_by in np.unique(version[iteration == number]).tolist():
            now = (iteration == number) & (version == made_by)
            k[now], _ = calibrated_interval_sds(
                promised[earlier], measured[earlier], spread[earlier], se[earlier], photographs_k.get(made_by, math.nan)
            )
    return k, interval_halfwidths(k, spread, se)


def _spreads(spread: np.ndarray | None, n: int) -> list[float]:
    """One float per image: the given spreads, or NaN for each when there are none."""
    if spread is None:
        return [math.nan] * n
    return np.asarray(spread, dtype=np.float64).tolist()
