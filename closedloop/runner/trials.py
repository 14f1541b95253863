"""The responses of one good block, as the runner keeps them for the model server."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TrialData:
    """Responses of one good block, kept to (re)send to the model server."""

    block: int
    stimulus_ids: np.ndarray
    rates: np.ndarray  # (n_trials, n_units) Hz
