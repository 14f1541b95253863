"""Model checkpoints: one file per fitted model or ensemble (docs/architecture.md, Files).

The file is ``torch.save`` of a dict of plain data — tensors, numbers, strings, lists
and dicts, no pickled classes — so it loads with ``torch.load(weights_only=True)``
(no code runs on load) and stays readable when the classes change.  Keys:

``format`` (``"closedloop-model"``), ``format_version``, ``config`` (`ModelConfig`
dict), ``build`` (n_units, n_members, input_size), ``state_dict`` (all members,
member on the leading axis of every tensor; a blend of two ensembles, `closedloop.model.blend`,
holds ``first.*`` and ``second.*`` and the per-unit ``first_weight``), ``preprocessing``, ``unit_ids``,
``excluded_units``, ``split``, ``image_ids``, ``metrics`` (filled by the caller),
``model_version``, ``created`` (ISO 8601 UTC), ``closedloop_version``,
``trained_on``, ``rate_statistics`` (per unit: ``mean``, ``std`` and ``percentiles``
0..100 of the mean rates over the fit images, and ``noise_per_hz``, their trials' variance per
Hz, absent in files saved before it), ``fit`` (seconds, epochs, best epochs,
member seeds) and ``history``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import closedloop
from closedloop.data.dataset import ResponseDataset
from closedloop.data.output_files import write_via_temporary
from closedloop.errors import ClosedLoopError, DataFileError
from closedloop.model.device import resolve_device
from closedloop.model.ensemble import rebuild_network
from closedloop.model.given_core import check_core_source
from closedloop.model.model_config import LEGACY_GABOR_WAVELENGTHS, ModelConfig
from closedloop.model.networks import CoreReadoutNetwork, Network
from closedloop.model.split import DataSplit
from closedloop.model.train import ExcludedUnit, FitResult, RateStatistics

FORMAT_NAME = "closedloop-model"
FORMAT_VERSION = 1
REQUIRED_KEYS = (
    "format",
    "format_version",
    "config",
    "build",
    "state_dict",
    "preprocessing",
    "unit_ids",
    "excluded_units",
    "split",
    "image_ids",
    "metrics",
    "model_version",
    "created",
    "closedloop_version",
    "trained_on",
    "rate_statistics",
)


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, on the requested device) and its record."""

    model: Network
    config: ModelConfig
    unit_ids: np.ndarray
    excluded_units: list[ExcludedUnit]
    split: DataSplit
    image_ids: np.ndarray
    preprocessing: dict
    rate_statistics: RateStatistics
    metrics: dict
    model_version: int
    created: str
    closedloop_version: str
    trained_on: str
    fit: dict
    history: dict
    path: str

    @property
    def input_size(self) -> int:
        return int(self.model.build_spec["input_size"])

    def recorded(self, key: str) -> float | None:
        """A number the fit recorded in `metrics` under ``key``; ``None`` when it is missing (a model
        fitted before it was recorded) or not finite (e.g. one network: no spread to judge)."""
        value = self.metrics.get(key) if isinstance(self.metrics, dict) else None
        return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else None


def save_checkpoint(
    path: str | Path, result: FitResult, *, metrics: dict | None = None, model_version: int = 1
) -> Path:
    """Write ``result`` to ``path`` atomically (temporary file, then ``os.replace``).

    Parameters
    ----------
    path
        Destination file (conventionally ``*.pt``); its folder must exist.
    result
        What `closedloop.model.train.fit_model` returned.
    metrics
        Evaluation numbers to store alongside (plain numbers, lists, strings).
    model_version
        The model server's version counter for this model.
    """
    path = Path(path)
    spec = result.model.build_spec
    stats = result.rate_statistics
    record = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": result.config.to_dict(),
        "build": {key: int(spec[key]) for key in ("n_units", "n_members", "input_size")},
        "state_dict": {key: value.detach().cpu().clone() for key, value in result.model.state_dict().items()},
        "preprocessing": dict(result.preprocessing),
        "unit_ids": _saved(result.unit_ids, torch.int64),
        "excluded_units": [{"unit_id": u.unit_id, "reason": u.reason} for u in result.excluded_units],
        "split": result.split.to_dict(),
        "image_ids": _saved(result.image_ids, torch.int64),
        "metrics": _plain(metrics or {}),
        "model_version": int(model_version),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "closedloop_version": closedloop.__version__,
        "trained_on": result.device,
        "rate_statistics": {
            "mean": _saved(stats.mean, torch.float64),
            "std": _saved(stats.std, torch.float64),
            "percentiles": _saved(stats.percentiles, torch.float64),
            **({} if stats.noise_per_hz is None else {"noise_per_hz": _saved(stats.noise_per_hz, torch.float64)}),
        },
        "fit": {
            "seconds": float(result.fit_seconds),
            "epochs_run": int(result.epochs_run),
            "best_epoch": [int(e) for e in result.best_epoch],
            "member_seeds": [int(s) for s in result.member_seeds],
        },
        "history": {key: _saved(value, torch.float64) for key, value in result.history.items()},
    }
    return write_via_temporary(path, lambda temporary: torch.save(record, temporary))


def with_legacy_settings(config: dict) -> dict:
    """A saved model's configuration with the settings it predates at the values it was built with.

    A setting added later defaults to what new fits use; a model saved before it existed was built
    with the old fixed value, and must be rebuilt with that one to match its saved weights.
    """
    if isinstance(config, dict) and "gabor_wavelengths" not in config:
        return dict(config, gabor_wavelengths=list(LEGACY_GABOR_WAVELENGTHS))
    return config


def load_checkpoint(path: str | Path, device: str | torch.device | None = "auto") -> Checkpoint:
    """Load a checkpoint and rebuild its model on ``device`` (`resolve_device`).

    Raises
    ------
    DataFileError
        Missing or unreadable file, not a closedloop checkpoint, missing keys, or a
        format version this program does not read.
    ClosedLoopError
        The requested device is not available.
    """
    path = Path(path)
    torch_device = resolve_device(device)
    if not path.is_file():
        raise DataFileError(path, "no such checkpoint file")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for foreign files
        raise DataFileError(
            path, f"not a closedloop model checkpoint (torch.load failed: {type(error).__name__}: {error})"
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT_NAME:
        raise DataFileError(path, f"not a closedloop model checkpoint (no format '{FORMAT_NAME}' marker)")
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise DataFileError(path, f"checkpoint is incomplete: missing {', '.join(missing)}")
    if record["format_version"] != FORMAT_VERSION:
        raise DataFileError(
            path,
            f"checkpoint format version {record['format_version']} is not supported (this closedloop "
            f"{closedloop.__version__} reads version {FORMAT_VERSION}); refit or use a matching closedloop",
        )
    try:
        build = record["build"]
        record["config"] = with_legacy_settings(record["config"])
        model = rebuild_network(dict(build, config=record["config"]))
        model.load_state_dict(record["state_dict"])
        stats = record["rate_statistics"]
        checkpoint = Checkpoint(
            model=model.to(torch_device).eval(),
            config=ModelConfig.from_dict(record["config"], source=str(path)),
            unit_ids=record["unit_ids"].numpy().astype(np.int64),
            excluded_units=[ExcludedUnit(int(u["unit_id"]), str(u["reason"])) for u in record["excluded_units"]],
            split=DataSplit.from_dict(record["split"]),
            image_ids=record["image_ids"].numpy().astype(np.int64),
            preprocessing=dict(record["preprocessing"]),
            rate_statistics=RateStatistics(
                stats["mean"].numpy(),
                stats["std"].numpy(),
                stats["percentiles"].numpy(),
                stats["noise_per_hz"].numpy() if "noise_per_hz" in stats else None,  # saved before it was
            ),
            metrics=record["metrics"],
            model_version=int(record["model_version"]),
            created=str(record["created"]),
            closedloop_version=str(record["closedloop_version"]),
            trained_on=str(record["trained_on"]),
            fit=record.get("fit", {}),
            history={key: value.numpy() for key, value in record.get("history", {}).items()},
            path=str(path),
        )
    except ClosedLoopError as error:
        raise DataFileError(path, f"checkpoint has an invalid model configuration: {error}") from None
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise DataFileError(path, f"checkpoint is damaged: {type(error).__name__}: {error}") from None
    if checkpoint.unit_ids.shape[0] != model.n_units:
        raise DataFileError(
            path, f"checkpoint lists {checkpoint.unit_ids.shape[0]} units for a {model.n_units}-unit model"
        )
    return checkpoint


def check_compatible(checkpoint: Checkpoint, dataset: ResponseDataset) -> np.ndarray:
    """Check that ``checkpoint`` can predict ``dataset``'s units from its images.

    Returns
    -------
    numpy.ndarray
        For each model output unit, its column (position) in ``dataset``.

    Raises
    ------
    ClosedLoopError
        Preprocessing or image size differ, or model units are missing from the dataset.
    """
    where = f"{checkpoint.path} vs {dataset.source}"
    data_preprocessing = dataset.preprocessing.to_dict()
    if checkpoint.preprocessing != data_preprocessing:
        raise ClosedLoopError(
            f"{where}: preprocessing differs (model {checkpoint.preprocessing}, data {data_preprocessing}); "
            "refit the model on this data or preprocess the data the same way"
        )
    side = dataset.images.shape[-1]
    if side != checkpoint.input_size or dataset.images.shape[-2] != checkpoint.input_size:
        raise ClosedLoopError(
            f"{where}: images are {dataset.images.shape[-2]}×{side}, the model takes "
            f"{checkpoint.input_size}×{checkpoint.input_size}"
        )
    columns = {int(unit): index for index, unit in enumerate(dataset.unit_ids)}
    missing = [int(u) for u in checkpoint.unit_ids if int(u) not in columns]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" …" if len(missing) > 10 else "")
        raise ClosedLoopError(
            f"{where}: {len(missing)} model unit(s) are not in the data (ids {shown}); "
            "was the model fitted on another session or spike sorting?"
        )
    return np.asarray([columns[int(u)] for u in checkpoint.unit_ids], dtype=np.int64)


def _saved(values: Any, dtype: torch.dtype) -> torch.Tensor:
    """A tensor copy of ``values`` (arrays that come back from another process may be read-only)."""
    return torch.tensor(np.asarray(values), dtype=dtype)


def _plain(value: Any) -> Any:
    """Metrics → types that ``torch.load(weights_only=True)`` accepts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return torch.as_tensor(value)
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    raise TypeError(f"metric value of type {type(value).__name__} cannot be stored in a checkpoint")


def load_core(path: str, config: ModelConfig, input_size: int) -> CoreReadoutNetwork:
    """The network of the model file at ``path``, checked to hold a core ``config`` can use.

    Raises
    ------
    DataFileError
        Missing, damaged or foreign file.
    ClosedLoopError
        Not a CNN, or a core unlike ``config``'s (`check_core_source`).
    """
    model = load_checkpoint(path, "cpu").model  # a DataFileError names the file itself
    try:
        return check_core_source(model, config, input_size)
    except ClosedLoopError as error:
        raise ClosedLoopError(f"core_from {path}: {error}") from None
