"""Run the main job in simulation on this machine.

Until the real-time closed loop is wired together, the demo runs one loop iteration
offline, with every step the loop will use: it simulates a V1 population and records a
natural-image and grating session from it, fits the network to that session, synthesizes
images that should drive the best-predicted units to chosen rates, and asks the simulated
neurons (the ground truth) what they would really do with those images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from closedloop.commands.common import add_json_option, non_negative_int, positive_int, write_json

DEMO_TARGETS = "p20,p50,p80"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for the demo's files (default out/demo)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the simulated population (default 0)")
    parser.add_argument("--top", type=positive_int, default=8, help="best-predicted units to synthesize for (default 8)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    smaller = parser.add_argument_group("a smaller demo (defaults: the paper's experiment)")
    smaller.add_argument("--population", type=positive_int, default=40, help="simulated units (default 40)")
    smaller.add_argument("--images", type=positive_int, default=270, help="natural images (default 270)")
    smaller.add_argument("--repeats", type=positive_int, default=20, help="repeats per image (default 20)")
    smaller.add_argument("--config", type=Path, default=None, help="model YAML (default: closedloop fit's default)")
    smaller.add_argument("--steps", type=positive_int, default=None, help="synthesis step cap (default: synth's)")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from closedloop.fitting.model_files import default_config, load_config_yaml
    from closedloop.fitting.session import FitSettings, fit_session
    from closedloop.model.checkpoint import load_checkpoint
    from closedloop.model.device import resolve_device
    from closedloop.sim.archive import ArchiveSpec, make_archive
    from closedloop.synth.figure import library_figure
    from closedloop.synth.library import read_library, write_library
    from closedloop.synth.optimise import SynthesisSettings
    from closedloop.synth.plan import synthesize_from_checkpoint
    from closedloop.synth.verify import ground_truth_report

    device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    session = args.out / "sim_session.h5"
    step(1, f"simulating a V1 population and recording a session into {session}")
    spec = ArchiveSpec(layout="session", seed=args.seed, n_units=args.population, n_images=args.images,
                       n_repeats=args.repeats)
    archive = make_archive(session, spec, overwrite=True)
    print(archive.text())

    config = load_config_yaml(args.config) if args.config else default_config()
    step(2, f"fitting a {config.ensemble_size}-member {config.architecture} ensemble and the linear baseline "
            f"on {device} (the slow step on a CPU)")
    outcome = fit_session(session, args.out, "fit", FitSettings(config=config, device=str(device), seed=args.seed))
    fit = outcome.summary
    print(f"held-out images: mean r {fit['mean_r']:.2f} (linear baseline {fit['mean_r_linear']:.2f}), "
          f"mean r/rmax {fit['mean_r_over_rmax']:.2f} over {fit['n_units']} units; "
          f"fit took {outcome.times_s['total']:.0f} s")

    step(3, f"synthesizing images for the {args.top} best-predicted units: targets {DEMO_TARGETS} and max")
    checkpoint = load_checkpoint(Path(outcome.folder) / "model.pt", device)
    settings = SynthesisSettings() if args.steps is None else SynthesisSettings(steps=args.steps)
    units = f"top:{args.top}"
    graded = synthesize_from_checkpoint(checkpoint, units, DEMO_TARGETS, settings=settings, seed=args.seed)
    maxed = synthesize_from_checkpoint(checkpoint, units, "max", settings=settings, seed=args.seed)
    library = write_library(args.out / "library.h5", graded.result, unit_ids=graded.unit_ids,
                            model_path=str(Path(outcome.folder) / "model.pt"),
                            model_version=int(checkpoint.model_version), run_seed=args.seed)
    figure = library_figure(read_library(library), args.out / "synthesized.png")
    print(f"{len(graded.result.jobs) + len(maxed.result.jobs)} images in "
          f"{graded.result.seconds + maxed.result.seconds:.1f} s -> {library}, {figure}")

    step(4, "showing them to the simulated neurons (ground truth)")
    truth = ground_truth_report(session, checkpoint, graded.result, maxed.result)
    chosen = truth["units"]["all units"]
    print(f"target vs true rate: median per-unit correlation {chosen['median_unit_r']:.2f}, "
          f"median error {100 * chosen['median_abs_error_over_range']:.1f} % of the unit's natural-image range")
    print(f"'max' images beat the unit's best natural image for {100 * chosen['max_beats_best_natural']:.0f} % "
          f"of units (median {chosen['max_true_over_best_natural']:.2f}x its rate)")
    write_json(args.json, {"archive": archive.to_dict(), "fit": fit, "synthesis_vs_truth": truth})
    return 0


def step(number: int, text: str) -> None:
    print(f"\n[{number}/4] {text} ...", flush=True)
