"""The responses the model server has received, and the split every refit uses.

Data arrive block by block as `FitRequest` s: trial-level rates by stimulus id, and the
images of stimuli the server has not seen.  A request is checked completely before
anything is added, so a refused request leaves no trace.  Unit ids are fixed by the
first request with trials.

Each image's part (train / stop / held out) is decided once, when the image first
arrives, and never changes: a warm-started model must never have trained on an image
that a later refit counts as held out.  New images are taken in an order drawn from
(server seed, stimulus id) and each goes to the part furthest below its share of all
images so far, so the parts keep their proportions (20 / 14 / 66 % by default) from
the first block on instead of drifting as a coin flip per image would.  An image sent
with a parent the store has (``FitRequest.parent_ids``: an edit of that image) joins its
parent's part instead (and out of the shares, which hold for the other images), so no
held-out image is an edit of a training image.

Trials are kept by block: a block sent again (a runner that resumed re-sends every
recorded block) replaces its first copy instead of counting twice.
"""

from __future__ import annotations

import numpy as np

from closedloop.data.dataset import Preprocessing, ResponseDataset
from closedloop.errors import ClosedLoopError
from closedloop.messages.types import FitRequest
from closedloop.model.split import MIN_IMAGES, DataSplit
from closedloop.server.checks import RequestError, checked_rates, listing, network_input, unique_ids

PARTS = ("train", "stop", "held_out")


def arrival_order(ids: np.ndarray, seed: int) -> np.ndarray:
    """``ids`` in an order drawn from (seed, id) alone, whatever order they came in."""
    keys = [int(np.random.SeedSequence([int(seed), int(i) & 0xFFFF_FFFF_FFFF_FFFF]).generate_state(1)[0]) for i in ids]
    return np.asarray(ids, dtype=np.int64)[np.argsort(keys, kind="stable")]


class ResponseStore:
    """Accumulated images (network input) and trial rates, and each image's part.

    Parameters
    ----------
    stimulus_size_px
        Side of the display images requests carry.
    preprocessing
        Display image → network input.
    holdout_fraction, stop_fraction
        Shares of all images held out and used for early stopping.
    seed
        Seeds the parts (with each stimulus id).
    window_s, source
        Recorded in every dataset.
    """

    def __init__(
        self,
        *,
        stimulus_size_px: int,
        preprocessing: Preprocessing,
        holdout_fraction: float,
        stop_fraction: float,
        seed: int,
        window_s: tuple[float, float] = (0.05, 0.10),
        source: str = "model server",
    ):
        self.stimulus_size_px = stimulus_size_px
        self.preprocessing = preprocessing
        self.shares = {"held_out": holdout_fraction, "stop": stop_fraction}
        self.seed = int(seed)
        self.window_s = window_s
        self.source = source
        self.unit_ids: np.ndarray | None = None
        self.n_trials = 0
        self._images: dict[int, np.ndarray] = {}
        self._parts: dict[int, str] = {}
        self._counts = dict.fromkeys(PARTS, 0)
        # stimulus id -> block -> (trials, units) rates of that stimulus in that block
        self._trials: dict[int, dict[int, np.ndarray]] = {}
        self._block_trials: dict[int, int] = {}

    @property
    def n_images(self) -> int:
        """Images with at least one trial."""
        return len(self._trials)

    def part(self, stimulus_id: int) -> str | None:
        """``"train"``, ``"stop"`` or ``"held_out"``; ``None`` for an unknown image."""
        return self._parts.get(int(stimulus_id))

    def add(self, request: FitRequest) -> int:
        """Check ``request`` and add its images and trials; returns the trials added.

        Raises
        ------
        RequestError
            ``bad_image_size``, ``bad_images``, ``image_conflict``, ``bad_rates``,
            ``bad_request`` (repeated ids), ``unit_mismatch`` or ``unknown_stimulus``;
            nothing is added then.
        """
        new_images = self._checked_images(request)
        stimulus_ids = np.asarray(request.stimulus_ids, dtype=np.int64)
        rates = unit_ids = None
        if stimulus_ids.size:
            rates = checked_rates(request.rates)
            unit_ids = unique_ids(request.unit_ids, "unit_ids")
            if self.unit_ids is not None and not np.array_equal(unit_ids, self.unit_ids):
                raise RequestError(
                    "unit_mismatch",
                    f"unit ids differ from the ones this session started with "
                    f"({len(unit_ids)} vs {len(self.unit_ids)} units; first ids "
                    f"{listing(unit_ids, 5)} vs {listing(self.unit_ids, 5)}); the server keeps "
                    "one unit set per session",
                )
            unknown = np.setdiff1d(stimulus_ids, [*self._images, *new_images])
            if unknown.size:
                raise RequestError(
                    "unknown_stimulus",
                    f"no image for stimulus id(s) {listing(unknown)}: send "
                    "image_ids and images the first time a stimulus is fitted",
                )
        parents = _parents(request)
        for stimulus_id in arrival_order(np.asarray(list(new_images), dtype=np.int64), self.seed):
            self._images[int(stimulus_id)] = new_images[int(stimulus_id)]
            self._assign_part(int(stimulus_id), parents.get(int(stimulus_id), -1))
        if rates is not None:
            if self.unit_ids is None:
                self.unit_ids = unit_ids
            self._forget_block(request.block)
            order = np.argsort(stimulus_ids, kind="stable")
            ids, starts = np.unique(stimulus_ids[order], return_index=True)
            for stimulus_id, rows in zip(ids, np.split(order, starts[1:])):
                self._trials.setdefault(int(stimulus_id), {})[request.block] = rates[rows].astype(np.float32)
            self._block_trials[request.block] = int(stimulus_ids.size)
            self.n_trials = sum(self._block_trials.values())
        return int(stimulus_ids.size)

    def _forget_block(self, block: int) -> None:
        """Drop what an earlier copy of ``block`` added (a re-sent block replaces it)."""
        if block not in self._block_trials:
            return
        for stimulus_id in list(self._trials):
            self._trials[stimulus_id].pop(block, None)
            if not self._trials[stimulus_id]:
                del self._trials[stimulus_id]
        del self._block_trials[block]

    def snapshot(self) -> tuple[ResponseDataset, DataSplit]:
        """Everything so far as a dataset, with each image's part as the split.

        Raises
        ------
        ClosedLoopError
            Fewer than `MIN_IMAGES` images with responses, or a part still empty.
        """
        ids = sorted(self._trials)
        if len(ids) < MIN_IMAGES:
            raise ClosedLoopError(f"only {len(ids)} images with responses: fitting needs at least {MIN_IMAGES}")
        unit_ids = self.unit_ids
        if unit_ids is None:  # set by the first request with trials
            raise RuntimeError("the response store has trials but no unit ids")
        per_image = [np.concatenate([self._trials[i][b] for b in sorted(self._trials[i])]) for i in ids]
        repeats = max(len(rows) for rows in per_image)
        trial_rates = np.full((len(ids), repeats, len(unit_ids)), np.nan, dtype=np.float32)
        for row, rows in enumerate(per_image):
            trial_rates[row, : len(rows)] = rows
        parts = np.asarray([self._parts[i] for i in ids])
        train, stop, held_out = (np.flatnonzero(parts == name) for name in PARTS)
        split = DataSplit(train, stop, held_out, seed=self.seed)
        sizes = {name: int(np.sum(parts == name)) for name in PARTS}
        if min(sizes.values()) < 1:
            raise ClosedLoopError(
                f"the {len(ids)} images with responses leave a part empty ({sizes}); record more images"
            )
        dataset = ResponseDataset(
            images=np.stack([self._images[i] for i in ids]),
            trial_rates=trial_rates,
            unit_ids=unit_ids.copy(),
            image_ids=np.asarray(ids, dtype=np.int64),
            source=self.source,
            preprocessing=self.preprocessing,
            window_s=self.window_s,
        )
        return dataset, split

    # --- internals -------------------------------------------------------------------

    def _checked_images(self, request: FitRequest) -> dict[int, np.ndarray]:
        """The request's images not seen before, as network input; a known id must match."""
        if request.image_ids is None:
            return {}
        if request.images is None:  # the message refuses image ids without images
            raise RequestError("bad_request", "image_ids come with images (one per id)")
        ids = unique_ids(request.image_ids, "image_ids")
        inputs = network_input(request.images, self.stimulus_size_px, self.preprocessing, "images")
        new = {}
        for stimulus_id, image in zip(ids, inputs):
            known = self._images.get(int(stimulus_id))
            if known is None:
                new[int(stimulus_id)] = image
            elif not np.allclose(known, image, atol=1e-4):
                raise RequestError(
                    "image_conflict",
                    f"stimulus id {int(stimulus_id)} was sent before with "
                    "different pixels; ids must name one image per session",
                )
        return new

    def _assign_part(self, stimulus_id: int, parent: int = -1) -> None:
        part = self._parts.get(parent)
        if part is None:
            total = sum(self._counts.values()) + 1
            below = [name for name in ("held_out", "stop") if self._counts[name] < round(self.shares[name] * total)]
            part = below[0] if below else "train"
            self._counts[part] += 1
        # An edit goes where its original is and is left out of the shares: counting it would send the
        # next images that are not edits to the other parts until the shares were even again.
        self._parts[stimulus_id] = part


def _parents(request: FitRequest) -> dict[int, int]:
    """New image id -> the id it was edited from (only real parents, -1s left out)."""
    if request.parent_ids is None or request.image_ids is None:
        return {}
    return {int(i): int(p) for i, p in zip(request.image_ids, request.parent_ids) if int(p) >= 0}
