"""Synthesize stimuli that drive fitted units to target rates (docs/methods.md, Synthesis).

Gradient steps on the pixels push the model's (ensemble mean) prediction of each chosen
unit to each target: a percentile of the unit's natural-image rates (p20), the highest
rate the model allows (max) or a rate (12.5hz).  Images start from the blank screen; with
--start natural a rate target instead edits a fitted image the model and the recording both
put close to it (read from the session the model records, or --data).
Images stay inside the circular aperture, in the display's range and at the rig's
mean luminance.  OUT/library.h5 holds the images (model and display resolution) with
their provenance; OUT/fig4.png shows them (rows: units, columns: targets).

Exit status: 0 when every rate target was reached within the tolerance, 1 when some
were not (their achieved rate and gap are printed), 2 for bad arguments or input.
"""

# Work modules are imported inside run() and its helpers: cli.py imports every command module to
# build its parser, so each must load fast.
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from closedloop.commands.common import add_json_option, non_negative_int, positive_int, write_json
from closedloop.config.protocol import DEFAULT_HELDOUT_MEMBERS, START_MODES
from closedloop.errors import ClosedLoopError, DataFileError


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _contrast(text: str) -> float | str:
    if text in ("natural", "none"):
        return text
    try:
        return _positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"give an RMS contrast > 0, 'natural' or 'none', got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", type=Path, metavar="MODEL", help="fitted model (model.pt, or the folder `closedloop fit` wrote it to)"
    )
    parser.add_argument(
        "--units", default="all", help="unit ids '3,7,12', 'top:K' (best held-out r) or 'all' (default)"
    )
    parser.add_argument(
        "--targets",
        default="p20,p35,p50,p65,p80",
        help="comma list of percentiles (p20), max, rates (12.5hz); default p20,p35,p50,p65,p80",
    )
    parser.add_argument(
        "--hold-others", action="store_true", help="hold the other selected units at their baseline (blank-screen) rate"
    )
    parser.add_argument(
        "--hold", default=None, metavar="IDS", help="unit ids to hold at baseline while driving each unit"
    )
    parser.add_argument(
        "--images-per-target",
        type=positive_int,
        default=1,
        help="images (different noise seeds) per unit and target (default 1)",
    )
    parser.add_argument("--steps", type=positive_int, default=500, help="step cap per image (default 500)")
    parser.add_argument(
        "--tolerance",
        type=_positive_float,
        default=0.5,
        metavar="HZ",
        help="an image is done when this close to its target (default 0.5 Hz)",
    )
    parser.add_argument(
        "--contrast",
        type=_contrast,
        default="natural",
        metavar="RMS|natural|none",
        help="RMS contrast inside the aperture: a number (a cap), 'natural' (default: between the 0.05 and "
        "0.95 quantiles of the fit images' RMS contrast, as the model records them) or 'none'",
    )
    parser.add_argument(
        "--min-r",
        type=float,
        default=None,
        metavar="R",
        help="skip units whose held-out r is below R (default 0.3); -1 keeps every unit",
    )
    parser.add_argument(
        "--disagreement",
        type=float,
        default=0.0,
        metavar="W",
        help="penalty weight on the ensemble members' disagreement for 'max' images (default 0; "
        "'max' then maximises rate - W x spread)",
    )
    parser.add_argument(
        "--heldout-members",
        type=non_negative_int,
        default=DEFAULT_HELDOUT_MEMBERS,
        metavar="K",
        help=f"ensemble members kept out of the optimisation whose mean is the reported prediction, so 'max' "
        f"images are not promised the optimising members' over-estimate (default {DEFAULT_HELDOUT_MEMBERS}; "
        "0: every member optimises and predicts; ignored when fewer than 2 members would optimise)",
    )
    parser.add_argument(
        "--start",
        choices=START_MODES,
        default="blank",
        help="where rate targets start: 'blank' (default: grey) or 'natural' (a fitted image that the model and "
        "the measured rates put close to the target, edited to reach it; 'max' starts from grey either way)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="FILE",
        help="the session or pvc-8 file the model was fitted on, for --start natural "
        "(default: the path the model records)",
    )
    parser.add_argument(
        "--presentations",
        type=positive_int,
        default=20,
        metavar="N",
        help="presentations planned per image: the ± 95 %% column is the interval for the mean rate over N "
        "(default 20, the pvc-8 design)",
    )
    parser.add_argument("--tv", type=float, default=0.0, help="total-variation penalty weight (default 0)")
    parser.add_argument(
        "--display-size",
        type=positive_int,
        default=66,
        help="stimulus array side in px, the rig's stimulus.size_px (default 66)",
    )
    parser.add_argument(
        "--aperture-px", type=_positive_float, default=60.0, help="aperture diameter in display px (default 60)"
    )
    parser.add_argument(
        "--mean-luminance",
        type=_fraction,
        default=0.5,
        help="the rig's grey, a fraction of the display range (default 0.5)",
    )
    parser.add_argument("--seed", type=non_negative_int, default=None, help="noise seed (default: drawn and recorded)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on stderr (default: only on a terminal)",
    )
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    import secrets

    import numpy as np

    from closedloop.model.checkpoint import load_checkpoint
    from closedloop.synth.canvas import Canvas
    from closedloop.synth.figure import library_figure
    from closedloop.synth.interval import lower_end_hz, max_promise_hz, planned_interval_hz, top_ratio
    from closedloop.synth.library import read_library, write_library
    from closedloop.synth.optimise import SynthesisSettings
    from closedloop.synth.plan import DEFAULT_MIN_HELDOUT_R, checkpoint_starts, synthesize_from_checkpoint
    from closedloop.synth.targets import parse_targets

    parse_targets(args.targets)  # bad targets fail before the model loads
    if args.tv < 0:
        raise ClosedLoopError(f"--tv must be 0 or more, got {args.tv}")
    if not args.disagreement >= 0 or args.disagreement == float("inf"):
        raise ClosedLoopError(f"--disagreement must be a finite number >= 0, got {args.disagreement}")
    min_r = DEFAULT_MIN_HELDOUT_R if args.min_r is None else args.min_r
    if min_r != min_r:
        raise ClosedLoopError("--min-r must be a number, got nan")
    hold = None
    if args.hold:
        try:
            hold = [int(part) for part in args.hold.split(",") if part.strip()]
        except ValueError:
            raise ClosedLoopError(f"--hold {args.hold!r}: give unit ids like '3,7'") from None
    model_path = args.model / "model.pt" if args.model.is_dir() else args.model
    _check_not_hdf5(model_path)
    checkpoint = load_checkpoint(model_path, args.device)
    canvas = Canvas.for_preprocessing(
        checkpoint.preprocessing,
        display_size=args.display_size,
        aperture_diameter_px=args.aperture_px,
        mean_luminance=args.mean_luminance,
        max_contrast=args.contrast if isinstance(args.contrast, float) else None,
    )
    settings = SynthesisSettings(
        steps=args.steps,
        tolerance_hz=args.tolerance,
        tv_weight=args.tv,
        disagreement_weight=args.disagreement,
        heldout_members=args.heldout_members,
    )
    if args.data is not None and args.start != "natural":
        raise ClosedLoopError("--data is read for --start natural only; leave it out with --start blank")
    starts = checkpoint_starts(checkpoint, args.data) if args.start == "natural" else None
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    show = sys.stderr.isatty() if args.progress is None else args.progress

    def progress(step: int, total: int, active: int) -> None:
        print(f"\rsynth: step {step}/{total}, {active} image(s) still optimising", end="", file=sys.stderr)

    made = synthesize_from_checkpoint(
        checkpoint,
        args.units,
        args.targets,
        hold_others=args.hold_others,
        hold=hold,
        settings=settings,
        canvas=canvas,
        seed=seed,
        images_per_target=args.images_per_target,
        progress=progress if show else None,
        min_heldout_r=None if min_r <= -1 else min_r,
        contrast=args.contrast if isinstance(args.contrast, str) else None,
        starts=starts,
    )
    for unit, r in made.skipped:
        print(
            f"synth: skipped unit {unit}: held-out r {r:.2f} is below {min_r:g}, so the model cannot promise "
            "a rate for it (--min-r lowers the threshold)"
        )
    narrow = _narrow_targets(made)
    for line in narrow:
        print(f"synth: {line}")
    bound, floor = made.contrast["max_contrast"], made.contrast["min_contrast"]
    within = "none" if bound is None else f"{bound:.3f}" if floor is None else f"{floor:.3f} to {bound:.3f}"
    print(f"synth: RMS contrast {within} ({made.contrast['source']})")
    if show:
        print(file=sys.stderr)
    library_path = write_library(
        args.out / "library.h5",
        made.result,
        unit_ids=made.unit_ids,
        model_path=str(model_path),
        model_version=checkpoint.model_version,
        model_created=checkpoint.created,
        run_seed=seed,
    )
    library = read_library(library_path)
    figure_path = library_figure(library, args.out / "fig4.png")

    interval = checkpoint.recorded("heldout_interval_sds")
    maximise = library.target_kind == "max"
    promised = np.where(maximise, max_promise_hz(checkpoint, library.achieved_hz), library.achieved_hz)
    planned = planned_interval_hz(checkpoint, library.unit_id, promised, library.spread_hz, args.presentations)
    # a "max" image keeps only the interval's lower end (see _spread_note)
    interval_hz = np.where(maximise, np.nan, planned)
    at_least_hz = np.where(maximise, lower_end_hz(promised, planned), np.nan)
    rows = _table_rows(library, promised, interval_hz, at_least_hz)
    print(_format_table(rows))
    spread_factor = checkpoint.recorded("heldout_error_over_spread")
    print(_spread_note(spread_factor, interval, args.presentations, checkpoint.rate_statistics.noise_per_hz))
    ratio = top_ratio(checkpoint)
    if maximise.any():
        print(_max_note(ratio))
    result = made.result
    missed = int(np.sum(~result.converged & (library.target_kind != "max")))
    print(
        f"{len(library)} image(s) for {len(set(library.unit_id.tolist()))} unit(s) in {result.seconds:.1f} s "
        f"on {result.device} (model version {checkpoint.model_version}, seed {seed}); "
        f"{missed} target(s) not reached within {args.tolerance:g} Hz"
    )
    print(f"wrote {library_path} and {figure_path}")
    write_json(
        args.json,
        {
            "format": "closedloop-synth-summary",
            "model": str(model_path),
            "model_version": checkpoint.model_version,
            "library": str(library_path),
            "figure": str(figure_path),
            "seed": seed,
            "device": result.device,
            "seconds": result.seconds,
            "settings": settings.to_dict(),
            "canvas": made.result.canvas.to_dict(),
            "contrast_bound": made.contrast,
            "min_heldout_r": min_r,
            "start": "blank" if starts is None else "natural",
            "skipped_units": [{"unit_id": u, "heldout_r": r} for u, r in made.skipped],
            "images": rows,
            "not_reached": missed,
            "heldout_error_over_spread": spread_factor,
            "heldout_interval_sds": interval,
            "heldout_top_ratio": ratio,
            "presentations": args.presentations,
            "narrow_targets": narrow,
        },
    )
    return 1 if missed else 0


def _check_not_hdf5(path: Path) -> None:
    """A session or stimulus library given as MODEL gets a plain message, not torch's."""
    try:
        with open(path, "rb") as handle:
            signature = handle.read(8)
    except OSError:
        return  # load_checkpoint reports missing files
    if signature == b"\x89HDF\r\n\x1a\n":
        raise DataFileError(
            path,
            "is an HDF5 file (a session or stimulus library?), not a fitted model; "
            "give the model.pt that `closedloop fit` wrote",
        )


def _table_rows(library, promised_hz, interval_hz, at_least_hz) -> list[dict]:
    import numpy as np

    rows = []
    for i in range(len(library)):
        maximise = library.target_kind[i] == "max"
        rows.append(
            {
                "unit": int(library.unit_id[i]),
                "target": str(library.target_label[i]),
                "target_hz": None if maximise else float(library.target_hz[i]),
                "achieved_hz": float(library.achieved_hz[i]),
                "promised_hz": float(promised_hz[i]),
                "spread_hz": None if not np.isfinite(library.spread_hz[i]) else float(library.spread_hz[i]),
                "interval_hz": None if not np.isfinite(interval_hz[i]) else float(interval_hz[i]),
                "at_least_hz": None if not np.isfinite(at_least_hz[i]) else float(at_least_hz[i]),
                "gap_hz": None if maximise else float(library.achieved_hz[i] - library.target_hz[i]),
                "converged": bool(library.converged[i]),
                "steps": int(library.steps[i]),
                "seed": int(library.seed[i]),
                "start_image_id": None if library.start_image_id[i] < 0 else int(library.start_image_id[i]),
            }
        )
    return rows


def _narrow_targets(made) -> list[str]:
    """A warning per unit whose percentile targets ask for nearly the same rate."""
    from closedloop.config.target_span import narrow_percentile_targets

    by_unit: dict[int, list[float]] = {}
    for job in made.result.jobs:
        if job.target.kind == "percentile":
            by_unit.setdefault(int(job.unit), []).append(job.target_hz)
    lines = [
        narrow_percentile_targets(int(made.unit_ids[column]), rates, float(made.scale_hz[column]))
        for column, rates in by_unit.items()
    ]
    return [line for line in lines if line]


def _spread_note(factor: float | None, interval: float | None, presentations: int, noise) -> str:
    """What "± sd" and "± 95 %" are, and where the interval's factor comes from."""
    missed = "" if factor is None else f"; its held-out photographs' rates missed by {factor:.1f}x it (rms)"
    if interval is None or noise is None:
        return (
            f"± sd is the ensemble members' spread, not an error bar{missed}. This model records no "
            f"{'95 % interval' if interval is None else 'trial noise'}, so ± 95 % is empty (fit it again for one)"
        )
    return (
        f"± sd is the ensemble members' spread, not an error bar{missed}. ± 95 % is the interval for an "
        f"image's mean rate over {presentations} presentations (--presentations): promise ± {interval:.1f} x "
        "√(sd² + se²), se from the unit's trial noise at the promised rate, the factor such that 95 % of the "
        "model's held-out photographs' trial means lay inside; on six simulated brains it held 93-100 % of rate "
        "targets' measured means. 'max' images get only its lower end (≥): their rates miss their promise by "
        "more than the photographs', so on eight simulated brains the whole interval held only 59-97 % of their "
        "measured means, its lower end 93-100 %. closedloop run's loop report sets the factor from the "
        "synthesized images' own responses"
    )


def _max_note(ratio: float | None) -> str:
    """Where a "max" image's promised rate comes from (``ratio``: the model's recorded top ratio)."""
    if ratio is None or ratio <= 0:  # `closedloop.model.metrics.promise_ratio` then promises the prediction
        return (
            "'max' images are promised their prediction: this model records no measured / predicted rate at its "
            "units' top held-out photographs (fit it again for one)"
        )
    return (
        f"'max' images are promised {ratio:.2f} x their prediction: at each unit's top-predicted held-out "
        f"photograph the measured rate was {ratio:.2f} x the prediction (median over units), and an image chosen "
        "for its high prediction is held to the same"
    )


def _format_table(rows: list[dict]) -> str:
    # "± sd": the ensemble members' spread around the prediction (how sure the model is)
    # "from": the fitted image (stimulus id) the optimisation started from, or the blank screen
    # "± 95 %": the interval for the image's mean rate over the planned presentations
    # "promised Hz": the prediction, and for a "max" image the prediction times the model's top ratio
    header = (
        f"{'unit':>6} {'target':>8} {'target Hz':>10} {'achieved Hz':>12} {'promised Hz':>12} {'± sd':>7} "
        f"{'± 95 %':>7} {'gap Hz':>8} {'from':>7}"
    )
    lines = [f"{header}  converged"]
    for row in rows:
        target = "—" if row["target_hz"] is None else f"{row['target_hz']:.2f}"
        gap = "—" if row["gap_hz"] is None else f"{row['gap_hz']:+.2f}"
        spread = "—" if row.get("spread_hz") is None else f"{row['spread_hz']:.2f}"
        interval = "—" if row.get("interval_hz") is None else f"{row['interval_hz']:.1f}"
        if row.get("at_least_hz") is not None:  # a "max" image: only the interval's lower end
            interval = f"≥{row['at_least_hz']:.1f}"
        start = "blank" if row.get("start_image_id") is None else str(row["start_image_id"])
        done = "max" if row["target"] == "max" else ("yes" if row["converged"] else "NO")
        lines.append(
            f"{row['unit']:>6} {row['target']:>8} {target:>10} {row['achieved_hz']:>12.2f} {row['promised_hz']:>12.2f} "
            f"{spread:>7} {interval:>7} {gap:>8} {start:>7}  {done}"
        )
    return "\n".join(lines)
