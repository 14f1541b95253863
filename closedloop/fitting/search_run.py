"""Run a search: trials in parallel on an executor, each written as it finishes, resumable.

Layout of the search folder (``OUT/search``)::

    search.json          what the search is (tuning session, seed, sampler, space, base settings)
    trials/0003/         one folder per finished trial, renamed into place complete:
        trial.json       its configuration, score, stopping-score curve, time (or why it failed / was pruned)
        model.pt         its fitted model (a checkpoint; not for failed or pruned trials)
    results.csv          every finished trial, best first (rewritten after each one)
    best.yaml            the best configuration so far, as a model file for ``fit --config``

A search started again on the same folder with the same settings (the seed is taken
from ``search.json`` when not given) skips the trials already there and runs the rest;
asking for more trials than before extends it.  Settings that would make the finished
trials mean something else (another tuning session, seed, sampler, space or base
configuration) are refused.

With ``SearchPlan.fuse`` the trials of one network shape train as one fused training
per group (`closedloop.fitting.search_fused`); each trial is still written when its
group finishes, and a resumed search groups the trials it has left.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

from closedloop.data.dataset import ResponseDataset
from closedloop.errors import ClosedLoopError, DataFileError
from closedloop.fitting.executors import WorkerLost
from closedloop.fitting.model_files import write_config_yaml
from closedloop.fitting.search import (
    PruningPlan,
    SearchResult,
    TrialResult,
    fit_images_only,
    rank,
    run_trial,
    write_results_csv,
)
from closedloop.fitting.search_fused import Drawn, fusion_groups, run_trial_group
from closedloop.fitting.search_space import SearchSpace, make_sampler
from closedloop.jsonsafe import json_safe
from closedloop.model.model_config import ModelConfig, describe_stop_score

SEARCH_FORMAT = "closedloop-search"
SEARCH_VERSION = 1
MANIFEST, TRIALS, TRIAL_FILE, TRIAL_MODEL = "search.json", "trials", "trial.json", "model.pt"
BEST_FILE, RESULTS_FILE = "best.yaml", "results.csv"
#: Keys of search.json that must match for finished trials to count in a resumed search.
_IDENTITY = ("tuning", "units", "seed", "sampler", "space", "base")


@dataclass(frozen=True)
class SearchPlan:
    """Everything that defines a search (and, but for ``n_trials``/``pruner``/``device``, its trials).

    ``fuse``: trials of one network shape train together (`closedloop.fitting.search_fused`);
    the same trials, to rounding, so a search may be resumed with or without it.
    """

    tuning: str
    n_trials: int
    seed: int
    base: ModelConfig
    space: SearchSpace
    sampler: str = "random"
    pruner: str = "none"
    units: str = "indcent"
    device: str = "cpu"
    fuse: bool = False

    def __post_init__(self) -> None:
        if self.fuse and self.pruner != "none":
            raise ClosedLoopError(
                "--fuse-trials trains a group's trials to their ends together, so no single trial can be "
                "pruned: leave out --pruner or --fuse-trials"
            )

    def manifest(self) -> dict[str, Any]:
        return {
            "format": SEARCH_FORMAT,
            "version": SEARCH_VERSION,
            "tuning": self.tuning,
            "units": self.units,
            "seed": self.seed,
            "sampler": self.sampler,
            "space": self.space.to_dict(),
            "base": self.base.replace(seed=None).to_dict(),
            "n_trials": self.n_trials,
            "pruner": self.pruner,
            "fuse_trials": self.fuse,
        }


def previous_seed(folder: Path) -> int | None:
    """The seed of the search already in ``folder`` (to resume without --seed), if any."""
    record = _read_manifest(folder)
    return None if record is None else int(record["seed"])


def _read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataFileError(
            path, f"cannot read the search record ({error}); remove the folder to start afresh"
        ) from None
    if not isinstance(record, dict) or record.get("format") != SEARCH_FORMAT or not isinstance(record.get("seed"), int):
        raise DataFileError(path, "not a closedloop search record; use another --out folder")
    return record


def _check_same_search(folder: Path, plan: SearchPlan) -> bool:
    """True when ``folder`` holds this search already; raises when it holds another one."""
    record = _read_manifest(folder)
    if record is None:
        return False
    wanted = plan.manifest()
    differing = [key for key in _IDENTITY if record.get(key) != wanted[key]]
    if differing:
        raise ClosedLoopError(
            f"{folder} holds a search with other settings ({', '.join(differing)} differ); its finished trials "
            "would not be comparable: use another --out folder, or the same settings to resume it"
        )
    return True


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(json_safe(record), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def finished_trials(folder: Path) -> dict[int, TrialResult]:
    """Trials already written in ``folder/trials`` (unreadable leftovers are skipped and said)."""
    found: dict[int, TrialResult] = {}
    for path in sorted((folder / TRIALS).glob(f"*/{TRIAL_FILE}")):
        try:
            trial = TrialResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as error:
            print(f"search: ignoring {path} ({error}); that trial runs again", file=sys.stderr)
            continue
        found[trial.index] = trial
    return found


def _write_trial(folder: Path, trial: TrialResult, fitted) -> Path:
    """Write ``trials/NNNN/`` through a staging folder, so a kill never leaves half a trial."""
    # torch only when a trial is written, not to plan or resume a search
    from closedloop.model.checkpoint import save_checkpoint

    final = folder / TRIALS / f"{trial.index:04d}"
    staging = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if fitted is not None:
            fitted.unit_ids = fitted.unit_ids.copy()  # from Ray's object store: read-only, torch warns
            save_checkpoint(staging / TRIAL_MODEL, fitted, metrics={"val_r": trial.val_r, "val_loss": trial.val_loss})
        _write_json(staging / TRIAL_FILE, trial.to_dict())
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataFileError(
            final, f"cannot write the trial ({error.strerror or error}); check the --out folder"
        ) from None
    return final


def _write_summary(folder: Path, plan: SearchPlan, trials: list[TrialResult]) -> SearchResult:
    result = SearchResult(sorted(trials, key=rank), plan.seed, plan.tuning, plan.space)
    write_results_csv(folder / RESULTS_FILE, result)
    if result.trials[0].scored:
        best = result.trials[0]
        write_config_yaml(
            folder / BEST_FILE,
            best.config,
            comment=(
                f"Best of {len(trials)} finished trials ({plan.sampler} search) on {plan.tuning} "
                f"(split seed {plan.seed}): trial {best.index}.\n"
                f"Validation r {best.val_r:.4f}, validation loss {best.val_loss:.4f}.\n"
                "Use with: closedloop fit ARCHIVE... --config THIS_FILE"
            ),
        )
    return result


def _describe(trial: TrialResult) -> str:
    if trial.status == "failed":
        return f"FAILED: {trial.error}"
    if trial.status == "pruned":
        return f"pruned at epoch {trial.epochs} ({describe_stop_score(trial.stop_loss, trial.config)})"
    return f"validation r {trial.val_r:.3f}, {trial.epochs} epochs"


def run_search(
    plan: SearchPlan,
    dataset: ResponseDataset,
    folder: Path,
    executor,
    *,
    slots: int,
    log: Callable[[str], None] | None = None,
) -> SearchResult:
    """Run the trials of ``plan`` that ``folder`` does not hold yet, ``slots`` at a time.

    Parameters
    ----------
    plan
        The search.
    dataset
        The tuning session (whole; its test images are removed here).
    folder
        The search folder (created); see the module docstring.
    executor
        `closedloop.fitting.executors.LocalExecutor` or ``RayExecutor``.
    slots
        Trials in flight at once (fused groups with ``plan.fuse``).  The sampler and the
        pruner learn from the trials finished before a trial starts, so more slots mean
        less informed draws.
    log
        Called with one line per finished trial (and at start); ``None`` for silence.

    Returns
    -------
    SearchResult
        Every finished trial (this run's and earlier runs'), best first.
    """
    log = log or (lambda line: None)
    resumed = _check_same_search(folder, plan)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / MANIFEST, plan.manifest())
    except OSError as error:
        raise DataFileError(folder, f"cannot create the search folder ({error.strerror or error})") from None
    done = {index: trial for index, trial in finished_trials(folder).items() if index <= plan.n_trials}
    if resumed:
        log(
            f"search: resuming {folder}: {len(done)} of {plan.n_trials} trials already finished, "
            f"{plan.n_trials - len(done)} to run"
        )
    sampler = make_sampler(plan.sampler, plan.base, plan.space, plan.seed, int(dataset.images.shape[-1]))
    for index in sorted(done):
        sampler.tell(index, done[index].params, done[index].val_r if done[index].scored else None)
    shared = executor.share(fit_images_only(dataset, plan.seed))
    todo = [index for index in range(1, plan.n_trials + 1) if index not in done]
    groups: list[list[Drawn]] = []
    if plan.fuse:  # grouping needs every configuration: draw them all now
        groups = fusion_groups([(index, *sampler.next(index)) for index in todo])
        todo = []
        if groups:
            log(f"search: {sum(map(len, groups))} trials in {len(groups)} fused group(s) of one network shape each")
    in_flight: dict[Any, list[Drawn]] = {}
    trials = list(done.values())

    def best_line() -> str:
        scored = sorted((t for t in trials if t.scored), key=rank)
        return f"best so far: trial {scored[0].index}, r {scored[0].val_r:.3f}" if scored else "no score yet"

    while todo or groups or in_flight:
        while (todo or groups) and len(in_flight) < max(1, slots):
            if groups:
                group = groups.pop(0)
                handle = executor.submit(run_trial_group, shared, group, plan.seed, plan.device)
            else:
                index = todo.pop(0)
                params, config = sampler.next(index)
                group = [(index, params, config)]
                pruning = (
                    None
                    if plan.pruner == "none"
                    else PruningPlan(plan.pruner, tuple(t.curve for t in trials if t.status == "ok"))
                )
                handle = executor.submit(run_trial, shared, index, config, plan.seed, plan.device, params, pruning)
            in_flight[handle] = group
        for handle in executor.wait(list(in_flight), timeout=None):
            group = in_flight.pop(handle)
            for trial, fitted in _outcomes(executor, handle, group, plan.fuse):
                _write_trial(folder, trial, fitted)
                trials.append(trial)
                sampler.tell(trial.index, trial.params, trial.val_r if trial.scored else None)
                _write_summary(folder, plan, trials)
                log(
                    f"  trial {trial.index}/{plan.n_trials} ({len(trials)} done): {_describe(trial)} "
                    f"({trial.seconds:.1f} s); {best_line()}"
                )
    if not trials:
        raise ClosedLoopError(f"{folder}: the search has no trials")
    return _write_summary(folder, plan, trials)


def _outcomes(executor, handle, group: list[Drawn], fused: bool) -> list[tuple[TrialResult, Any]]:
    """(trial, fitted model or None) of every trial of a finished task; failed trials when it failed."""
    try:
        outcome = executor.result(handle)
        return list(outcome) if fused else [outcome]
    except (ClosedLoopError, WorkerLost) as error:
        message = str(error)
    except Exception as error:  # a bug in one task must not lose the others
        details = "".join(traceback.format_exception(error)).rstrip()
        indices = ", ".join(str(index) for index, _, _ in group)
        print(f"search: internal error in trial(s) {indices}:\n{details}", file=sys.stderr)
        message = f"internal error: {type(error).__name__}: {error}"
    return [
        (TrialResult(index, config, status="failed", error=message, params=params), None)
        for index, params, config in group
    ]
