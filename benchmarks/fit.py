"""Benchmark: offline fitting of simulated sessions (benchmarks/README.md).

Makes (or reuses) simulated session archives — by default 10 sessions (seeds 1..10) of
40 units × 270 images × 20 repeats, as in Kindel et al. — fits each with the CNN and
the linear baseline exactly as ``closedloop fit`` does, and prints:

- mean r, r/rmax (all units and reliable units), CCnorm and r_linear, pooled over units;
- per orientation group (selective / intermediate / non-selective): r, r_linear, rmax
  and the fraction of units within 10 % of rmax;
- the time to fit one session (CNN alone and end to end), on the CPU with ``--threads``
  cores (default 2), or on the GPU with ``--device cuda`` (timings synchronise the GPU
  and follow an untimed warm-up fit, so CUDA start-up is not counted).

Usage::

    python benchmarks/fit.py                          # 10 sessions on 2 CPU cores
    python benchmarks/fit.py --sessions 2 --device cuda --preset kindel2017
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10, help="simulated sessions, seeds 1..N (default 10)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "closedloop-bench-fit",
        help="folder for the cached archives and the fit results",
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--preset", default=None, help="named model configuration (default: fit's default)")
    choice.add_argument("--config", type=Path, default=None, help="model configuration YAML")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for CPU fits (default 2)")
    parser.add_argument("--units", type=int, default=40, help="units per session (default 40)")
    parser.add_argument("--images", type=int, default=270, help="natural images per session (default 270)")
    parser.add_argument("--repeats", type=int, default=20, help="repeats per image (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits and initialisation (default 0)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.threads < 1:
        parser.error("--sessions and --threads must be at least 1")
    return args


def archives(folder: Path, args: argparse.Namespace) -> list[Path]:
    """Simulated session files, made once and reused while their spec is unchanged."""
    from closedloop.sim.archive import ArchiveSpec, make_archive

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(1, args.sessions + 1):
        spec = ArchiveSpec(
            layout="session", seed=seed, n_units=args.units, n_images=args.images, n_repeats=args.repeats
        )
        path = folder / f"sim{seed:02d}.h5"
        stamp = path.with_suffix(".spec.json")
        wanted = json.dumps({"seed": seed, "units": args.units, "images": args.images, "repeats": args.repeats})
        if not (path.exists() and stamp.exists() and stamp.read_text() == wanted):
            started = time.perf_counter()
            make_archive(path, spec, overwrite=True)
            stamp.write_text(wanted)
            print(f"made {path} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        paths.append(path)
    return paths


def model_config(args: argparse.Namespace):
    from closedloop.fitting.model_files import default_config, load_config_yaml, named_config

    if args.config:
        return load_config_yaml(args.config)
    return named_config(args.preset) if args.preset else default_config()


def warm_up(path: Path, settings, out: Path) -> None:
    """One short untimed fit so CUDA context, cuDNN and allocator start-up are not timed."""
    from dataclasses import replace

    from closedloop.fitting.session import fit_session

    short = replace(settings, config=settings.config.replace(max_epochs=5, patience=5))
    fit_session(path, out, "warm-up", short)


def pooled(records: list[dict]) -> dict[str, np.ndarray]:
    """Per-unit arrays over all sessions (NaN for undefined values)."""

    def column(name: str, source: str = "units") -> np.ndarray:
        values = []
        for record in records:
            data = record["metrics"]["units"] if source == "units" else record["cells"]
            values += [np.nan if v is None else v for v in data[name]]
        return np.asarray(values, dtype=np.float64)

    arrays = {name: column(name) for name in ("r", "rmax", "r_over_rmax", "cc_norm", "r_linear")}
    arrays["reliable"] = np.concatenate([np.asarray(r["metrics"]["units"]["reliable"], bool) for r in records])
    arrays["groups"] = np.concatenate([np.asarray(r["cells"]["groups"]) for r in records])
    return arrays


def nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def within_rmax(r: np.ndarray, rmax: np.ndarray) -> float:
    from closedloop.model.report import WITHIN_RMAX_FRACTION

    defined = np.isfinite(r) & np.isfinite(rmax)
    return float(np.mean(r[defined] >= WITHIN_RMAX_FRACTION * rmax[defined])) if defined.any() else float("nan")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from closedloop.fitting.session import FitSettings, fit_session
    from closedloop.model.cells import GROUP_ORDER
    from closedloop.model.device import describe_device, resolve_device
    from closedloop.model.report import SessionRow, summary_table

    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    settings = FitSettings(config=model_config(args), device=str(device), seed=args.seed)
    paths = archives(args.out / "archives", args)
    results = args.out / "results"
    if device.type == "cuda":
        warm_up(paths[0], settings, args.out / "warm-up")

    records, rows = [], []
    for index, path in enumerate(paths, start=1):
        outcome = fit_session(path, results, path.stem, settings)
        record = json.loads((results / path.stem / "metrics.json").read_text())
        records.append(record)
        rows.append(SessionRow.from_summary(path.stem, outcome.summary, outcome.times_s["total"]))
        print(
            f"[{index}/{len(paths)}] {path.stem}: mean r {outcome.summary['mean_r']:.3f}, CNN fit "
            f"{outcome.times_s['cnn_fit']:.1f} s ({record['epochs_run']} epochs)",
            file=sys.stderr,
        )

    units = pooled(records)
    reliable = units["reliable"]
    cnn_times = [r["times_s"]["cnn_fit"] for r in records]
    total_times = [r["times_s"]["total"] for r in records]
    numbers = {
        "device": describe_device(device),
        "config": settings.config.to_dict(),
        "sessions": len(records),
        "units": int(units["r"].size),
        "reliable_units": int(reliable.sum()),
        "mean_r": nanmean(units["r"]),
        "mean_r_over_rmax": nanmean(units["r_over_rmax"]),
        "mean_r_over_rmax_reliable": nanmean(units["r_over_rmax"][reliable]),
        "mean_cc_norm": nanmean(units["cc_norm"]),
        "mean_r_linear": nanmean(units["r_linear"]),
        "mean_rmax": nanmean(units["rmax"]),
        "frac_within_10pct_rmax": within_rmax(units["r"], units["rmax"]),
        "groups": {},
        "cnn_fit_s": {
            "median": statistics.median(cnn_times),
            "mean": statistics.fmean(cnn_times),
            "min": min(cnn_times),
            "max": max(cnn_times),
        },
        "session_total_s": {"median": statistics.median(total_times), "mean": statistics.fmean(total_times)},
    }
    for group in GROUP_ORDER:
        members = units["groups"] == group
        if members.any():
            numbers["groups"][group] = {
                "n": int(members.sum()),
                "mean_r": nanmean(units["r"][members]),
                "mean_r_linear": nanmean(units["r_linear"][members]),
                "mean_rmax": nanmean(units["rmax"][members]),
                "frac_within_10pct_rmax": within_rmax(units["r"][members], units["rmax"][members]),
            }

    print(summary_table(rows))
    print()
    print(f"device: {numbers['device']}")
    print(f"{numbers['sessions']} sessions, {numbers['units']} units ({numbers['reliable_units']} reliable)")
    print(
        f"mean r            {numbers['mean_r']:.3f}   (linear baseline {numbers['mean_r_linear']:.3f}, "
        f"rmax {numbers['mean_rmax']:.3f})"
    )
    print(
        f"mean r/rmax       {numbers['mean_r_over_rmax']:.3f}   (reliable units "
        f"{numbers['mean_r_over_rmax_reliable']:.3f})"
    )
    print(f"mean CCnorm       {numbers['mean_cc_norm']:.3f}")
    print(f"r >= 0.9 rmax     {100 * numbers['frac_within_10pct_rmax']:.0f}% of units")
    print("by orientation group (circular variance <0.6 selective, >0.75 non-selective):")
    print(f"  {'group':<13}{'n':>5}{'r':>8}{'r_linear':>10}{'rmax':>8}{'≥0.9rmax':>10}")
    for group, g in numbers["groups"].items():
        print(
            f"  {group:<13}{g['n']:>5}{g['mean_r']:>8.3f}{g['mean_r_linear']:>10.3f}{g['mean_rmax']:>8.3f}"
            f"{100 * g['frac_within_10pct_rmax']:>9.0f}%"
        )
    t = numbers["cnn_fit_s"]
    print(
        f"time per session: CNN fit median {t['median']:.1f} s (min {t['min']:.1f}, max {t['max']:.1f}); "
        f"end to end median {numbers['session_total_s']['median']:.1f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
