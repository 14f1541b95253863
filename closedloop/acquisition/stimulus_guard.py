"""Checks on what a simulated array is told by the presenter and the runner.

A `StimulusShown` report sets how much activity the array simulates: its flip time
places the trial on the acquisition clock and its frame count sets the trial's
length.  A report from a broken or hostile sender (a flip time of -1e9, a jump of
+1e12 s, ``n_frames`` of a million) would make the array simulate years of activity.
`StimulusGuard` lets through only reports whose flip times move forward by at most
``max_gap_s`` and whose frame counts are within ``1..max_frames``; anything else is
refused and counted, and the array keeps running.

A presenter that restarts gets a new clock: after ``REANCHOR_AFTER`` consecutive
refused reports that agree with one another (forward, within the gap), the guard
accepts the new timeline.

`BlockRequest` pixels are checked as the presenter checks them (`check_image`: the
rig's stimulus size, finite, in [0, 1]); the image cache is bounded in bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from closedloop.messages import BlockRequest, StimulusShown
from closedloop.present.base import PresenterError, check_image

#: Longest pause between two trials' flips (a fit between blocks takes minutes).
MAX_GAP_S = 3600.0
#: Refused reports in a row, consistent with each other, that mean the presenter restarted.
REANCHOR_AFTER = 3
#: Most bytes of BlockRequest images an array keeps.
MAX_CACHE_BYTES = 512 * 1024**2


@dataclass
class GuardCounts:
    """Refused inputs, by reason."""

    bad_flip_times: int = 0
    bad_frame_counts: int = 0
    bad_images: int = 0
    cache_full: int = 0
    reanchored: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            name: getattr(self, name)
            for name in ("bad_flip_times", "bad_frame_counts", "bad_images", "cache_full", "reanchored")
        }


@dataclass(frozen=True)
class Verdict:
    """A report accepted or refused; ``reanchor`` when it starts a new presenter timeline."""

    accepted: bool
    reanchor: bool = False
    reason: str = ""


class StimulusGuard:
    """Accepts or refuses presenter reports and runner images for a simulated array.

    Parameters
    ----------
    size_px
        Side of the images the array simulates (the rig's ``stimulus.size_px``).
    max_frames
        Most frames a stimulus may be reported shown for.
    max_gap_s
        Longest forward step between consecutive flip times.
    max_cache_bytes
        Most bytes of cached images.
    """

    def __init__(
        self, size_px: int, max_frames: int, *, max_gap_s: float = MAX_GAP_S, max_cache_bytes: int = MAX_CACHE_BYTES
    ):
        if size_px < 1 or max_frames < 1 or not max_gap_s > 0:
            raise ValueError(
                f"size_px, max_frames and max_gap_s must be positive, got {size_px}, {max_frames}, {max_gap_s}"
            )
        self.size_px = int(size_px)
        self.max_frames = int(max_frames)
        self.max_gap_s = float(max_gap_s)
        self.max_cache_bytes = int(max_cache_bytes)
        self.counts = GuardCounts()
        self._last_flip: float | None = None
        self._refused_run: list[float] = []
        self._cache_bytes = 0

    def check_shown(self, shown: StimulusShown) -> Verdict:
        """Whether the report may become a trial; a refusal is counted and says why."""
        if not 1 <= shown.n_frames <= self.max_frames:
            self.counts.bad_frame_counts += 1
            return Verdict(False, reason=f"n_frames {shown.n_frames} outside 1..{self.max_frames}")
        flip = shown.flip_time
        if not math.isfinite(flip):
            self.counts.bad_flip_times += 1
            return Verdict(False, reason=f"flip_time {flip} is not finite")
        if self._last_flip is None or self._forward(self._last_flip, flip):
            self._last_flip, self._refused_run = flip, []
            return Verdict(True)
        # Off the current timeline: a restarted presenter shows a run of consistent reports.
        if self._refused_run and not self._forward(self._refused_run[-1], flip):
            self._refused_run = []
        self._refused_run.append(flip)
        if len(self._refused_run) >= REANCHOR_AFTER:
            self.counts.reanchored += 1
            self._last_flip, self._refused_run = flip, []
            return Verdict(True, reanchor=True)
        self.counts.bad_flip_times += 1
        return Verdict(
            False,
            reason=f"flip_time {flip:.6g} s does not follow the previous flip "
            f"{self._last_flip:.6g} s (must move forward by at most {self.max_gap_s:g} s)",
        )

    @property
    def last_flip(self) -> float | None:
        """Flip time of the last accepted report (``None`` before the first)."""
        return self._last_flip

    def check_pixels(self, stimulus_id: int, pixels: np.ndarray) -> np.ndarray | None:
        """The image as float32 in [0, 1], or ``None`` when refused (wrong size, not finite, out of range)."""
        try:
            image = check_image(stimulus_id, pixels, self.size_px).astype(np.float32)
        except PresenterError:
            self.counts.bad_images += 1
            return None
        if self._cache_bytes + image.nbytes > self.max_cache_bytes:
            self.counts.cache_full += 1
            return None
        self._cache_bytes += image.nbytes
        return image

    def forget(self, image: np.ndarray) -> None:
        """An image left the cache (replaced by another with its id)."""
        self._cache_bytes -= image.nbytes

    def block_images(self, request: BlockRequest) -> list[tuple[int, np.ndarray]]:
        """The request's images that pass `check_pixels`, by stimulus id."""
        if request.pixels is None or request.image_ids is None:
            return []
        accepted = []
        for stimulus_id, pixels in zip(request.image_ids, request.pixels):
            image = self.check_pixels(int(stimulus_id), pixels)
            if image is not None:
                accepted.append((int(stimulus_id), image))
        return accepted

    def _forward(self, previous: float, flip: float) -> bool:
        return previous < flip <= previous + self.max_gap_s
