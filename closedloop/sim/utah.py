"""Layout of a 10 × 10 Utah array: 96 recording channels (the four corners unused), 400 µm pitch.

Channels are numbered 0..95 row by row from the top-left, skipping the corners.
Positions are in µm relative to the array centre, x to the right and y up.
"""

from __future__ import annotations

import numpy as np

GRID_SIDE = 10
PITCH_UM = 400.0
N_CHANNELS = GRID_SIDE * GRID_SIDE - 4


def channel_grid_positions() -> np.ndarray:
    """(96, 2) int (row, column) of each channel on the 10 × 10 grid."""
    corners = {(0, 0), (0, GRID_SIDE - 1), (GRID_SIDE - 1, 0), (GRID_SIDE - 1, GRID_SIDE - 1)}
    cells = [(r, c) for r in range(GRID_SIDE) for c in range(GRID_SIDE) if (r, c) not in corners]
    return np.array(cells, dtype=np.int64)


def channel_positions_um() -> np.ndarray:
    """(96, 2) float64 (x, y) of each channel in µm from the array centre."""
    grid = channel_grid_positions()
    centre = (GRID_SIDE - 1) / 2.0
    x = (grid[:, 1] - centre) * PITCH_UM
    y = (centre - grid[:, 0]) * PITCH_UM
    return np.stack([x, y], axis=1)


def assign_channels(n_units: int, rng: np.random.Generator) -> np.ndarray:
    """Spread units over channels: distinct channels while they last, then a second round.

    Returns
    -------
    (n_units,) int64 channel indices in 0..95.
    """
    rounds = -(-n_units // N_CHANNELS)
    order = np.concatenate([rng.permutation(N_CHANNELS) for _ in range(max(rounds, 1))])
    return order[:n_units].astype(np.int64)
