"""Load any recording this project reads into a `ResponseDataset`, by content, not name."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from closedloop.data.dataset import Preprocessing, ResponseDataset
from closedloop.data.formats import detect_format
from closedloop.data.pvc8 import load_pvc8_dataset
from closedloop.data.session_reader import SessionReader


def load_dataset(
    path: str | Path,
    *,
    preprocessing: Preprocessing = Preprocessing(),
    window_s: tuple[float, float] | None = None,
    units: Literal["indcent", "all"] = "indcent",
) -> ResponseDataset:
    """Load a session file or a pvc-8 file for fitting.

    Parameters
    ----------
    path
        A session ``.h5`` or a pvc-8 ``.mat``; the format is read from the file's first bytes.
    preprocessing
        Downsampling and crop of the images.
    window_s
        Response window after onset; ``None`` means the session's stored window, or
        50–100 ms for pvc-8 (as Kindel et al.).
    units
        pvc-8 only: ``"indcent"`` keeps units with INDCENT == 1, ``"all"`` keeps all.
        Session files always give all units.
    """
    if detect_format(path) == "pvc8":
        return load_pvc8_dataset(path, preprocessing, window_s or (0.05, 0.10), units)
    with SessionReader(path) as reader:
        return reader.to_dataset(preprocessing, window_s)
