"""The loop report's records: model fits, synthesized images, iterations, turnaround.

`closedloop.reports.loop_numbers` fills them from a session and its journal
(`read_journal`); `closedloop.reports.loop_view` shows them as text and a figure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from closedloop.jsonsafe import json_safe
from closedloop.reports.loop_view import report_figure, report_text
from closedloop.runner.journal import BlockRecord, journal_path, read_records


@dataclass
class ModelFit:
    """One model version as its fit block recorded it (held-out images of that fit)."""

    version: int
    session_block: int
    r_mean: float
    r_median: float
    r_over_rmax_mean: float
    n_images: int
    refit_seconds: float
    warm_start: bool
    error_over_spread: float = math.nan  # held-out trial means' miss over the members' spread (1: honest)
    interval_sds: float = math.nan  # prediction ± this many √(spread² + se²) held 95 % of held-out trial means
    top_ratio: float = math.nan  # measured / predicted rate at the units' top-predicted held-out images (median)


@dataclass
class SynthesizedImage:
    """One synthesized image and what became of it (rates in Hz; NaN where unknown).

    ``target_hz`` is NaN for a "max" image; ``spread_hz`` the std of the ensemble members'
    predictions around ``achieved_hz`` (NaN: the server sent none, or an older session
    file); ``measured_hz`` is the mean over its
    presentations in good blocks (``n_presentations``), ``measured_se_hz`` its standard
    error (from the unit's noise when shown once; NaN when never shown); ``true_hz`` the brain's
    expected rate; ``predicted_before_hz`` / ``predicted_after_hz`` the predictions of
    the model that made it and of the refit after its responses; ``held_out_after``
    whether the refit held the image out (``None``: unknown); ``interval_hz`` the half-width
    of its 95 % interval for the measured mean, set before it was shown
    (`closedloop.reports.loop_numbers.iteration_interval`); ``promised_hz`` the rate it was
    promised: ``achieved_hz`` unless given, and for a "max" image ``achieved_hz`` times the model's
    recorded top ratio (`closedloop.reports.loop_numbers.iteration_max_promise`).
    """

    stimulus_id: int
    unit_id: int
    target_hz: float
    achieved_hz: float
    measured_hz: float
    n_presentations: int
    true_hz: float = math.nan
    predicted_before_hz: float = math.nan
    predicted_after_hz: float = math.nan
    held_out_after: bool | None = None
    spread_hz: float = math.nan
    measured_se_hz: float = math.nan
    interval_hz: float = math.nan
    promised_hz: float = math.nan

    def __post_init__(self) -> None:
        if math.isnan(self.promised_hz):
            self.promised_hz = self.achieved_hz

    @property
    def label(self) -> str:
        return "max" if math.isnan(self.target_hz) else f"{self.target_hz:.1f}"


@dataclass
class Turnaround:
    """Seconds from a presentation block's last response in hand to the next images ready.

    ``extraction``: responses computed, stored and accepted by the server;
    ``refit``: refit asked for → ModelUpdated seen; ``synthesis``: SynthesizeRequest →
    SynthesizeResult; ``other``: the rest (steps starting, journal and session writes).
    ``refit`` is the last fit's when more than one fit block ran in between
    (``n_fits``, e.g. a protocol's warm-up refits): such a span is no loop turnaround.
    """

    total: float = math.nan
    extraction: float = math.nan
    refit: float = math.nan
    synthesis: float = math.nan
    other: float = math.nan
    from_block: int = -1  # the presentation block it starts at
    n_fits: int = 0  # fit blocks between that block and the synthesis

    @property
    def is_loop(self) -> bool:
        """One refit at most between the responses and the synthesis: a turnaround of the loop."""
        return math.isfinite(self.total) and self.n_fits <= 1


@dataclass
class Iteration:
    """One synthesize block, the images it made and how they did."""

    number: int  # 1, 2, … in session order
    loop_iteration: int  # the protocol loop iteration the runner recorded
    synthesize_block: int
    model_before: ModelFit | None
    model_after: ModelFit | None
    images: list[SynthesizedImage]
    summary: dict[str, float] = field(default_factory=dict)
    turnaround: Turnaround = field(default_factory=Turnaround)
    before_source: str = ""  # where predicted_before_hz came from
    after_note: str = ""  # why predicted_after_hz is missing, if it is


@dataclass
class LoopReport:
    """The loop report of one session (see module notes).

    Attributes
    ----------
    session
        The session file.
    fits
        Every model version the journal recorded, in order.
    iterations
        One per synthesize block that stored images.
    has_truth
        Whether a brain gave ground-truth rates.
    spread_honesty
        Over every iteration's images, how far the rates missed what was predicted in units
        of the ensemble's spread (``error_over_spread_measured`` and ``_true``,
        `closedloop.reports.loop_numbers.spread_honesty`) and how many fell inside their
        iteration's 95 % interval (``measured_within_interval``, ``true_within_interval``).
    notes
        What could not be computed and what it needs.
    """

    session: str
    fits: list[ModelFit]
    iterations: list[Iteration]
    has_truth: bool = False
    spread_honesty: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (NaN → None)."""
        data = asdict(self)
        for iteration, raw in zip(self.iterations, data["iterations"]):
            for image, row in zip(iteration.images, raw["images"]):
                row["label"] = image.label
        return json_safe(data)

    def text(self) -> str:
        """A readable table per iteration and the summaries."""
        return report_text(self)

    def figure(self, path: str | Path) -> Path:
        """Targets vs measured and vs true rates per iteration, r/rmax over versions (PNG, Agg)."""
        return report_figure(self, Path(path))


def read_journal(session_path: Path, n_blocks: int) -> list[BlockRecord]:
    """The newest record of each committed block, in block order (the file is not changed).

    Raises
    ------
    DataFileError
        The journal is missing or has a line that is not a record.
    """
    # A resumed block's record comes after, and replaces, the one it was written over.
    records = {r.session_block: r for r in read_records(journal_path(session_path)) if r.session_block < n_blocks}
    return [records[b] for b in sorted(records)]
