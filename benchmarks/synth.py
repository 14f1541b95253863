"""Benchmark: stimulus synthesis checked against the simulator's ground truth (benchmarks/README.md).

Makes (or reuses) a simulated session (seed 1, 40 units × 270 images × 20 repeats), fits
it (or reuses the fit), synthesizes an image for every unit × p20, p35, p50, p65, p80
and one that maximises each unit, shows the display version of every image to the
simulated population and prints:

- target vs ground truth: Pearson correlation pooled over all images and the median of
  per-unit correlations (5 targets each), and the median absolute error in units of the
  unit's natural-image rate range (true rates of the session's natural images); the
  optimiser's own error (model prediction vs target) beside it;
- "max": the fraction of units whose synthesized image drives them (truly) above their
  best natural image;
- receptive-field recovery for simple and centre-surround units: cosine similarity,
  inside the aperture, of the true RF with the max image and with p80 − p20;
- all of it for well-predicted units (held-out r/rmax ≥ 0.8) and for all units;
- the time to synthesize all units × 5 targets, and all units × max, on ``--device``
  (CPU with ``--threads`` threads; CUDA synchronised, after an untimed warm-up).

Usage::

    python benchmarks/synth.py                       # 2 CPU threads
    python benchmarks/synth.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from closedloop.config.protocol import START_MODES

PERCENTILE_TARGETS = "p20,p35,p50,p65,p80"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "closedloop-bench-synth",
        help="folder for the cached archive, fit and libraries",
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--preset", default=None, help="model configuration preset (default: fit's default)")
    choice.add_argument("--config", type=Path, default=None, help="model configuration YAML")
    parser.add_argument(
        "--ensemble", type=int, default=None, help="ensemble members (default: the configuration's if above 1, else 4)"
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="use this checkpoint (a fit of the same simulated session) instead of fitting",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--units", type=int, default=40, help="units in the session (default 40)")
    parser.add_argument("--images", type=int, default=270, help="natural images (default 270)")
    parser.add_argument("--repeats", type=int, default=20, help="repeats per image (default 20)")
    parser.add_argument("--steps", type=int, default=500, help="synthesis step cap (default 500)")
    parser.add_argument("--tolerance", type=float, default=0.5, help="synthesis tolerance, Hz (default 0.5)")
    parser.add_argument("--tv", type=float, default=0.0, help="total-variation weight (default 0)")
    parser.add_argument("--blur-start", type=float, default=None, help="first gradient blur σ (default: settings')")
    parser.add_argument("--blur-end", type=float, default=None, help="final gradient blur σ (default: settings')")
    parser.add_argument("--init-std", type=float, default=None, help="starting noise std (default: settings')")
    parser.add_argument("--max-steps", type=int, default=None, help="step cap of the max run (default --steps)")
    parser.add_argument(
        "--contrast",
        type=float,
        default=None,
        help="RMS contrast cap, no floor (default: the fit images' natural range, as closedloop synth's)",
    )
    parser.add_argument(
        "--start",
        choices=START_MODES,
        default="blank",
        help="where rate targets start (default blank, as synth's; natural: a fit image close to the target)",
    )
    parser.add_argument("--seed", type=int, default=0, help="fit and synthesis seed (default 0)")
    parser.add_argument("--refit", action="store_true", help="fit again even if a cached fit matches")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.steps < 1:
        parser.error("--threads and --steps must be at least 1")
    return args


def session_archive(folder: Path, args: argparse.Namespace) -> Path:
    """The simulated session (seed 1), made once and reused while its spec is unchanged."""
    from closedloop.sim.archive import ArchiveSpec, make_archive

    folder.mkdir(parents=True, exist_ok=True)
    path, stamp = folder / "sim01.h5", folder / "sim01.spec.json"
    wanted = json.dumps({"seed": 1, "units": args.units, "images": args.images, "repeats": args.repeats})
    if not (path.exists() and stamp.exists() and stamp.read_text() == wanted):
        started = time.perf_counter()
        make_archive(
            path,
            ArchiveSpec(layout="session", seed=1, n_units=args.units, n_images=args.images, n_repeats=args.repeats),
            overwrite=True,
        )
        stamp.write_text(wanted)
        print(f"made {path} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return path


def fitted_model(archive: Path, folder: Path, args: argparse.Namespace) -> Path:
    """The checkpoint of ``archive``, fitted once per configuration (cached by its text)."""
    from closedloop.fitting.model_files import default_config, load_config_yaml, named_config
    from closedloop.fitting.session import FitSettings, fit_session

    config = (
        load_config_yaml(args.config)
        if args.config
        else (named_config(args.preset) if args.preset else default_config())
    )
    members = args.ensemble if args.ensemble else (config.ensemble_size if config.ensemble_size > 1 else 4)
    config = config.replace(ensemble_size=members)
    wanted = json.dumps(
        {"archive": archive.with_suffix(".spec.json").read_text(), "config": config.to_dict(), "seed": args.seed},
        sort_keys=True,
    )
    model, stamp = folder / "sim01" / "model.pt", folder / "fit.json"
    if args.refit or not (model.exists() and stamp.exists() and stamp.read_text() == wanted):
        started = time.perf_counter()
        fit_session(archive, folder, "sim01", FitSettings(config=config, device="cpu", seed=args.seed))
        stamp.write_text(wanted)
        print(f"fitted {model} ({members} members) in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return model


def run_synthesis(checkpoint, targets: str, args: argparse.Namespace, starts=None):
    from closedloop.synth.canvas import Canvas
    from closedloop.synth.optimise import SynthesisSettings
    from closedloop.synth.plan import synthesize_from_checkpoint

    options = {"steps": args.steps, "tolerance_hz": args.tolerance, "tv_weight": args.tv}
    if args.blur_start is not None:
        options["blur_start"] = args.blur_start
    if args.blur_end is not None:
        options["blur_end"] = args.blur_end
    if args.init_std is not None:
        options["init_std"] = args.init_std
    if targets == "max" and args.max_steps:
        options["steps"] = args.max_steps
    canvas = Canvas.for_preprocessing(checkpoint.preprocessing, max_contrast=args.contrast)
    return synthesize_from_checkpoint(
        checkpoint, "all", targets, settings=SynthesisSettings(**options), canvas=canvas, seed=args.seed, starts=starts
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from closedloop.model.checkpoint import load_checkpoint
    from closedloop.model.device import describe_device, resolve_device
    from closedloop.synth.verify import ground_truth_report

    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    archive = session_archive(args.out / "archives", args)
    model_path = args.model or fitted_model(archive, args.out / "fit", args)
    checkpoint = load_checkpoint(model_path, device)
    if device.type == "cuda":  # untimed warm-up: CUDA context, cuDNN autotuning
        warm = argparse.Namespace(**{**vars(args), "steps": 20})
        run_synthesis(checkpoint, "p50", warm)

    from closedloop.synth.plan import checkpoint_starts

    starts = checkpoint_starts(checkpoint, archive) if args.start == "natural" else None
    graded = run_synthesis(checkpoint, PERCENTILE_TARGETS, args, starts)
    maxed = run_synthesis(checkpoint, "max", args)
    numbers = ground_truth_report(archive, checkpoint, graded.result, maxed.result)
    g, m = graded.result, maxed.result
    numbers.update(
        {
            "device": describe_device(device),
            "members": int(checkpoint.model.n_members),
            "model": str(model_path),
            "settings": g.settings.to_dict(),
            "start": args.start,
            "canvas": g.canvas.to_dict(),
            "time_percentiles_s": g.seconds,
            "images_percentiles": len(g.jobs),
            "converged_fraction": float(np.mean(g.converged)),
            "median_steps": float(np.median(g.steps)),
            "time_max_s": m.seconds,
            "images_max": len(m.jobs),
        }
    )
    print(
        f"synthesis benchmark: {numbers['n_units']} units, {checkpoint.model.n_members}-member ensemble "
        f"({model_path}), device {numbers['device']}"
    )
    print(
        f"  {len(g.jobs)} images ({PERCENTILE_TARGETS}) in {g.seconds:.1f} s; "
        f"{100 * numbers['converged_fraction']:.0f} % within {args.tolerance:g} Hz of target (model), "
        f"median {numbers['median_steps']:.0f} steps; {len(m.jobs)} max images in {m.seconds:.1f} s "
        f"({m.settings.steps} steps)"
    )
    for name, row in numbers["units"].items():
        print(f"  {name}: {row['n_units']} units")
        print(
            f"    target vs truth r: pooled {row['pooled_r']:.3f}, median per unit {row['median_unit_r']:.3f} "
            f"(slope {row['median_unit_slope']:.2f}); model prediction vs truth r {row['pooled_r_model_vs_truth']:.3f}"
        )
        print(
            f"    median |truth - target| / natural range: {row['median_abs_error_over_range']:.3f} "
            f"(optimiser alone: {row['model_median_abs_error_over_range']:.3f})"
        )
        print(
            f"    max beats best natural image: {100 * row['max_beats_best_natural']:.0f} % of units "
            f"(median truth / best natural {row['max_true_over_best_natural']:.2f})"
        )
        for kind, rf in row["rf_similarity"].items():
            if rf["n"]:
                print(
                    f"    RF similarity, {kind} ({rf['n']}): max image {rf['max_image']:.2f}, "
                    f"p80 - p20 {rf['p80_minus_p20']:.2f}"
                )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(numbers, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
