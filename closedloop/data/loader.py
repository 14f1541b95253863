"""Load any recording this project reads into a `ResponseDataset`, by content, not name."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from closedloop.data.dataset import Preprocessing, ResponseDataset
from closedloop.data.pvc8 import load_pvc8_dataset
from closedloop.data.session_reader import SessionReader
from closedloop.errors import DataFileError

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MAT5_HEADER = b"MATLAB 5.0 MAT-file"


def detect_format(path: str | Path) -> Literal["session", "pvc8"]:
    """``"session"`` for an HDF5 file, ``"pvc8"`` for a MATLAB v5 file, judged by content.

    Raises
    ------
    DataFileError
        If the file is missing, a MATLAB v7.3 file, or neither format.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            head = file.read(520)
    except FileNotFoundError:
        raise DataFileError(path, "does not exist") from None
    except OSError as error:
        raise DataFileError(path, f"cannot be read ({error})") from None
    if head.startswith(b"MATLAB 7.3") or head[512:520] == _HDF5_SIGNATURE:
        raise DataFileError(
            path, "is a MATLAB v7.3 (HDF5) file; pvc-8 files are MATLAB v5 (re-save with -v7)"
        )
    if head.startswith(_HDF5_SIGNATURE):
        return "session"
    if head.startswith(_MAT5_HEADER):
        return "pvc8"
    raise DataFileError(
        path, "is neither a closedloop session (HDF5) nor a pvc-8 recording (MATLAB v5 .mat)"
    )


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
