"""What a simulated archive is: its spec, and the constants its layouts and readers share.

`closedloop.sim.archive` makes an archive from an `ArchiveSpec`; the two file layouts
(`closedloop.sim.archive_layouts`) write it with these timings and window (and the sync line
`closedloop.config.rig.PHOTODIODE_LINE`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from collections.abc import Callable

import numpy as np

from closedloop.errors import ClosedLoopError

#: Scenario used when none is given (relative to the repository / working directory).
DEFAULT_SCENARIO = Path("sim/default.yaml")
#: ``progress(stage, done, total)``: told as an archive is made.
Progress = Callable[[str, int, int], None]
RESPONSE_WINDOW_S = (0.05, 0.10)
#: The presenter's flip comes this long before the photodiode sees the frame (docs/methods.md:
#: 11–16 ms measured at 165–180 Hz); the simulated rig records the same offset.
PHOTODIODE_LAG_S = 0.012
#: Units whose RF centre lies within this distance of the aperture centre are INDCENT = 1.
CENTRED_WITHIN_DEG = 0.2


@dataclass(frozen=True)
class ArchiveSpec:
    """What to simulate and how to write it.

    Attributes
    ----------
    layout
        ``"session"`` (closedloop HDF5) or ``"pvc8"`` (MATLAB v5, real variable names).
    seed
        Seeds the population, the trial order and the spikes, and the image set unless
        ``image_seed`` is given.
    n_units
        Units to simulate; ``None`` keeps the scenario's count.
    n_images
        Natural images (pvc8: small ones, each also shown large; 270 in the real files).
    n_repeats
        Repeats of every stimulus.
    scenario
        Population scenario YAML; ``None`` means ``sim/default.yaml``.
    stimulus_s, blank_s
        Stimulus and blank durations.  Session default: 6 + 12 frames at 60 Hz.
    image_seed
        Seeds the natural-image set instead of ``seed``, so that archives with different
        populations and trials can show the same images, as the sessions of pvc-8 do.
        ``None`` derives the images from ``seed``; ``image_seed == seed`` gives the same images.
    """

    layout: Literal["session", "pvc8"] = "session"
    seed: int = 0
    n_units: int | None = None
    n_images: int = 270
    n_repeats: int = 20
    scenario: Path | None = None
    stimulus_s: float | None = None
    blank_s: float | None = None
    image_seed: int | None = None

    def __post_init__(self) -> None:
        if self.layout not in ("session", "pvc8"):
            raise ClosedLoopError(f"layout must be 'session' or 'pvc8', got {self.layout!r}")
        for name in ("n_images", "n_repeats"):
            if getattr(self, name) < 1:
                raise ClosedLoopError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.layout == "pvc8" and self.n_images > 270:
            raise ClosedLoopError(f"pvc-8 files hold at most 270 small natural images, got --images {self.n_images}")
        if self.image_seed is not None and self.image_seed < 0:
            raise ClosedLoopError(f"image_seed must be 0 or more, got {self.image_seed}")

    @property
    def durations_s(self) -> tuple[float, float]:
        """(stimulus, blank) in seconds, with the layout's defaults."""
        default = (0.106, 0.211) if self.layout == "pvc8" else (0.1, 0.2)
        return (self.stimulus_s or default[0], self.blank_s or default[1])


def window_fano(trial_rates: np.ndarray) -> float:
    """Median over units of the mean (over images) Fano factor of window counts.

    ``trial_rates`` is (n_images, n_repeats, n_units) in Hz; image/unit cells with
    no spikes on average are skipped because their Fano factor is undefined.
    """
    counts = trial_rates * (RESPONSE_WINDOW_S[1] - RESPONSE_WINDOW_S[0])
    mean = counts.mean(axis=1)
    var = counts.var(axis=1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fano = np.where(mean > 0.1, var / mean, np.nan)
    per_unit = np.nanmean(np.where(np.all(np.isnan(fano), axis=0), 0, fano), axis=0)
    return float(np.median(per_unit))
