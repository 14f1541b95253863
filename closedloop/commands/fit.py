"""Fit the CNN (and the linear baseline) to archived sessions, offline, in parallel.

Each ARCHIVE (a closedloop session .h5 or a pvc-8 .mat, told apart by content) is fitted
in a worker process; its results go to OUT/<name>/: model.pt (checkpoint), metrics.json
(held-out metrics, cell properties, excluded units, settings, device, times) and
fig3.png (Kindel et al. 2019, Fig. 3).  OUT/summary.json and a table summarise the run.
With --search N, N random configurations are first tried on a tuning session
(OUT/search/results.csv, OUT/search/best.yaml) and the best one fits every archive.

Exit status: 0 when every session was fitted, 1 when some failed (listed), 2 for bad
arguments or input found before fitting started.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from closedloop.commands.common import add_json_option, non_negative_int, positive_int, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("archives", type=Path, nargs="+", metavar="ARCHIVE",
                        help="session .h5 or pvc-8 .mat files")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--config", type=Path, metavar="YAML",
                        help="model configuration YAML (e.g. a search's best.yaml)")
    choice.add_argument("--preset", metavar="NAME", help="named model configuration (e.g. kindel2017)")
    parser.add_argument("--device", default="auto", metavar="DEVICE",
                        help="auto (default: a GPU if present), cpu, cuda or cuda:N")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="worker processes (default: one per CPU core, at most one per archive; 1 on a GPU)")
    parser.add_argument("--seed", type=non_negative_int, default=None,
                        help="seed of splits, initialisation and search (default: drawn and recorded)")
    parser.add_argument("--search", type=positive_int, default=None, metavar="N",
                        help="first try N random configurations on the tuning session")
    parser.add_argument("--tuning", type=Path, default=None, metavar="ARCHIVE",
                        help="tuning session for --search (default: the first ARCHIVE)")
    parser.add_argument("--units", choices=("indcent", "all"), default="indcent",
                        help="pvc-8 units: INDCENT == 1 (default, as Kindel et al.) or all")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars on stderr (default: only on a terminal)")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    import secrets

    from closedloop.errors import ClosedLoopError
    from closedloop.fitting.batch import fit_archives, session_names
    from closedloop.fitting.model_files import default_config, load_config_yaml, named_config
    from closedloop.fitting.session import FitSettings
    from closedloop.model.device import resolve_device

    if args.tuning is not None and args.search is None:
        raise ClosedLoopError("--tuning only makes sense with --search N")
    config = (load_config_yaml(args.config) if args.config else
              named_config(args.preset) if args.preset else default_config())
    device = str(resolve_device(args.device))
    _check_archives(args.archives + ([args.tuning] if args.tuning else []))
    session_names(args.archives)  # clashing names are an error before any work

    seed = args.seed
    search_summary = None
    if args.search:
        seed = seed if seed is not None else secrets.randbelow(2**31)
        config, search_summary = _search(args, config, device, seed)

    settings = FitSettings(config=config, device=device, seed=seed, units=args.units)
    result = fit_archives(list(args.archives), args.out, settings, workers=args.workers,
                          show_progress=args.progress)
    summary = _report(args, result, settings, search_summary)
    write_json(args.out / "summary.json", summary)
    write_json(args.json, summary)
    return 1 if result.failed else 0


def _check_archives(paths: list[Path]) -> None:
    """Every archive must exist and be a format we read, before anything runs."""
    from closedloop.data.formats import detect_format
    from closedloop.errors import ClosedLoopError, DataFileError

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


def _search(args: argparse.Namespace, base, device: str, seed: int):
    from closedloop.data.loader import load_dataset
    from closedloop.fitting.model_files import write_config_yaml
    from closedloop.fitting.search import random_search, results_table, write_results_csv

    tuning_path = args.tuning or args.archives[0]
    dataset = load_dataset(tuning_path, units=args.units)
    print(f"search: {args.search} random configurations on {tuning_path} "
          f"(seed {seed}; scored on validation images, the test images stay unseen)")

    def on_trial(done: int, total: int, trial) -> None:
        outcome = f"FAILED: {trial.error}" if trial.error else f"validation r {trial.val_r:.3f}"
        print(f"  trial {done}/{total}: {outcome} ({trial.seconds:.1f} s)", file=sys.stderr)

    result = random_search(dataset, args.search, base=base, seed=seed, device=device,
                           on_trial=on_trial if args.progress is not False else None)
    folder = args.out / "search"
    csv_path = write_results_csv(folder / "results.csv", result)
    print(results_table(result))
    best = result.best
    yaml_path = write_config_yaml(
        folder / "best.yaml", best.config,
        comment=(f"Best of {args.search} random configurations on {tuning_path} (split seed {seed}).\n"
                 f"Validation r {best.val_r:.4f}, validation loss {best.val_loss:.4f}.\n"
                 "Use with: closedloop fit ARCHIVE... --config THIS_FILE"),
    )
    print(f"search: best is trial {best.index} (validation r {best.val_r:.3f}); wrote {yaml_path} and {csv_path}")
    summary = {"tuning": str(tuning_path), "trials": args.search, "seed": seed, "best_trial": best.index,
               "best_val_r": best.val_r, "best_yaml": str(yaml_path), "results_csv": str(csv_path),
               "space": result.space.to_dict()}
    return best.config, summary


def _report(args, result, settings, search_summary) -> dict:
    from closedloop.model.report import SessionRow, summary_table

    rows = []
    for outcome in result.outcomes:
        if not outcome.ok:
            continue
        s = outcome.summary
        rows.append(SessionRow(outcome.name, int(s["n_units"]), s["mean_r"], s["mean_r_over_rmax"],
                               s["mean_cc_norm"], s["mean_r_linear"], s["frac_within_10pct_rmax"],
                               outcome.times_s.get("total"), s.get("mean_r_over_oracle", float("nan"))))
        if outcome.excluded_units:
            listing = "; ".join(f"unit {u['unit_id']}: {u['reason']}" for u in outcome.excluded_units)
            print(f"{outcome.name}: {len(outcome.excluded_units)} unit(s) excluded ({listing})")
    print(summary_table(rows))
    devices = sorted({outcome.device for outcome in result.outcomes if outcome.ok})
    print(f"device: {', '.join(devices) or settings.device}; {result.workers} worker(s) × "
          f"{result.threads_per_worker} thread(s); results in {args.out}")
    for outcome in result.failed:
        print(f"FAILED {outcome.name} ({outcome.source}): {outcome.error}", file=sys.stderr)
    if result.failed:
        print(f"{len(result.failed)} of {len(result.outcomes)} session(s) failed", file=sys.stderr)
    return {
        "format": "closedloop-fit-summary",
        "out": str(args.out),
        "device": settings.device,
        "workers": result.workers,
        "threads_per_worker": result.threads_per_worker,
        "seed": settings.seed,
        "config": settings.config.to_dict(),
        "search": search_summary,
        "sessions": [
            {"name": o.name, "source": o.source, "ok": o.ok, "error": o.error, "folder": o.folder,
             "seed": o.seed, "device": o.device, "summary": o.summary, "groups": o.groups,
             "excluded_units": o.excluded_units, "times_s": o.times_s}
            for o in result.outcomes
        ],
        "failed": [o.name for o in result.failed],
    }
