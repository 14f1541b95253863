"""Fit one archived session end to end and write its results (docs/methods.md, Model; docs/architecture.md, Files).

Load → fit the CNN (an ensemble when the config asks for one) → fit the linear
baseline on the *same* split and units → held-out metrics → cell characterisation →
``model.pt``, ``metrics.json`` and ``fig3.png`` in ``OUT/<name>/``.

The three files are written into a hidden staging folder next to the destination and
the folder is renamed into place only when all of them exist, so a session that fails
(or a run that is killed) never leaves files that look like a finished fit; an older
complete result in ``OUT/<name>/`` stays as it was until the new one replaces it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from collections.abc import Callable

import numpy as np

import closedloop
from closedloop.data.dataset import ResponseDataset
from closedloop.data.loader import load_dataset
from closedloop.jsonsafe import json_safe
from closedloop.errors import ClosedLoopError, DataFileError
from closedloop.model.cells import characterise, group_summary
from closedloop.model.metrics import heldout_error_over_spread, heldout_interval_sds, heldout_top_ratio
from closedloop.model.model_config import ModelConfig, describe_stop_score
from closedloop.model.report import evaluate, fig3

FIT_FORMAT = "closedloop-fit"
FIT_VERSION = 1
MODEL_FILE, METRICS_FILE, FIGURE_FILE = "model.pt", "metrics.json", "fig3.png"

StageCallback = Callable[[str, float], None]
"""Called as ``stage(description, fraction_done)`` while a session is fitted (0 ≤ fraction ≤ 1)."""


@dataclass(frozen=True)
class FitSettings:
    """How every session of a batch is fitted (picklable: sent to worker processes).

    Attributes
    ----------
    config
        Model configuration (CNN; the linear baseline uses ``architecture="linear"``).
    device
        Resolved device string (``"cpu"``, ``"cuda:0"``).
    seed
        Seed of split, initialisation and rmax draws; ``None`` draws one per session
        (recorded in metrics.json and the checkpoint).
    units
        pvc-8 unit selection: ``"indcent"`` or ``"all"``.
    core_from
        A fitted model file (model.pt) whose core every session's CNN starts from
        (`closedloop.model.given_core`) and trains on, or keeps as it is with ``fixed_core``.
    fixed_core
        Keep that core as it is and fit only each session's readouts.
    """

    config: ModelConfig
    device: str = "cpu"
    seed: int | None = None
    units: Literal["indcent", "all"] = "indcent"
    core_from: str | None = None
    fixed_core: bool = False


@dataclass
class SessionOutcome:
    """What happened to one session (plain data, picklable)."""

    name: str
    source: str
    ok: bool
    error: str | None = None
    folder: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    excluded_units: list[dict[str, Any]] = field(default_factory=list)
    times_s: dict[str, float] = field(default_factory=dict)
    device: str = ""
    seed: int | None = None
    #: The sessions whose units trained this session's core with its own (``--shared-core``).
    shared_core_with: list[str] | None = None


def _timed_sync(device: str) -> float:
    """Wall time after the device finished queued work (CUDA is asynchronous)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)
    return time.perf_counter()


def fit_session(
    path: str | Path, out_dir: str | Path, name: str, settings: FitSettings, stage: StageCallback | None = None
) -> SessionOutcome:
    """Load ``path`` (session .h5 or pvc-8 .mat) and fit it; see `fit_dataset`."""
    stage = stage or (lambda text, fraction: None)
    stage("loading", 0.0)
    started = time.perf_counter()
    dataset = load_dataset(path, units=settings.units)
    load_s = time.perf_counter() - started
    return fit_dataset(dataset, out_dir, name, settings, stage=stage, load_s=load_s)


def fit_dataset(
    dataset: ResponseDataset,
    out_dir: str | Path,
    name: str,
    settings: FitSettings,
    *,
    stage: StageCallback | None = None,
    load_s: float = 0.0,
    cnn=None,
    shared_core_with: list[str] | None = None,
) -> SessionOutcome:
    """Fit CNN and linear baseline to ``dataset``, evaluate, and write ``out_dir/name/``.

    ``cnn``, when given, is this session's CNN already fitted (with ``settings``) as
    part of several sessions fused into one training (`closedloop.fitting.batch`); its
    seed is used, and its ``fit_seconds`` is reported as this session's CNN time.
    ``shared_core_with`` names the sessions whose units trained its core with its own
    (`closedloop.model.shared_core`), recorded in metrics.json.

    Returns
    -------
    SessionOutcome
        ``ok=True`` with the summary numbers; errors are raised, not returned.

    Raises
    ------
    ClosedLoopError
        Too few images, no fittable unit, a configuration that does not fit the
        images, or the output folder cannot be written.  Nothing is left in
        ``out_dir/name`` by a failed fit.
    """
    import secrets

    # torch only to fit: batch.py and the fit command import this module for its settings and outcomes
    from closedloop.model.checkpoint import load_checkpoint
    from closedloop.model.predict import predict, predict_with_spread
    from closedloop.model.train import ExcludedUnitsWarning, fit_model  # torch, as above

    # the simulator, only to score a fit against a simulated archive's truth
    from closedloop.sim.truth import oracle_rates
    from closedloop.synth.contrast import contrast_statistics  # torch (the synth package), as above

    stage = stage or (lambda text, fraction: None)
    seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
    if cnn is not None:
        seed = int(cnn.config.seed)
    times = {"load": load_s}
    device = settings.device

    started = _timed_sync(device)
    with warnings.catch_warnings():
        # The exclusions are reported in metrics.json and the summary, not as warnings.
        warnings.simplefilter("ignore", ExcludedUnitsWarning)
        if cnn is None:
            cnn = fit_model(
                dataset,
                settings.config,
                device=device,
                seed=seed,
                progress=_epoch_progress(settings.config, stage),
                core_from=None if settings.core_from is None else load_checkpoint(settings.core_from, device).model,
                fixed_core=settings.fixed_core,
            )
            times["cnn_fit"] = _timed_sync(device) - started
        else:  # the caller sets this session's share of the fused training
            times["cnn_fit"] = float(cnn.fit_seconds)
        stage("linear baseline", 0.9)
        linear_started = time.perf_counter()
        linear = fit_model(
            dataset,
            ModelConfig(architecture="linear", ridge_alphas=settings.config.ridge_alphas),
            device="cpu",
            seed=seed,
            split=cnn.split,  # the CNN's held-out images (a shared core's split is drawn over every session)
        )
        times["linear_fit"] = time.perf_counter() - linear_started
    if not np.array_equal(linear.unit_ids, cnn.unit_ids):  # same seed → same split → same units
        raise ClosedLoopError(f"{dataset.source}: the linear baseline kept different units than the CNN")

    stage("evaluating", 0.95)
    eval_started = time.perf_counter()
    columns = _columns(dataset, cnn.unit_ids)
    held_out = cnn.split.held_out
    trials = dataset.trial_rates[held_out][:, :, columns]
    # A simulated archive's own simulator, scored the same way: what a perfect model would reach.
    oracle = oracle_rates(dataset.source, dataset.image_ids[held_out], cnn.unit_ids, dataset.window_s)
    prediction, spread = predict_with_spread(cnn.model, dataset.images[held_out])
    report = evaluate(
        prediction,
        trials,
        baseline_pred=predict(linear.model, dataset.images[held_out]),
        unit_ids=cnn.unit_ids,
        seed=seed,
        oracle_pred=oracle,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean over images a unit has no repeat of
        natural_means = dataset.mean_rates[:, columns]
    gratings = dataset.gratings
    cells = characterise(
        natural_means,
        None if gratings is None else gratings.orientations_deg,
        None if gratings is None else gratings.rates[:, columns],
    )
    groups = group_summary(cells.groups, report.r, report.r_linear, report.rmax)
    # How far the ensemble's spread understates its misses where nothing was optimised (1: an honest
    # error bar); synthesis reports it next to each image's spread.
    spread_factor = heldout_error_over_spread(prediction, spread, trials)
    interval = heldout_interval_sds(prediction, spread, trials)
    top_ratio = heldout_top_ratio(prediction, trials)
    times["evaluate"] = time.perf_counter() - eval_started
    times["total"] = load_s + times["cnn_fit"] + times["linear_fit"] + times["evaluate"]

    excluded = [{"unit_id": u.unit_id, "reason": u.reason} for u in cnn.excluded_units]
    record = {
        "format": FIT_FORMAT,
        "version": FIT_VERSION,
        "session": name,
        "source": str(dataset.source),
        "closedloop_version": closedloop.__version__,
        "device": cnn.device,
        "seed": int(seed),
        "config": cnn.config.to_dict(),
        "preprocessing": dataset.preprocessing.to_dict(),
        "window_s": [float(t) for t in dataset.window_s],
        "split": {
            "train": len(cnn.split.train),
            "stop": len(cnn.split.stop),
            "held_out": len(cnn.split.held_out),
            "seed": int(cnn.split.seed),
        },
        "n_units_in_data": int(dataset.n_units),
        "excluded_units": excluded,
        "shared_core": None if shared_core_with is None else {"sessions": list(shared_core_with)},
        "core_from": None
        if settings.core_from is None
        else {"model": settings.core_from, "core": "fixed" if settings.fixed_core else "tuned"},
        "epochs_run": int(cnn.epochs_run),
        "best_epoch": [int(e) for e in cnn.best_epoch],
        "linear_ridge_alpha": float(linear.history["ridge_alpha"][int(linear.best_epoch[0])]),
        "times_s": times,
        "metrics": report.to_dict(),
        "cells": cells.to_dict(),
        "groups": groups,
        # the fit images' RMS contrast: synthesis bounds its images by it by default
        "image_statistics": contrast_statistics(dataset.images[cnn.split.fit]),
        "heldout_error_over_spread": spread_factor if np.isfinite(spread_factor) else None,
        # prediction ± this many √(spread² + se²) held 95 % of the held-out trial means (synth prints it;
        # a loop's first 95 % intervals use it)
        "heldout_interval_sds": interval if np.isfinite(interval) else None,
        # measured / predicted rate at each unit's top-predicted held-out photograph (median): synthesis
        # promises a "max" image its prediction times this
        "heldout_top_ratio": top_ratio if np.isfinite(top_ratio) else None,
    }
    stage("writing", 0.98)
    folder = _write_outputs(Path(out_dir), name, cnn, record, report, cells)
    stage("done", 1.0)
    return SessionOutcome(
        name=name,
        source=str(dataset.source),
        ok=True,
        folder=str(folder),
        summary=report.summary,
        groups=groups,
        excluded_units=excluded,
        times_s=times,
        device=cnn.device,
        seed=int(seed),
        shared_core_with=shared_core_with,
    )


def _epoch_progress(config: ModelConfig, stage: StageCallback):
    """fit_model's progress → fraction of the CNN stage (0..0.9), counting ensemble members.

    Members trained one after another each restart the epoch count; a fused ensemble
    reports once for all.  Either way the fraction only grows.
    """
    state = {"member": 0, "last": 0, "fraction": 0.0}

    def progress(epoch: int, max_epochs: int, best_loss: float) -> None:
        if epoch < state["last"]:
            state["member"] += 1
        state["last"] = epoch
        members = max(config.n_networks, state["member"] + 1)
        done = (state["member"] + epoch / max_epochs) / members
        state["fraction"] = max(state["fraction"], 0.9 * min(done, 1.0))
        stage(f"CNN epoch {epoch} ({describe_stop_score(best_loss, config)})", state["fraction"])

    return progress


def _columns(dataset: ResponseDataset, unit_ids: np.ndarray) -> np.ndarray:
    position = {int(u): i for i, u in enumerate(dataset.unit_ids)}
    return np.asarray([position[int(u)] for u in unit_ids], dtype=np.int64)


#: What of metrics.json the checkpoint carries too (synthesis reads the data back with source and window_s).
CHECKPOINT_RECORD = (
    "metrics",
    "cells",
    "groups",
    "seed",
    "source",
    "window_s",
    "image_statistics",
    "heldout_error_over_spread",
    "heldout_interval_sds",
    "heldout_top_ratio",
)


def _write_outputs(out_dir: Path, name: str, cnn, record: dict, report, cells) -> Path:
    """Write the three files into a staging folder, then swap it in as ``out_dir/name``."""
    from closedloop.model.checkpoint import save_checkpoint  # torch, as in fit_dataset

    final = out_dir / name
    staging = out_dir / f".{name}.partial-{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        record = json_safe(record)
        save_checkpoint(
            staging / MODEL_FILE,
            cnn,
            metrics={key: record[key] for key in CHECKPOINT_RECORD},
        )
        fig3(
            report,
            cells,
            staging / FIGURE_FILE,
            title=f"{name}: {report.n_units} units, mean r {report.summary['mean_r']:.2f}",
        )
        (staging / METRICS_FILE).write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
        _swap_in(staging, final)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataFileError(
            final, f"cannot write the fit results ({error.strerror or error}); check the --out folder is writable"
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def _swap_in(staging: Path, final: Path) -> None:
    """Replace ``final`` by ``staging`` with renames only (a folder cannot be os.replace'd over)."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
