"""The pvc-8 format (CRCNS; Coen-Cagli, Kohn & Schwartz 2015) in one place.

One MATLAB v5 file per session with ``resp_train`` (units × stimuli × repeats × T,
uint8 spike counts in 1 ms bins from onset), ``resp_train_blk`` (the blank after each
stimulus), ``images`` (a 1 × N cell of 320 × 320 uint8) and ``INDCENT`` (units × 1,
1 = receptive field well centred).  Stimulus index layout (0-based): the first
``n_natural`` (540 in the real files) are natural images, small at even and large at
odd indices; then 128 spatial-frequency gratings, 64 orientation gratings
(4 phases × 16 orientations, phase fastest, 90° down in 11.25° steps) and 224 size
gratings.  Units are named by their 1-based row in the file.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Literal
from collections.abc import Sequence

import numpy as np
import scipy.io

from closedloop.data.dataset import GratingResponses, Preprocessing, ResponseDataset
from closedloop.data.formats import MAT5_HEADER, read_head, reject_matlab_v73
from closedloop.data.preprocess import preprocess
from closedloop.data.responses import counts_to_rates, window_counts_from_bins
from closedloop.errors import DataFileError

BIN_S = 0.001
IMAGE_SIZE = 320
N_SF_GRATINGS, N_ORIENTATION_GRATINGS, N_SIZE_GRATINGS = 128, 64, 224
N_GRATINGS = N_SF_GRATINGS + N_ORIENTATION_GRATINGS + N_SIZE_GRATINGS  # 416
N_PHASES = 4
ORIENTATIONS_DEG = 90.0 - 11.25 * np.arange(N_ORIENTATION_GRATINGS // N_PHASES)
REQUIRED = ("resp_train", "images", "INDCENT")
#: Largest variable read, in elements (pvc-8's largest, resp_train_blk, has ~0.5 G); a
#: compressed variable that declares more is refused before it is inflated.
MAX_ELEMENTS = 2**32


def natural_count(n_stimuli: int) -> int:
    """Number of natural images for a file with ``n_stimuli`` stimuli (540 in real files)."""
    n_natural = n_stimuli - N_GRATINGS
    if n_natural <= 0 or n_natural % 2:
        raise ValueError(
            f"{n_stimuli} stimuli: pvc-8 files have an even, positive number of natural "
            f"images followed by {N_GRATINGS} gratings (956 stimuli in the real files)"
        )
    return n_natural


def write_pvc8(
    path: str | Path,
    *,
    resp_train: np.ndarray,
    resp_train_blk: np.ndarray,
    images: Sequence[np.ndarray] | np.ndarray,
    indcent: np.ndarray,
    extra: dict[str, np.ndarray | str] | None = None,
) -> None:
    """Write a MATLAB v5 file with the variables, shapes and dtypes of a real pvc-8 file.

    Parameters
    ----------
    resp_train
        (n_units, n_stimuli, n_repeats, T) uint8, n_stimuli = n_natural + 416.
    resp_train_blk
        (n_units, n_stimuli, n_repeats, T_blank) uint8.
    images
        n_stimuli images of 320 × 320 uint8 (a sequence or an (n, 320, 320) array).
    indcent
        (n_units,) 1 where the receptive field is well centred; stored as units × 1.
    extra
        More variables to store as they are (e.g. ``P_HOMOG``; a string becomes a char array).
    """
    resp_train, resp_train_blk = np.asarray(resp_train), np.asarray(resp_train_blk)
    for name, array in (("resp_train", resp_train), ("resp_train_blk", resp_train_blk)):
        if array.dtype != np.uint8 or array.ndim != 4:
            raise ValueError(f"{name} must be 4-D uint8, got {array.dtype} {array.shape}")
    n_units, n_stimuli, n_repeats, _ = resp_train.shape
    natural_count(n_stimuli)
    if resp_train_blk.shape[:3] != resp_train.shape[:3]:
        raise ValueError(f"resp_train_blk {resp_train_blk.shape} does not match resp_train {resp_train.shape}")
    if len(images) != n_stimuli:
        raise ValueError(f"{len(images)} images for {n_stimuli} stimuli")
    cell = np.empty((1, n_stimuli), dtype=object)
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.shape != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"image {i} must be {IMAGE_SIZE}x{IMAGE_SIZE} uint8, got {image.dtype} {image.shape}")
        cell[0, i] = image
    indcent = np.asarray(indcent)
    if indcent.size != n_units:
        raise ValueError(f"indcent has {indcent.size} values for {n_units} units")
    variables = dict(extra or {})
    variables.update(
        resp_train=resp_train,
        resp_train_blk=resp_train_blk,
        images=cell,
        INDCENT=indcent.reshape(n_units, 1).astype(np.float64),
    )
    scipy.io.savemat(str(path), variables, do_compression=True, format="5")


class Pvc8Recording:
    """One pvc-8 session: trains, images and unit flags, with the stimulus layout.

    Create it with `read_pvc8`.  Trains stay uint8; counts are taken per window on demand.
    """

    def __init__(
        self,
        path: Path,
        resp_train: np.ndarray,
        images: np.ndarray,
        indcent: np.ndarray,
        resp_train_blk: np.ndarray | None = None,
    ) -> None:
        self.path = path
        self.resp_train = resp_train
        self.resp_train_blk = resp_train_blk
        self.images = images  # (n_stimuli,) object array of 320 × 320 uint8
        self.indcent = indcent
        self.n_units, self.n_stimuli, self.n_repeats, self.n_bins = resp_train.shape
        self.n_natural = natural_count(self.n_stimuli)

    @property
    def unit_ids(self) -> np.ndarray:
        """(n_units,) int64 1-based row numbers, the way the paper names units."""
        return np.arange(1, self.n_units + 1, dtype=np.int64)

    @property
    def centred_units(self) -> np.ndarray:
        """Positions of units with INDCENT == 1."""
        return np.flatnonzero(self.indcent == 1)

    def selected_units(self, units: str) -> np.ndarray:
        """Positions of the units to use: ``"indcent"`` (INDCENT == 1, as the paper) or ``"all"``.

        Raises
        ------
        DataFileError
            ``"indcent"`` and no unit has INDCENT == 1.
        ValueError
            ``units`` is neither.
        """
        if units == "indcent":
            if self.centred_units.size == 0:
                raise DataFileError(self.path, "no unit has INDCENT == 1; use units 'all' (--units all)")
            return self.centred_units
        if units == "all":
            return np.arange(self.n_units)
        raise ValueError(f"units must be 'indcent' or 'all', got {units!r}")

    @property
    def natural_small_indices(self) -> np.ndarray:
        return np.arange(0, self.n_natural, 2)

    @property
    def natural_large_indices(self) -> np.ndarray:
        return np.arange(1, self.n_natural, 2)

    @property
    def sf_grating_indices(self) -> np.ndarray:
        return self.n_natural + np.arange(N_SF_GRATINGS)

    @property
    def orientation_grating_indices(self) -> np.ndarray:
        """(64,) indices, phase fastest: index ``4*k + p`` shows ORIENTATIONS_DEG[k], phase p."""
        return self.n_natural + N_SF_GRATINGS + np.arange(N_ORIENTATION_GRATINGS)

    @property
    def size_grating_indices(self) -> np.ndarray:
        return self.n_natural + N_SF_GRATINGS + N_ORIENTATION_GRATINGS + np.arange(N_SIZE_GRATINGS)

    def image_stack(self, stimulus_indices: np.ndarray) -> np.ndarray:
        """(n, 320, 320) uint8 images of the given stimuli."""
        indices = np.asarray(stimulus_indices, dtype=np.int64).ravel()
        if indices.size == 0:
            return np.empty((0, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        return np.stack([self.images[i] for i in indices])

    def window_counts(
        self,
        window_s: tuple[float, float] = (0.05, 0.10),
        stimulus_indices: np.ndarray | None = None,
        unit_indices: np.ndarray | None = None,
    ) -> np.ndarray:
        """(n_stimuli, n_repeats, n_units) int64 spike counts in ``[start, stop)`` after onset."""
        return window_counts_from_bins(self.resp_train, window_s, BIN_S, stimulus_indices, unit_indices)

    def trial_rates(
        self,
        window_s: tuple[float, float] = (0.05, 0.10),
        stimulus_indices: np.ndarray | None = None,
        unit_indices: np.ndarray | None = None,
    ) -> np.ndarray:
        """(n_stimuli, n_repeats, n_units) float32 rates in Hz."""
        return counts_to_rates(self.window_counts(window_s, stimulus_indices, unit_indices), window_s)

    def orientation_responses(
        self, window_s: tuple[float, float] = (0.05, 0.10), unit_indices: np.ndarray | None = None
    ) -> GratingResponses:
        """Mean rate per orientation over the 4 phases and all repeats."""
        rates = self.trial_rates(window_s, self.orientation_grating_indices, unit_indices)
        n_orientations = N_ORIENTATION_GRATINGS // N_PHASES
        per_orientation = rates.reshape(n_orientations, N_PHASES * self.n_repeats, -1).mean(axis=1)
        return GratingResponses(ORIENTATIONS_DEG.copy(), per_orientation.astype(np.float32))


def read_pvc8(path: str | Path, load_blank: bool = False) -> Pvc8Recording:
    """Read and check a pvc-8 ``.mat`` file.

    ``resp_train_blk`` (about twice the size of ``resp_train``) is loaded only with
    ``load_blank=True``.

    Raises
    ------
    DataFileError
        If the file is missing, not MATLAB v5 (v7.3 files are HDF5 and are named as
        such), truncated or corrupt, lacks a variable, or has wrong shapes or dtypes.
    """
    path = Path(path)
    _check_header(path)
    try:
        listing = {name: (shape, cls) for name, shape, cls in scipy.io.whosmat(str(path))}
    except Exception as error:  # scipy raises many types for damaged files
        raise DataFileError(path, f"MATLAB file is truncated or corrupt ({error})") from None
    wanted = REQUIRED + (("resp_train_blk",) if load_blank else ())
    missing = [name for name in wanted if name not in listing]
    if missing:
        present = ", ".join(f"{n} {s} {c}" for n, (s, c) in listing.items()) or "nothing"
        raise DataFileError(path, f"not a pvc-8 file: missing {', '.join(missing)}; it holds {present}")
    for name in wanted:
        shape = listing[name][0]
        if int(np.prod(shape, dtype=object)) > MAX_ELEMENTS:
            raise DataFileError(
                path,
                f"{name} declares shape {shape}, more than {MAX_ELEMENTS} values; the file "
                "is corrupt or not a pvc-8 recording",
            )
    try:
        data = scipy.io.loadmat(str(path), variable_names=list(wanted))
    except Exception as error:
        raise DataFileError(path, f"MATLAB file is truncated or corrupt ({error})") from None
    resp_train = _train(path, data, "resp_train")
    n_units, n_stimuli = resp_train.shape[:2]
    try:
        natural_count(n_stimuli)
    except ValueError as error:
        raise DataFileError(path, f"resp_train {resp_train.shape}: {error}") from None
    blank = _train(path, data, "resp_train_blk") if load_blank else None
    if blank is not None and blank.shape[:3] != resp_train.shape[:3]:
        raise DataFileError(path, f"resp_train_blk is {blank.shape}, resp_train {resp_train.shape}")
    images = _images(path, data["images"], n_stimuli)
    indcent = np.asarray(data["INDCENT"])
    if indcent.size != n_units or indcent.dtype.kind not in "biuf":
        raise DataFileError(
            path,
            f"INDCENT is {indcent.dtype} {indcent.shape}, expected {n_units} x 1 numbers (one per unit of resp_train)",
        )
    return Pvc8Recording(path, resp_train, images, indcent.ravel().astype(np.float64), blank)


def load_pvc8_dataset(
    path: str | Path,
    preprocessing: Preprocessing = Preprocessing(),
    window_s: tuple[float, float] = (0.05, 0.10),
    units: Literal["indcent", "all"] = "indcent",
) -> ResponseDataset:
    """The small natural images of a pvc-8 file as a `ResponseDataset` (Kindel et al.).

    Parameters
    ----------
    units
        ``"indcent"`` keeps units with INDCENT == 1 (as the paper did), ``"all"`` keeps all.
    """
    recording = read_pvc8(path)
    unit_indices = recording.selected_units(units)
    image_ids = recording.natural_small_indices
    try:
        trial_rates = recording.trial_rates(window_s, image_ids, unit_indices)
        gratings = recording.orientation_responses(window_s, unit_indices)
    except ValueError as error:
        raise DataFileError(path, str(error)) from None
    return ResponseDataset(
        images=preprocess(recording.image_stack(image_ids), preprocessing),
        trial_rates=trial_rates,
        unit_ids=recording.unit_ids[unit_indices],
        image_ids=image_ids.astype(np.int64),
        source=str(path),
        preprocessing=preprocessing,
        window_s=(float(window_s[0]), float(window_s[1])),
        gratings=gratings,
    )


def _check_header(path: Path) -> None:
    head = read_head(path)
    reject_matlab_v73(path, head)
    if not head.startswith(MAT5_HEADER):
        raise DataFileError(path, "is not a MATLAB v5 MAT-file (no 'MATLAB 5.0 MAT-file' header)")
    _check_complete(path, head)


def _check_complete(path: Path, head: bytes) -> None:
    """Walk the top-level data elements; a cut-off file has one that runs past the end.

    scipy lists the variables of a truncated file without complaint (and only fails,
    if at all, while decompressing), so the element tags are checked here first.
    """
    endian = {b"IM": "<", b"MI": ">"}.get(head[126:128])
    if endian is None:
        raise DataFileError(path, "MATLAB v5 header has no valid byte-order mark; the file is corrupt")
    size = path.stat().st_size
    with open(path, "rb") as file:
        position = 128
        while position < size:
            file.seek(position)
            tag = file.read(8)
            if len(tag) < 8:
                raise DataFileError(path, f"MATLAB file is truncated (ends inside a tag at byte {position})")
            _, n_bytes = struct.unpack(endian + "II", tag)
            position += 8 + n_bytes
            if position > size:
                raise DataFileError(
                    path,
                    f"MATLAB file is truncated or corrupt: a variable needs {position} bytes, the file "
                    f"has {size}; copy or download it again",
                )


def _train(path: Path, data: dict, name: str) -> np.ndarray:
    array = data[name]
    if array.dtype != np.uint8 or array.ndim != 4:
        raise DataFileError(
            path,
            f"{name} is {array.dtype} with shape {array.shape}; pvc-8 stores it as uint8 "
            f"units x stimuli x repeats x time bins",
        )
    return array


def _images(path: Path, cell: np.ndarray, n_stimuli: int) -> np.ndarray:
    if cell.dtype != object or cell.size != n_stimuli or 1 not in cell.shape:
        raise DataFileError(
            path,
            f"images is {cell.dtype} {cell.shape}; expected a 1 x {n_stimuli} cell of images",
        )
    images = cell.ravel()
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != (IMAGE_SIZE, IMAGE_SIZE):
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise DataFileError(path, f"images{{{i + 1}}} is {got}; expected {IMAGE_SIZE}x{IMAGE_SIZE} uint8")
    return images
