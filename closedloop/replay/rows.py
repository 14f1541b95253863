"""One line of a replay's progress: what a block added and how the online fit did after it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class BlockRow:
    """What happened in one replay block.

    Attributes
    ----------
    block, label
        Replay block number and where it comes from in the archive.
    state
        ``fitted`` (a refit finished on the data so far), ``added`` (data sent, no
        refit asked), ``refit pending`` (asked, not finished when the row was
        printed), ``no fit data`` (no stimulus that fitting uses), ``flagged`` (not
        used: the archive flags it or its onsets did not align), ``refit failed`` or
        ``refused`` (the server refused the data).
    n_trials, fit_trials
        Trials in the block, and those sent for fitting.
    trials_so_far, images_so_far
        Fitting trials and distinct images the server has after this block.
    version
        Model version this block's refit produces (0: none asked).
    metrics
        That version's `ModelUpdated.metrics` once it finished.
    detail
        Why a block was flagged, refused or not fitted yet.
    """

    block: int
    label: str
    state: str
    n_trials: int
    fit_trials: int = 0
    trials_so_far: int = 0
    images_so_far: int = 0
    version: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    detail: str = ""
    request_seq: int | None = None

    def metric(self, name: str) -> float:
        value = self.metrics.get(name)
        return float("nan") if value is None else float(value)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("request_seq")
        return out

    def text(self) -> str:
        """One progress line."""
        head = f"block {self.block:3d} {self.label}: {self.n_trials} trials"
        if self.state in ("flagged", "refused", "no fit data"):
            return f"{head}; {self.state}" + (f": {self.detail}" if self.detail else "")
        data = f"; {self.trials_so_far} trials / {self.images_so_far} images so far"
        if self.state == "fitted":
            m = self.metrics
            warm = ", warm start" if m.get("warm_start") else ""
            model = (
                f"; model v{self.version}: held-out r mean {_f(self.metric('r_mean'))}, median "
                f"{_f(self.metric('r_median'))}, r/rmax {_f(self.metric('r_over_rmax_mean'))} "
                f"({self.metric('refit_seconds'):.1f} s{warm})"
            )
        elif self.state == "refit pending":
            model = f"; refit to v{self.version} running"
        else:
            model = f"; {self.state}"
        return head + data + model + (f" ({self.detail})" if self.detail else "")


def _f(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.3f}"
