"""The simulator's exact rates for the stimuli of a simulated archive (the "oracle").

A file written by ``closedloop sim make-archive`` carries its recipe (scenario, unit
count, seed, durations), so the ground-truth population can be rebuilt and asked for
its exact expected rate to any stimulus in the file.  Scoring those rates against
the recorded trials the same way as a model's predictions says how much of the
explainable response a perfect model would explain on the same images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from closedloop.data.pvc8 import read_pvc8
from closedloop.data.session import SessionReader
from closedloop.errors import ClosedLoopError, DataFileError
from closedloop.sim.archive import population_for, spec_from_archive

logger = logging.getLogger(__name__)


class ArchiveTruth:
    """A simulated archive's ground truth.

    Parameters
    ----------
    path
        The archive (session .h5 or pvc-8 .mat) made by `closedloop.sim.archive.make_archive`.

    Raises
    ------
    DataFileError
        If the file carries no simulation recipe.
    ClosedLoopError
        If the recipe's scenario file cannot be found.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.spec = spec_from_archive(self.path)
        self.population = population_for(self.spec)

    def stimulus_pixels(self, stimulus_ids: np.ndarray) -> np.ndarray:
        """(n, H, W) float pixels in [0, 1] of stimuli by their id in the file."""
        ids = np.asarray(stimulus_ids, dtype=np.int64)
        if self.spec.layout == "session":
            with SessionReader(self.path) as reader:
                return reader.read_pixels(ids)
        return read_pvc8(self.path).image_stack(ids).astype(np.float32) / 255.0

    def rates(
        self, stimulus_ids: np.ndarray, unit_ids: np.ndarray, window_s: tuple[float, float] = (0.05, 0.10)
    ) -> np.ndarray:
        """Exact expected rates (Hz) in ``window_s``, (n_stimuli, n_units), for the given unit ids."""
        column = {int(u): i for i, u in enumerate(self.population.unit_ids)}
        missing = [int(u) for u in unit_ids if int(u) not in column]
        if missing:
            raise ClosedLoopError(f"{self.path}: units {missing[:5]} are not in the simulated population")
        rates = self.population.expected_rates(self.stimulus_pixels(stimulus_ids), window_s, self.spec.durations_s[0])
        return rates[:, [column[int(u)] for u in unit_ids]]


def oracle_rates(
    source: str | Path, stimulus_ids: np.ndarray, unit_ids: np.ndarray, window_s: tuple[float, float] = (0.05, 0.10)
) -> np.ndarray | None:
    """The simulator's exact rates for these stimuli and units, or ``None`` for a real recording.

    A simulated file whose scenario cannot be found (e.g. fitted away from the
    checkout) also gives ``None``, with a log message saying why.
    """
    try:
        truth = ArchiveTruth(source)
    except DataFileError:
        return None  # not a simulated archive: a real recording has no oracle
    except ClosedLoopError as error:
        logger.warning("no oracle for %s: %s", source, error)
        return None
    return truth.rates(stimulus_ids, unit_ids, window_s)
