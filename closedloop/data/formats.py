"""Tell the recording formats apart by their first bytes, not their names."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from closedloop.errors import DataFileError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAT5_HEADER = b"MATLAB 5.0 MAT-file"
#: Bytes read: a MATLAB header is 128 bytes; v7.3 files carry the HDF5 signature at 512.
HEAD_BYTES = 520


def read_head(path: Path) -> bytes:
    """The first `HEAD_BYTES` of ``path``, with a clear error if it cannot be read."""
    try:
        with open(path, "rb") as file:
            return file.read(HEAD_BYTES)
    except FileNotFoundError:
        raise DataFileError(path, "does not exist") from None
    except OSError as error:
        raise DataFileError(path, f"cannot be read ({error})") from None


def detect_format(path: str | Path) -> Literal["session", "pvc8"]:
    """``"session"`` for an HDF5 file, ``"pvc8"`` for a MATLAB v5 file, judged by content.

    Raises
    ------
    DataFileError
        If the file is missing, a MATLAB v7.3 file, or neither format.
    """
    path = Path(path)
    head = read_head(path)
    reject_matlab_v73(path, head)
    if head.startswith(HDF5_SIGNATURE):
        return "session"
    if head.startswith(MAT5_HEADER):
        return "pvc8"
    raise DataFileError(path, "is neither a closedloop session (HDF5) nor a pvc-8 recording (MATLAB v5 .mat)")


def reject_matlab_v73(path: Path, head: bytes) -> None:
    """MATLAB v7.3 files are HDF5 inside; say so rather than misreading them as sessions."""
    if head.startswith(b"MATLAB 7.3") or head[512:520] == HDF5_SIGNATURE:
        raise DataFileError(
            path,
            "is a MATLAB v7.3 (HDF5) file; pvc-8 files are MATLAB v5: re-save it in "
            "MATLAB with save(..., '-v7') or use the original CRCNS file",
        )
