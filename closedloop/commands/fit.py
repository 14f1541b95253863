"""Fit the CNN (and the linear baseline) to archived sessions, offline, in parallel.

Each ARCHIVE (a closedloop session .h5 or a pvc-8 .mat, told apart by content) is fitted
in a worker process; its results go to OUT/<name>/: model.pt (checkpoint), metrics.json
(held-out metrics, cell properties, excluded units, settings, device, times) and
fig3.png (Kindel et al. 2019, Fig. 3).  OUT/summary.json and a table summarise the run.
With --search N, N configurations are first tried on a tuning session (random search
by default, Optuna's TPE with --sampler tpe, hopeless trials stopped early with
--pruner, trials of one network shape trained together with --fuse-trials); each trial
is written to OUT/search/trials/ as it finishes, a killed search run again with the
same OUT resumes, and the best one (OUT/search/best.yaml) fits every archive.
--executor ray runs the fits and trials as Ray tasks: on a Ray instance started on
this machine, or on a cluster with --address. --shared-core fits all sessions with one core
learned from all their images and units (each session still gets its own model); --core-from
MODEL starts each fit from a fitted model's core, trained on or (--fixed-core) kept as it is.

Exit status: 0 when every session was fitted, 1 when some failed (listed), 2 for bad
arguments or input found before fitting started.
"""

# Work modules are imported inside run() and its helpers: cli.py imports every command module to
# build its parser, so each must load fast.
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from closedloop.commands.common import add_json_option, non_negative_int, positive_int, write_json
from closedloop.errors import ClosedLoopError, DataFileError
from closedloop.fitting.options import EXECUTORS, PRUNERS, SAMPLERS
from closedloop.model.presets import DEFAULT_PRESET, PRESETS, SHARED_CORE_PRESET


def _gpu_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 64:
        raise argparse.ArgumentTypeError(f"expected a number of GPUs between 0 and 64 (e.g. 0.25), got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("archives", type=Path, nargs="+", metavar="ARCHIVE", help="session .h5 or pvc-8 .mat files")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--config",
        type=Path,
        metavar="YAML",
        help="model configuration YAML (e.g. a search's best.yaml; a preset: key names the preset it changes)",
    )
    choice.add_argument(
        "--preset",
        metavar="NAME",
        help=f"named model configuration: {', '.join(PRESETS)} (default {DEFAULT_PRESET}, with --shared-core "
        f"{SHARED_CORE_PRESET}; docs/guide.md compares them)",
    )
    parser.add_argument(
        "--device", default="auto", metavar="DEVICE", help="auto (default: a GPU if present), cpu, cuda or cuda:N"
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="worker processes (default: one per CPU core, at most one per archive; 1 on a GPU)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=None,
        help="seed of splits, initialisation and search (default: drawn and recorded)",
    )
    parser.add_argument(
        "--search",
        type=positive_int,
        default=None,
        metavar="N",
        help="first try N configurations (see --sampler) on the tuning session; run again "
        "with the same --out to resume a killed search",
    )
    parser.add_argument(
        "--tuning",
        type=Path,
        default=None,
        metavar="ARCHIVE",
        help="tuning session for --search (default: the first ARCHIVE)",
    )
    parser.add_argument(
        "--space", type=Path, default=None, metavar="YAML", help="search space for --search (default: the built-in one)"
    )
    parser.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default="random",
        help="how --search draws configurations: random (default, as Kindel et al.) or tpe (Optuna)",
    )
    parser.add_argument(
        "--pruner",
        choices=PRUNERS,
        default="none",
        help="stop hopeless search trials early: none (default), median or asha (Optuna)",
    )
    parser.add_argument(
        "--executor", choices=EXECUTORS, default="local", help="local worker processes (default) or ray tasks"
    )
    parser.add_argument(
        "--address",
        default=None,
        metavar="auto|HOST:PORT",
        help="with --executor ray: join this Ray cluster (default: start one on this machine)",
    )
    parser.add_argument(
        "--task-cpus",
        type=positive_int,
        default=None,
        metavar="N",
        help="CPU cores (torch threads) of each fit or trial (default: cores / workers locally, 1 on Ray)",
    )
    parser.add_argument(
        "--task-gpus",
        type=_gpu_fraction,
        default=None,
        metavar="F",
        help="with --executor ray: GPUs per fit or trial, e.g. 0.25 packs four on a card "
        "(default: 1 with --device cuda, else 0)",
    )
    parser.add_argument(
        "--fuse-sessions",
        action="store_true",
        help="fit all sessions' CNNs as one batched training on one device (for a GPU; slower on a CPU)",
    )
    parser.add_argument(
        "--shared-core",
        action="store_true",
        help="fit the sessions with one core learned from all their images and units and a readout per unit, "
        "as one training in this process (one core per input size); each session still gets its own model",
    )
    parser.add_argument(
        "--core-from",
        type=Path,
        metavar="MODEL",
        help="a fitted model.pt (e.g. one session of --shared-core on earlier sessions) whose "
        "core every session starts from and trains on with its own readouts; the model's configuration "
        "is used unless --preset or --config is given",
    )
    parser.add_argument(
        "--fixed-core",
        action="store_true",
        help="with --core-from: keep the core as it is and fit only each session's readouts "
        "(default: train it on from there with the rest)",
    )
    parser.add_argument(
        "--fuse-trials",
        action="store_true",
        help="with --search: train the trials that share a network shape (differing only in learning rate, "
        "dropout, weight decay, L1, epochs or patience) as one batched training per group on one device "
        "(meant for a GPU; not with --pruner)",
    )
    parser.add_argument(
        "--units",
        choices=("indcent", "all"),
        default="indcent",
        help="pvc-8 units: INDCENT == 1 (default, as Kindel et al.) or all",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: bars on a terminal, else a line per session every 30 s)",
    )
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from closedloop.fitting.batch import fit_archives, session_names
    from closedloop.fitting.model_files import default_config, load_config_yaml, named_config
    from closedloop.fitting.session import FitSettings

    if args.search is None:
        for name in ("tuning", "space"):
            if getattr(args, name) is not None:
                raise ClosedLoopError(f"--{name} only makes sense with --search N")
        for name, default in (("sampler", "random"), ("pruner", "none"), ("fuse_trials", False)):
            if getattr(args, name) != default:
                raise ClosedLoopError(f"--{name.replace('_', '-')} only makes sense with --search N")
    if args.fuse_sessions and args.shared_core:
        raise ClosedLoopError("choose one of --fuse-sessions and --shared-core")
    if args.fixed_core and args.core_from is None:
        raise ClosedLoopError("--fixed-core only makes sense with --core-from MODEL")
    if args.core_from is not None:
        for name in ("fuse_sessions", "shared_core", "search"):
            if getattr(args, name):
                raise ClosedLoopError(
                    f"--core-from fits readouts on a fixed core; leave out --{name.replace('_', '-')}"
                )
    for name in ("fuse_sessions", "shared_core"):
        if getattr(args, name) and args.executor == "ray":
            raise ClosedLoopError(
                f"--{name.replace('_', '-')} trains in this process on one device; leave out --executor ray"
            )
    if args.executor != "ray":
        for name in ("address", "task_gpus"):
            if getattr(args, name) is not None:
                raise ClosedLoopError(f"--{name.replace('_', '-')} only makes sense with --executor ray")
    core = _core_model(args.core_from) if args.core_from else None
    config = (
        load_config_yaml(args.config)
        if args.config
        else named_config(args.preset)
        if args.preset
        else core.config.replace(seed=None)  # the core's own configuration; this fit draws its seed
        if core
        else named_config(SHARED_CORE_PRESET)
        if args.shared_core
        else default_config()
    )
    if args.shared_core and config.partner is not None:
        raise ClosedLoopError(
            "--shared-core needs one network per session, and this model blends two ensembles (partner); "
            f"choose a single-network model such as --preset {SHARED_CORE_PRESET}"
        )
    if core:
        from closedloop.model.given_core import check_core_source  # torch, loaded with the core

        check_core_source(core.model, config, core.input_size)
    space = _space(args)
    device = _device(args)
    _check_archives(args.archives + ([args.tuning] if args.tuning else []))
    session_names(args.archives)  # clashing names are an error before any work

    executor = _ray_executor(args, device) if args.executor == "ray" else None
    try:
        seed = args.seed
        search_summary = None
        if args.search:
            config, search_summary, seed = _search(args, config, space, device, executor)
        core_from = None if args.core_from is None else str(args.core_from)
        settings = FitSettings(
            config=config, device=device, seed=seed, units=args.units, core_from=core_from, fixed_core=args.fixed_core
        )
        result = fit_archives(
            list(args.archives),
            args.out,
            settings,
            workers=args.workers,
            show_progress=args.progress,
            executor=executor,
            threads=args.task_cpus,
            fuse=args.fuse_sessions,
            shared_core=args.shared_core,
        )
    finally:
        if executor is not None:
            executor.close()
    summary = _report(args, result, settings, search_summary)
    write_json(args.out / "summary.json", summary)
    write_json(args.json, summary)
    return 1 if result.failed else 0


def _core_model(path: Path):
    """The checkpoint at ``path``, read before any work (a missing or foreign file is exit 2)."""
    from closedloop.model.checkpoint import load_checkpoint  # torch

    return load_checkpoint(path, "cpu")


def _device(args: argparse.Namespace) -> str:
    """Resolved here for local work; on Ray a task resolves ``auto`` where it runs (a node may have a GPU)."""
    from closedloop.model.device import resolve_device

    if args.executor == "ray" and args.device == "auto":
        return "auto"
    if args.executor == "ray" and args.address is not None:
        return args.device  # checked on the nodes that run the tasks
    return str(resolve_device(args.device))


def _space(args: argparse.Namespace):
    from closedloop.fitting.search_space import SearchSpace, load_search_space

    return load_search_space(args.space) if args.space else SearchSpace()


def _ray_executor(args: argparse.Namespace, device: str):
    from closedloop.fitting.batch import available_cores
    from closedloop.fitting.executors import TaskResources, make_executor

    gpus = args.task_gpus if args.task_gpus is not None else (1.0 if device.startswith("cuda") else 0.0)
    resources = TaskResources(cpus=args.task_cpus or 1, gpus=gpus)
    workers = args.workers or max(1, available_cores() // resources.cpus)
    executor = make_executor("ray", workers=workers, resources=resources, address=args.address)
    where = f"the Ray cluster at {args.address}" if args.address else "a Ray instance on this machine (127.0.0.1)"
    print(f"executor: {where}; each task {resources.cpus} CPU(s), {resources.gpus:g} GPU(s)", file=sys.stderr)
    return executor


def _check_archives(paths: list[Path]) -> None:
    """Every archive must exist and be a format we read, before anything runs."""
    from closedloop.data.formats import detect_format

    problems = []
    for path in paths:
        try:
            detect_format(path)
        except DataFileError as error:
            problems.append(str(error))
    if len(problems) == 1:
        raise ClosedLoopError(problems[0])
    if problems:
        raise ClosedLoopError(f"{len(problems)} archives cannot be read: " + "; ".join(problems))


def _search(args: argparse.Namespace, base, space, device: str, ray_executor):
    import secrets

    from closedloop.data.loader import load_dataset
    from closedloop.fitting.batch import available_cores, default_workers
    from closedloop.fitting.executors import LocalExecutor, TaskResources
    from closedloop.fitting.search import results_table
    from closedloop.fitting.search_run import SearchPlan, previous_seed, run_search

    tuning_path = args.tuning or args.archives[0]
    folder = args.out / "search"
    seed = args.seed if args.seed is not None else previous_seed(folder)
    seed = seed if seed is not None else secrets.randbelow(2**31)
    plan = SearchPlan(
        tuning=str(Path(tuning_path).resolve()),
        n_trials=args.search,
        seed=seed,
        base=base,
        space=space,
        sampler=args.sampler,
        pruner=args.pruner,
        units=args.units,
        device=device,
        fuse=args.fuse_trials,
    )
    dataset = load_dataset(tuning_path, units=args.units)
    if ray_executor is not None:
        executor, slots = ray_executor, _ray_slots(ray_executor, args.search)
    else:
        slots = max(1, min(args.workers or default_workers(args.search, device), args.search))
        threads = args.task_cpus or max(1, available_cores() // slots)
        executor = LocalExecutor(slots, TaskResources(cpus=threads))
    print(
        f"search: {args.search} {args.sampler} configurations on {tuning_path} (seed {seed}; scored on "
        f"validation images, the test images stay unseen), {slots} at a time on {executor.name}"
    )
    quiet = args.progress is False
    try:
        result = run_search(
            plan,
            dataset,
            folder,
            executor,
            slots=slots,
            log=None if quiet else lambda line: print(line, file=sys.stderr, flush=True),
        )
    finally:
        if executor is not ray_executor:
            executor.close()
    print(results_table(result))
    best = result.best
    yaml_path, csv_path = folder / "best.yaml", folder / "results.csv"
    print(f"search: best is trial {best.index} (validation r {best.val_r:.3f}); wrote {yaml_path} and {csv_path}")
    summary = {
        "tuning": str(tuning_path),
        "trials": args.search,
        "seed": seed,
        "best_trial": best.index,
        "best_val_r": best.val_r,
        "best_yaml": str(yaml_path),
        "results_csv": str(csv_path),
        "sampler": args.sampler,
        "pruner": args.pruner,
        "fuse_trials": args.fuse_trials,
        "executor": executor.name,
        "finished": sum(t.status == "ok" for t in result.trials),
        "pruned": sum(t.status == "pruned" for t in result.trials),
        "failed": sum(t.status == "failed" for t in result.trials),
        "space": result.space.to_dict(),
    }
    return best.config, summary, seed


def _ray_slots(executor, n_trials: int) -> int:
    """Trials in flight on Ray: what the cluster's CPUs (or GPUs) hold at once, at most all of them."""
    total = executor.ray.cluster_resources()
    by_cpu = int(total.get("CPU", 1) // max(executor.resources.cpus, 1))
    by_gpu = int(total.get("GPU", 0) // executor.resources.gpus) if executor.resources.gpus else by_cpu
    return max(1, min(n_trials, by_cpu, by_gpu))


def _report(args, result, settings, search_summary) -> dict:
    from closedloop.model.report import SessionRow, summary_table

    rows = []
    for outcome in result.outcomes:
        if not outcome.ok:
            continue
        rows.append(SessionRow.from_summary(outcome.name, outcome.summary, outcome.times_s.get("total")))
        if outcome.excluded_units:
            listing = "; ".join(f"unit {u['unit_id']}: {u['reason']}" for u in outcome.excluded_units)
            print(f"{outcome.name}: {len(outcome.excluded_units)} unit(s) excluded ({listing})")
    print(summary_table(rows))
    cores = {tuple(o.shared_core_with) for o in result.outcomes if o.ok and o.shared_core_with}
    for sessions in sorted(cores):
        print(f"one core shared by {', '.join(sessions)}")
    devices = sorted({outcome.device for outcome in result.outcomes if outcome.ok})
    how = {
        "fused": "every session's CNN in one fused training",
        "shared-core": "one core learned from every session's images and units",
    }.get(result.executor, f"{result.workers} {result.executor} worker(s) × {result.threads_per_worker} thread(s)")
    print(f"device: {', '.join(devices) or settings.device}; {how}; results in {args.out}")
    for outcome in result.failed:
        print(f"FAILED {outcome.name} ({outcome.source}): {outcome.error}", file=sys.stderr)
    if result.failed:
        print(f"{len(result.failed)} of {len(result.outcomes)} session(s) failed", file=sys.stderr)
    return {
        "format": "closedloop-fit-summary",
        "out": str(args.out),
        "device": settings.device,
        "executor": result.executor,
        "workers": result.workers,
        "threads_per_worker": result.threads_per_worker,
        "seed": settings.seed,
        "config": settings.config.to_dict(),
        "search": search_summary,
        "sessions": [
            {
                "name": o.name,
                "source": o.source,
                "ok": o.ok,
                "error": o.error,
                "folder": o.folder,
                "seed": o.seed,
                "device": o.device,
                "summary": o.summary,
                "groups": o.groups,
                "excluded_units": o.excluded_units,
                "times_s": o.times_s,
                "shared_core_with": o.shared_core_with,
            }
            for o in result.outcomes
        ],
        "failed": [o.name for o in result.failed],
    }
