"""The stimulus library: synthesized images with their provenance, in one HDF5 file.

Layout (``format = "closedloop-stimulus-library"``, ``format_version = 1``)::

    /images_model     (n, S, S)  float32  the optimised model-resolution images
    /images_display   (n, D, D)  float32  what the presenter shows (nearest-neighbour
                                          upsampling, grey around; see closedloop.synth.canvas)
    /unit_id          (n,) int64          the driven unit
    /target_label     (n,) str            "p20", "max", "12.5hz"
    /target_kind      (n,) str            "percentile" | "max" | "rate"
    /target_value     (n,) float64        the percentile or the rate; NaN for max
    /target_hz        (n,) float64        the resolved rate; NaN for max
    /achieved_hz      (n,) float64        the model's prediction for the driven unit
    /spread_hz        (n,) float64        the ensemble members' std for it (how sure; NaN if unknown)
    /start_image_id   (n,) int64          the fitted image it started from; -1: the blank screen
    /converged        (n,) bool           within tolerance of target (and held baselines)
    /steps            (n,) int64          optimisation steps run
    /seed             (n,) int64          the image's noise seed
    /model_version    (n,) int64
    /held             (n, U) bool         which model units were held at baseline
    /hold_hz          (n, U) float64      their baseline (NaN where not held)
    /predictions_hz   (n, U) float64      the model's prediction of every model unit
    /predictions_spread_hz (n, U) float64 the members' std for every model unit
    /model_unit_ids   (U,) int64

Attributes: ``model_path``, ``model_version``, ``model_created``, ``created``,
``closedloop_version``, ``device``, ``seconds``, ``run_seed``, and JSON texts
``settings``, ``canvas`` (with the contrast bound used) and ``extra`` (where the
bound came from, units skipped for a low held-out r).  ``spread_hz`` and
``predictions_spread_hz`` were added later: libraries without them read as NaN; so was
``start_image_id``: without it every image reads as started from the blank screen (-1), as
they all did then.  The
writer writes a temporary file and renames it, so a library on disk is always complete.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

import closedloop
from closedloop.data.output_files import write_via_temporary
from closedloop.errors import DataFileError
from closedloop.synth.optimise import SynthesisResult
from closedloop.synth.starts import BLANK

FORMAT_NAME = "closedloop-stimulus-library"
FORMAT_VERSION = 1
_ROW_COLUMNS = (
    "unit_id",
    "target_label",
    "target_kind",
    "target_value",
    "target_hz",
    "achieved_hz",
    "converged",
    "steps",
    "seed",
    "model_version",
)
_UNIT_COLUMNS = ("held", "hold_hz", "predictions_hz")
#: Columns added after the first libraries were written, and what a missing one reads as.
_OPTIONAL_ROW_COLUMNS = {"spread_hz": np.nan, "start_image_id": BLANK}
_OPTIONAL_UNIT_COLUMNS = {"predictions_spread_hz": np.nan}


@dataclass
class StimulusLibrary:
    """A read stimulus library; arrays have one row per image (see the module doc)."""

    path: str
    images_model: np.ndarray
    images_display: np.ndarray
    columns: dict[str, np.ndarray]
    model_unit_ids: np.ndarray
    attrs: dict

    def __len__(self) -> int:
        return int(self.images_model.shape[0])

    def __getattr__(self, name: str) -> np.ndarray:
        columns = self.__dict__.get("columns", {})
        if name in columns:
            return columns[name]
        raise AttributeError(name)

    @property
    def gap_hz(self) -> np.ndarray:
        return self.columns["achieved_hz"] - self.columns["target_hz"]

    def session_provenance(self) -> dict[str, np.ndarray]:
        """Keyword arguments for ``SessionWriter.add_stimuli(..., "synthesized", **these)``."""
        return {name: self.columns[name] for name in ("unit_id", "target_hz", "model_version", "seed", "achieved_hz")}


def write_library(
    path: str | Path,
    result: SynthesisResult,
    *,
    unit_ids: np.ndarray,
    model_path: str,
    model_version: int,
    model_created: str = "",
    run_seed: int = 0,
) -> Path:
    """Write ``result`` as a stimulus library at ``path`` (atomically).

    Parameters
    ----------
    path
        Destination ``.h5``; its folder is created.
    result
        What `closedloop.synth.optimise.synthesize` returned.
    unit_ids
        The model's unit ids, in output order (job units are output columns).
    model_path, model_version, model_created
        Which model made the images.
    run_seed
        The seed the run was given (each image's own seed is in ``/seed``).
    """
    path = Path(path)
    unit_ids = np.asarray(unit_ids, dtype=np.int64)
    jobs = result.jobs
    n, n_units = len(jobs), unit_ids.size
    held = np.zeros((n, n_units), dtype=bool)
    hold_hz = np.full((n, n_units), np.nan)
    for row, job in enumerate(jobs):
        held[row, list(job.hold)] = True
        hold_hz[row, list(job.hold)] = job.hold_hz
    columns = {
        "unit_id": unit_ids[[job.unit for job in jobs]],
        "target_label": np.asarray([job.label for job in jobs], dtype=object),
        "target_kind": np.asarray([job.target.kind for job in jobs], dtype=object),
        "target_value": np.asarray([np.nan if job.target.value is None else job.target.value for job in jobs]),
        "target_hz": result.target_hz.astype(np.float64),
        "achieved_hz": result.achieved_hz.astype(np.float64),
        "converged": result.converged.astype(bool),
        "steps": result.steps.astype(np.int64),
        "seed": result.seeds.astype(np.int64),
        "model_version": np.full(n, int(model_version), dtype=np.int64),
        "held": held,
        "hold_hz": hold_hz,
        "predictions_hz": result.predictions.astype(np.float64),
        "spread_hz": (np.full(n, np.nan) if result.spread_hz is None else result.spread_hz.astype(np.float64)),
        "start_image_id": (
            np.full(n, BLANK, dtype=np.int64)
            if result.start_image_ids is None
            else result.start_image_ids.astype(np.int64)
        ),
        "predictions_spread_hz": (
            np.full((n, n_units), np.nan)
            if result.predictions_spread is None
            else result.predictions_spread.astype(np.float64)
        ),
    }
    attrs = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "closedloop_version": closedloop.__version__,
        "model_path": str(model_path),
        "model_version": int(model_version),
        "model_created": str(model_created),
        "device": result.device,
        "seconds": float(result.seconds),
        "run_seed": int(run_seed),
        "settings": json.dumps(result.settings.to_dict()),
        "canvas": json.dumps(result.canvas.to_dict()),
        "extra": json.dumps(result.extra, default=str),
    }
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(temporary: Path) -> None:
        with h5py.File(temporary, "w") as file:
            file.create_dataset("images_model", data=result.images.astype(np.float32), compression="gzip")
            file.create_dataset("images_display", data=result.canvas.to_display(result.images), compression="gzip")
            file.create_dataset("model_unit_ids", data=unit_ids)
            for name, values in columns.items():
                if values.dtype == object:
                    file.create_dataset(name, data=values.astype(str).astype(object), dtype=h5py.string_dtype())
                else:
                    file.create_dataset(name, data=values)
            file.attrs.update(attrs)

    return write_via_temporary(path, write)


def read_library(path: str | Path) -> StimulusLibrary:
    """Read a stimulus library written by `write_library`.

    Raises
    ------
    DataFileError
        Missing file, not HDF5, not a stimulus library, an unsupported version, or
        missing or inconsistent datasets.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, "no such stimulus library file")
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise DataFileError(path, f"not an HDF5 file ({error})") from None
    with file:
        attrs = {key: _plain(value) for key, value in file.attrs.items()}
        if attrs.get("format") != FORMAT_NAME:
            raise DataFileError(
                path,
                f"not a closedloop stimulus library (no format '{FORMAT_NAME}' marker); "
                "make one with `closedloop synth`",
            )
        if attrs.get("format_version") != FORMAT_VERSION:
            raise DataFileError(
                path,
                f"stimulus library version {attrs.get('format_version')} is not supported "
                f"(this closedloop reads version {FORMAT_VERSION})",
            )
        wanted = ("images_model", "images_display", "model_unit_ids") + _ROW_COLUMNS + _UNIT_COLUMNS
        missing = [name for name in wanted if name not in file]
        if missing:
            raise DataFileError(path, f"stimulus library is incomplete: missing {', '.join(missing)}")
        try:
            data = {name: file[name][()] for name in wanted}
            n_rows, n_model_units = file["images_model"].shape[0], file["model_unit_ids"].shape[0]
            for name, shape, fill in [(c, (n_rows,), v) for c, v in _OPTIONAL_ROW_COLUMNS.items()] + [
                (c, (n_rows, n_model_units), v) for c, v in _OPTIONAL_UNIT_COLUMNS.items()
            ]:
                data[name] = file[name][()] if name in file else np.full(shape, fill)
        except (OSError, ValueError, KeyError) as error:
            raise DataFileError(path, f"stimulus library is damaged: {error}") from None
    for name in ("target_label", "target_kind"):
        data[name] = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in data[name]], dtype=object)
    n = data["images_model"].shape[0]
    every = _ROW_COLUMNS + _UNIT_COLUMNS + tuple(_OPTIONAL_ROW_COLUMNS) + tuple(_OPTIONAL_UNIT_COLUMNS)
    bad = [name for name in ("images_display",) + every if data[name].shape[0] != n]
    if bad or data["images_model"].ndim != 3 or data["held"].shape[1:] != data["model_unit_ids"].shape:
        raise DataFileError(
            path, f"stimulus library is inconsistent: {', '.join(bad) or 'array shapes'} do not match {n} images"
        )
    return StimulusLibrary(
        path=str(path),
        images_model=data["images_model"].astype(np.float32),
        images_display=data["images_display"].astype(np.float32),
        columns={name: data[name] for name in every},
        model_unit_ids=data["model_unit_ids"].astype(np.int64),
        attrs=attrs,
    )


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
