"""Stimulus onsets from photodiode edges, matched in order to the presenter's reports (docs/architecture.md, Clocks).

The photodiode edge recorded by acquisition is the true onset on the acquisition
clock; the presenter's flip time (its own clock) is the check.  Rising edges are
matched to trials in order, and the match is accepted only if there is one edge per
trial and every interval between consecutive edges agrees with the interval between
the corresponding flips to within a tolerance (about a frame: the photodiode may see
a frame late, a flip may be late).  Anything else — a missing edge, an extra edge, an
edge in the wrong place — is reported in words and no onset is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Alignment:
    """The result of matching photodiode edges to trials.

    Attributes
    ----------
    ok
        One edge per trial and all intervals agree: ``onsets`` are real.
    onsets
        (n_trials,) onset of each trial on the acquisition clock when ``ok``, else ``None``.
    problem
        What was wrong, in words ("" when ``ok``).
    n_edges, n_trials
        What was matched.
    """

    ok: bool
    onsets: np.ndarray | None
    problem: str
    n_edges: int
    n_trials: int

    def clock_offset(self, flip_times: np.ndarray) -> float | None:
        """Median (onset − flip) of an accepted match: maps presenter to acquisition time."""
        if not self.ok or self.onsets is None or self.onsets.size == 0:
            return None
        return float(np.median(self.onsets - np.asarray(flip_times, dtype=np.float64)))


def align_onsets(
    flip_times: np.ndarray, edge_times: np.ndarray, frame_s: float, tolerance_frames: float = 1.0
) -> Alignment:
    """Match rising photodiode edges to trials in order and check their spacing.

    Parameters
    ----------
    flip_times
        (n_trials,) presenter flip time of each trial, in trial order (presenter clock).
    edge_times
        (n_edges,) rising-edge times on the acquisition clock, in the order received.
    frame_s
        One display frame in seconds.
    tolerance_frames
        Largest allowed disagreement between an edge interval and its flip interval,
        in frames.

    Returns
    -------
    Alignment
        ``ok`` with the onsets, or the problem described.
    """
    flips = np.asarray(flip_times, dtype=np.float64).ravel()
    edges = np.asarray(edge_times, dtype=np.float64).ravel()
    n_trials, n_edges = flips.size, edges.size
    tolerance = tolerance_frames * frame_s

    def failed(problem: str) -> Alignment:
        return Alignment(False, None, problem, n_edges, n_trials)

    if n_trials == 0:
        return failed("no trials were reported") if n_edges else Alignment(True, edges, "", 0, 0)
    if np.any(np.diff(edges) <= 0):
        first = int(np.flatnonzero(np.diff(edges) <= 0)[0])
        return failed(
            f"photodiode edges out of time order at edge {first + 1} "
            f"({edges[first]:.4f} s then {edges[first + 1]:.4f} s)"
        )
    if n_edges != n_trials:
        which = "missing" if n_edges < n_trials else "extra"
        where = _first_disagreement(flips, edges, tolerance)
        located = "" if where is None else f"; edges and flips first disagree at trial {where}"
        return failed(
            f"{n_edges} photodiode rising edges for {n_trials} trials ({abs(n_trials - n_edges)} {which}){located}"
        )
    where = _first_disagreement(flips, edges, tolerance)
    if where is not None:
        edge_gap, flip_gap = edges[where] - edges[where - 1], flips[where] - flips[where - 1]
        return failed(
            f"photodiode edge interval before trial {where} is {1000 * edge_gap:.1f} ms but the "
            f"presenter's flip interval is {1000 * flip_gap:.1f} ms (off by "
            f"{1000 * abs(edge_gap - flip_gap):.1f} ms, more than {1000 * tolerance:.1f} ms)"
        )
    return Alignment(True, edges.copy(), "", n_edges, n_trials)


def _first_disagreement(flips: np.ndarray, edges: np.ndarray, tolerance: float) -> int | None:
    """First trial k >= 1 whose edge interval differs from its flip interval by more than ``tolerance``."""
    n = min(flips.size, edges.size)
    if n < 2:
        return None
    bad = np.abs(np.diff(edges[:n]) - np.diff(flips[:n])) > tolerance
    return int(np.flatnonzero(bad)[0]) + 1 if bad.any() else None


def estimated_onsets(flip_times: np.ndarray, edge_times: np.ndarray, offset: float | None) -> tuple[np.ndarray, str]:
    """Onsets for a block whose edges did not match: flip times moved onto the acquisition clock.

    Only used to fill the session file's onset column of a *flagged* block (its
    responses are stored as NaN).  ``offset`` is (onset − flip) from the last block
    that aligned; without one the first edge anchors the first flip; without any edge
    the flip times are stored as they are.  Returns the onsets and how they were made.
    """
    flips = np.asarray(flip_times, dtype=np.float64).ravel()
    edges = np.asarray(edge_times, dtype=np.float64).ravel()
    if offset is not None:
        return flips + offset, "flip times + the clock offset of the last aligned block"
    if edges.size and flips.size:
        return flips + (edges[0] - flips[0]), "flip times anchored at the first photodiode edge"
    return flips.copy(), "presenter flip times (no clock offset known)"
