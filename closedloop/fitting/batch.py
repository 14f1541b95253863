"""Fit many archived sessions in parallel worker processes, with progress bars.

Workers are started with the ``spawn`` method (no forked torch/CUDA state) and split
the CPU cores between them (`torch.set_num_threads`).  Each worker reports its stage
through a queue that the parent turns into one tqdm bar per session.  A session that
fails is recorded with its error and the others go on; `BatchResult.failed` lists it.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import sys
import time
import traceback
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from closedloop.data.loader import load_dataset
from closedloop.errors import ClosedLoopError
from closedloop.fitting.executors import WorkerLost
from closedloop.fitting.session import FitSettings, SessionOutcome, StageCallback, fit_dataset, fit_session
from closedloop.model.model_config import describe_stop_score

_progress_queue = None  # set in each worker by _init_worker


@dataclass
class BatchResult:
    """Outcomes in the order the archives were given, and how the batch ran."""

    outcomes: list[SessionOutcome]
    workers: int
    threads_per_worker: int
    executor: str = "local"

    @property
    def failed(self) -> list[SessionOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(n_sessions: int, device: str) -> int:
    """One worker per core (at most one per session) on the CPU; one on a GPU.

    Several processes on one GPU each hold a CUDA context and contend for the same
    device, while a fused ensemble already keeps it busy.
    """
    if device.startswith("cuda"):
        return 1
    return max(1, min(n_sessions, available_cores()))


def session_names(paths: list[Path]) -> list[str]:
    """Output folder name of each archive: its stem, or ``parent_stem`` where stems clash.

    Raises
    ------
    ClosedLoopError
        The same file is given twice, or two archives still share a name.
    """
    resolved = [path.resolve() for path in paths]
    for index, path in enumerate(resolved):
        if path in resolved[:index]:
            raise ClosedLoopError(f"{paths[index]} is given twice; list each archive once")
    stems = [path.stem for path in paths]
    names = [f"{path.resolve().parent.name}_{path.stem}" if stems.count(path.stem) > 1 else path.stem for path in paths]
    for index, name in enumerate(names):
        if name in names[:index]:
            other = paths[names.index(name)]
            raise ClosedLoopError(
                f"{other} and {paths[index]} would both be written to '{name}/'; rename one of them "
                "or fit them in separate runs with different --out folders"
            )
    return names


def fit_archives(
    paths: list[Path],
    out_dir: Path,
    settings: FitSettings,
    *,
    workers: int | None = None,
    show_progress: bool | None = None,
    executor=None,
    threads: int | None = None,
    fuse: bool = False,
    shared_core: bool = False,
) -> BatchResult:
    """Fit every archive into ``out_dir/<name>/``.

    Parameters
    ----------
    paths
        Session .h5 and pvc-8 .mat files.
    out_dir
        Output folder (created).
    settings
        Model configuration, resolved device, seed and unit selection.
    workers
        Worker processes; ``None`` = `default_workers`.  With one worker the sessions
        run in this process (no start-up cost, same isolation of failures).
    show_progress
        tqdm bars on stderr: ``None`` shows them on a terminal and prints a progress
        line per session every `LOG_EVERY_S` seconds otherwise; ``False``: neither.
    executor
        A `closedloop.fitting.executors.RayExecutor` to run each session as a Ray task
        (``None``: local processes as above).
    threads
        Torch threads of each worker (``None``: the cores divided among the workers).
    fuse
        Fit every session's CNN in one fused training in this process
        (`closedloop.model.multi_session`; for a GPU), then each session's baseline,
        metrics and files one after another.
    shared_core
        Fit the sessions as one network with one core learned from all their images and
        units (`closedloop.model.shared_core`; one core per network input size), in this
        process; then each session's own network (the core and its units), baseline,
        metrics and files.
    """
    names = session_names(paths)
    bars = _Bars(names, show_progress)
    if fuse or shared_core:
        how = "shared-core" if shared_core else "fused"
        try:
            outcomes = _run_joint(paths, names, out_dir, settings, bars, how)
        finally:
            bars.close()
        return BatchResult(outcomes, 1, _torch_threads(), how)
    if executor is not None:
        try:
            outcomes = _run_on_executor(paths, names, out_dir, settings, bars, executor)
        finally:
            bars.close()
        return BatchResult(outcomes, len(paths), executor.resources.cpus, executor.name)
    n_workers = max(1, min(workers or default_workers(len(paths), settings.device), len(paths)))
    threads = threads or max(1, available_cores() // n_workers)
    try:
        if n_workers == 1:
            outcomes = _run_here(paths, names, out_dir, settings, bars)
        else:
            outcomes = _run_in_workers(paths, names, out_dir, settings, bars, n_workers, threads)
    finally:
        bars.close()
    return BatchResult(outcomes, n_workers, threads if n_workers > 1 else _torch_threads())


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _failure(name: str, path: Path, error: BaseException) -> SessionOutcome:
    if isinstance(error, ClosedLoopError):
        message = str(error)
    else:  # a bug, not bad input: keep the traceback for the report
        details = "".join(traceback.format_exception(error)).rstrip()
        print(f"closedloop fit: internal error while fitting {path}:\n{details}", file=sys.stderr)
        message = f"internal error: {type(error).__name__}: {error}"
    return SessionOutcome(name=name, source=str(path), ok=False, error=message)


def _stage(bars, index: int) -> StageCallback:
    """Session ``index``'s progress callback."""
    return lambda text, fraction: bars.update(index, text, fraction)


def _run_here(paths, names, out_dir, settings, bars) -> list[SessionOutcome]:
    outcomes = []
    for index, (path, name) in enumerate(zip(paths, names)):
        try:
            outcome = fit_session(path, out_dir, name, settings, stage=_stage(bars, index))
        except Exception as error:  # one session's failure must not stop the others
            outcome = _failure(name, path, error)
        bars.finish(index, outcome)
        outcomes.append(outcome)
    return outcomes


def _run_joint(paths, names, out_dir, settings, bars, how: str) -> list[SessionOutcome]:
    """Load every session, fit their CNNs together (``how``: "fused" or "shared-core"), then
    finish each session."""
    import secrets
    import warnings

    # torch only for the joint fit: the parent of separate per-session fits does not need it
    from closedloop.model.train import ExcludedUnitsWarning, prepare_fit

    outcomes: list[SessionOutcome | None] = [None] * len(paths)
    ready, datasets, seeds, load_s = [], [], [], {}
    for index, (path, name) in enumerate(zip(paths, names)):
        bars.update(index, "loading", 0.0)
        try:
            started = time.perf_counter()
            dataset = load_dataset(path, units=settings.units)
            seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExcludedUnitsWarning)
                prepare_fit(dataset, settings.config, seed=seed)  # a session that cannot be fitted fails alone
            load_s[index] = time.perf_counter() - started
        except Exception as error:
            outcomes[index] = _failure(name, path, error)
            bars.finish(index, outcomes[index])
            continue
        ready.append(index)
        datasets.append(dataset)
        seeds.append(seed)
    if ready:

        def progress(epoch: int, max_epochs: int, best_loss: float) -> None:
            for index in ready:
                bars.update(
                    index,
                    f"{how} CNN epoch {epoch} (best {describe_stop_score(best_loss, settings.config)})",
                    0.9 * epoch / max_epochs,
                )

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExcludedUnitsWarning)
                if how == "shared-core":
                    fitted = _fit_shared_cores(datasets, seeds, [names[i] for i in ready], settings, progress)
                else:
                    fitted = _fit_fused(datasets, seeds, settings, progress)
        except Exception as error:  # the joint training failed: so did every session in it
            for index in ready:
                outcomes[index] = _failure(names[index], paths[index], error)
                bars.finish(index, outcomes[index])
            return [outcome for outcome in outcomes if outcome is not None]
        for index, dataset, (cnn, shared_with) in zip(ready, datasets, fitted):
            try:
                outcome = fit_dataset(
                    dataset,
                    out_dir,
                    names[index],
                    settings,
                    load_s=load_s[index],
                    cnn=cnn,
                    stage=_stage(bars, index),
                    shared_core_with=shared_with,
                )
            except Exception as error:
                outcome = _failure(names[index], paths[index], error)
            bars.finish(index, outcome)
            outcomes[index] = outcome
    return [outcome for outcome in outcomes if outcome is not None]


def _fit_fused(datasets, seeds, settings, progress) -> list[tuple]:
    """(FitResult, None) per session, all trained as one fused network."""
    from closedloop.model.multi_session import fit_sessions  # torch

    fitted = fit_sessions(datasets, settings.config, seeds=seeds, device=settings.device, progress=progress)
    for cnn in fitted:
        cnn.fit_seconds /= len(fitted)  # this session's share of the fused training
    return [(cnn, None) for cnn in fitted]


def _fit_shared_cores(datasets, seeds, names: list[str], settings, progress) -> list[tuple]:
    """(FitResult, the names of the sessions sharing its core) per session.

    Sessions of one network input size share one core (their first session's seed); a
    session of a size no other has is fitted alone (and shares with nobody: ``None``).
    """
    from closedloop.model.shared_core import fit_shared_core, group_by_input_size  # torch
    from closedloop.model.train import fit_model

    fitted: list[tuple | None] = [None] * len(datasets)
    for members in group_by_input_size(datasets):
        first = members[0]
        if len(members) == 1:
            cnn = fit_model(
                datasets[first], settings.config, device=settings.device, seed=seeds[first], progress=progress
            )
            fitted[first] = (cnn, None)
            continue
        group = [datasets[index] for index in members]
        results = fit_shared_core(group, settings.config, seed=seeds[first], device=settings.device, progress=progress)
        together = [names[index] for index in members]
        for index, cnn in zip(members, results):
            fitted[index] = (cnn, together)
    return [entry for entry in fitted if entry is not None]


def _init_worker(progress_queue, threads: int) -> None:
    global _progress_queue
    import torch

    _progress_queue = progress_queue
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)


def _worker_fit(index: int, path: Path, out_dir: Path, name: str, settings: FitSettings) -> SessionOutcome:
    def stage(text: str, fraction: float) -> None:
        if _progress_queue is not None:  # None in a Ray task: it reports when done
            _progress_queue.put((index, text, fraction))

    return fit_session(path, out_dir, name, settings, stage=stage)


def _run_in_workers(paths, names, out_dir, settings, bars, n_workers, threads) -> list[SessionOutcome]:
    context = multiprocessing.get_context("spawn")
    progress_queue = context.Queue()
    outcomes: list[SessionOutcome | None] = [None] * len(paths)
    with ProcessPoolExecutor(
        n_workers, mp_context=context, initializer=_init_worker, initargs=(progress_queue, threads)
    ) as pool:
        futures: dict[Future, int] = {
            pool.submit(_worker_fit, index, path, out_dir, name, settings): index
            for index, (path, name) in enumerate(zip(paths, names))
        }
        pending = set(futures)
        while pending:
            _drain(progress_queue, bars, timeout=0.2)
            for future in [f for f in pending if f.done()]:
                pending.discard(future)
                index = futures[future]
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    outcome = SessionOutcome(
                        name=names[index],
                        source=str(paths[index]),
                        ok=False,
                        error="a worker process died (out of memory or killed); try fewer --workers",
                    )
                except Exception as error:
                    outcome = _failure(names[index], paths[index], error)
                bars.finish(index, outcome)
                outcomes[index] = outcome
    _drain(progress_queue, bars, timeout=0)
    return [outcome for outcome in outcomes if outcome is not None]


def _run_on_executor(paths, names, out_dir, settings, bars, executor) -> list[SessionOutcome]:
    """Each session a task of ``executor``; outcomes in the order of ``paths``."""
    handles = {
        executor.submit(_worker_fit, index, path, out_dir, name, settings): index
        for index, (path, name) in enumerate(zip(paths, names))
    }
    outcomes: list[SessionOutcome | None] = [None] * len(paths)
    while handles:
        for handle in executor.wait(list(handles), timeout=None):
            index = handles.pop(handle)
            try:
                outcome = executor.result(handle)
            except WorkerLost as error:
                outcome = SessionOutcome(name=names[index], source=str(paths[index]), ok=False, error=str(error))
            except Exception as error:
                outcome = _failure(names[index], paths[index], error)
            bars.finish(index, outcome)
            outcomes[index] = outcome
    return [outcome for outcome in outcomes if outcome is not None]


def _drain(progress_queue, bars, timeout: float) -> None:
    try:
        message = progress_queue.get(timeout=timeout) if timeout else progress_queue.get_nowait()
        while True:
            index, text, fraction = message
            bars.update(index, text, fraction)
            message = progress_queue.get_nowait()
    except (queue_module.Empty, EOFError, OSError):
        return


#: Seconds between a session's progress lines when stderr is not a terminal (a log file, a batch job).
LOG_EVERY_S = 30.0


class _Bars:
    """One tqdm bar per session on a terminal; elsewhere a progress line per session now and then.

    The lines (session, stage with the epoch and best stopping score, percent, elapsed
    time) go to stderr at most every `LOG_EVERY_S` seconds per session, and once when a
    session ends, so a job's log shows it is alive without drowning in bar redraws.
    """

    def __init__(self, names: list[str], show: bool | None):
        from tqdm import tqdm

        self.names = names
        width = max(len(name) for name in names)
        disable = None if show is None else not show
        self.lines = show is None and not _is_terminal(sys.stderr)
        self.started = time.monotonic()
        self.last_line = [self.started] * len(names)
        self.done = [False] * len(names)
        self.bars = [
            tqdm(
                total=100,
                desc=name.ljust(width),
                position=index,
                leave=True,
                disable=disable,
                bar_format="{desc} {percentage:3.0f}%|{bar:20}| {elapsed}{postfix}",
                file=sys.stderr,
            )
            for index, name in enumerate(names)
        ]

    def _line(self, index: int, text: str) -> None:
        self.last_line[index] = time.monotonic()
        print(
            f"fit {self.names[index]}: {text} [{self.last_line[index] - self.started:.0f} s]",
            file=sys.stderr,
            flush=True,
        )

    def update(self, index: int, text: str, fraction: float) -> None:
        if self.done[index]:
            return
        bar = self.bars[index]
        target = int(round(100 * min(max(fraction, 0.0), 1.0)))
        if target > bar.n:
            bar.update(target - bar.n)
        bar.set_postfix_str(text, refresh=True)
        if self.lines and time.monotonic() - self.last_line[index] >= LOG_EVERY_S:
            self._line(index, f"{text}, {target}%")

    def finish(self, index: int, outcome: SessionOutcome) -> None:
        bar = self.bars[index]
        self.done[index] = True
        if outcome.ok:
            bar.update(100 - bar.n)
            bar.set_postfix_str(f"done, mean r {outcome.summary.get('mean_r', float('nan')):.3f}")
        else:
            bar.set_postfix_str("FAILED")
        if self.lines:
            self._line(
                index, f"done, mean r {outcome.summary.get('mean_r', float('nan')):.3f}" if outcome.ok else "FAILED"
            )

    def close(self) -> None:
        for bar in self.bars:
            bar.close()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
