"""Benchmark: the closed loop in simulation — turnaround, control accuracy, presenter frames (benchmarks/README.md).

Runs a protocol on a simulated rig as threads of this process: the simulated array, the
headless presenter, the real model server (`ModelServer`, device ``--device``) and the
runner.  Then, from the session file and the runner's journal (`loop_report`):

1. Turnaround per loop iteration: from a presentation block's last response in hand to
   the next synthesized images ready (SynthesizeResult received), split into response
   extraction (align, count, store, the server accepts them), refit (asked for →
   ModelUpdated) and synthesis (SynthesizeRequest → SynthesizeResult); median and max
   over iterations, and over iterations after the first (which pays for the device's
   first use: CUDA context, cuDNN, the first synthesis).
2. Control accuracy per iteration: targets vs measured (simulated spikes) and vs the
   brain's true expected rates, "max" images vs the best natural image, and whether the
   refit on the synthesized images' responses predicts them better (saved models).
3. The PsychoPy presenter's frame intervals and dropped frames over ``--presenter-stimuli``
   trials at the protocol's timing (`benchmarks/presenter.py`, under Xvfb when there is no
   display); skipped, with a line saying why, when neither a display nor xvfb-run exists.

The loop runs once on the rig's own brain, or with ``--families`` once per simulator family
of `benchmarks/generalise.py` (the rig with that family's scenario) and with ``--scenario
NAME=PATH`` once on any other scenario file, such as a lab's own brain (``family: plugin``),
after the families; a table then gives, per
brain and iteration, the held-out r/rmax of the model that made the images and the targets
vs truth figures of the loop report.  ``--seeds`` repeats every loop once per seed (the
protocol's seed and its synthesis seed; the brain and its natural images stay) and adds each
brain's figures per iteration as mean ± sd over the runs: three small refits in a row amplify
differences as small as float rounding, so one run cannot tell two settings apart.

Prints human lines, then writes everything as JSON with ``--json PATH``.

Usage::

    python benchmarks/loop.py                                         # fast_loop on 2 CPU threads
    python benchmarks/loop.py --device cuda                           # on a GPU
    python benchmarks/loop.py --protocol protocols/demo.yaml --iterations 3 --presenter-stimuli 0
    python benchmarks/loop.py --families classic,normalisation,deep,offset,textures --presenter-stimuli 0
    python benchmarks/loop.py --protocol protocols/demo.yaml --iterations 3 --presenter-stimuli 0 \
        --families classic,offset --seeds 1,2,3
    PYTHONPATH=mylab python benchmarks/loop.py --scenario mine=mylab/brain.yaml --presenter-stimuli 0
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="model server device: cpu (default), cuda, cuda:N or auto")
    parser.add_argument(
        "--protocol",
        type=Path,
        default=ROOT / "protocols/fast_loop.yaml",
        help="protocol (default protocols/fast_loop.yaml)",
    )
    parser.add_argument(
        "--rig", type=Path, default=ROOT / "rigs/sim.yaml", help="simulated rig (default rigs/sim.yaml)"
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="iterations of the protocol's synthesize loop (default: the protocol's)",
    )
    parser.add_argument(
        "--shown",
        type=int,
        default=None,
        help="presentations of each synthesized image (the loop's present_synthesized repeats; default: the "
        "protocol's); 1 checks the interval of an image shown once",
    )
    parser.add_argument(
        "--families",
        default=None,
        help="comma list of simulator families (benchmarks/generalise.py: classic, normalisation, deep, "
        "offset, textures, normalised-rim) to run the loop on, one after the other (default: the rig's own brain)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="also run the loop on this scenario file as family NAME, e.g. your own brain (family: plugin); repeatable",
    )
    parser.add_argument(
        "--seeds",
        default=None,
        help="comma list of seeds: run each loop once per seed (the protocol's seed and synthesis seed: "
        "trial order, fit splits and initial weights, synthesis starting noise; the brain and its images stay), "
        "then give each brain's figures per iteration as mean and sd over the runs (default: the protocol's seeds)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the session, models and figure (default: a new temporary folder)",
    )
    parser.add_argument(
        "--no-models",
        action="store_true",
        help="do not save model versions (the refit check "
        "then has nothing to load; saving costs a little inside each refit)",
    )
    parser.add_argument(
        "--presenter-stimuli",
        type=int,
        default=1000,
        help="trials for the presenter measurement (default 1000; 0 skips it)",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="stop the loop after this many seconds")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.iterations is not None and args.iterations < 1:
        parser.error("--iterations must be at least 1")
    if args.shown is not None and args.shown < 1:
        parser.error("--shown must be at least 1")
    if args.presenter_stimuli < 0:
        parser.error("--presenter-stimuli must be 0 (skip) or more")
    args.family_list = None if args.families is None else [f.strip() for f in args.families.split(",") if f.strip()]
    try:
        args.seed_list = [None] if args.seeds is None else [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be a comma list of integers, got {args.seeds!r}")
    if not args.seed_list or any(s is not None and s < 0 for s in args.seed_list):
        parser.error(f"--seeds must name at least one seed, none negative, got {args.seeds!r}")
    generalise = _generalise()
    try:  # family name -> scenario file: generalise.py's (repository-relative) and --scenario's
        args.scenarios = generalise.with_scenarios(args.scenario)
    except ValueError as error:
        parser.error(str(error))
    args.own_scenarios = [name for name in args.scenarios if name not in generalise.FAMILIES]
    if args.own_scenarios:
        args.family_list = list(dict.fromkeys([*(args.family_list or []), *args.own_scenarios]))
    if args.family_list is not None:
        unknown = [f for f in args.family_list if f not in args.scenarios]
        if unknown or not args.family_list:
            parser.error(f"unknown families {unknown}; choose from {', '.join(args.scenarios)}")
    return args


def _generalise():
    """benchmarks/generalise.py as a module: its families are the loop's."""
    spec = importlib.util.spec_from_file_location("benchmark_generalise", ROOT / "benchmarks/generalise.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def family_rig(rig_path: Path, scenario: Path, folder: Path) -> Path:
    """A copy of the rig (in ``folder``) whose simulated array is ``scenario``'s population.

    The copy, not an in-memory change, so the session file records the rig that ran.
    """
    import yaml

    data = yaml.safe_load(rig_path.read_text())
    acquisition = data.get("acquisition") or {}
    acquisition.pop("brain", None)  # a rig names its brain or a scenario, not both
    acquisition["scenario"] = str(scenario.resolve())
    data["acquisition"] = acquisition
    copy = folder / rig_path.name
    copy.write_text(yaml.safe_dump(data, sort_keys=False))
    return copy


def family_images(scenario: Path) -> str | None:
    """The image set a scenario's population is shown (``population.images``), if it names one."""
    import yaml

    population = (yaml.safe_load(scenario.read_text()) or {}).get("population") or {}
    return population.get("images")


def brains(args: argparse.Namespace, folder: Path) -> list[tuple[str, Path, str | None, Path]]:
    """(brain name, rig file, image set, output folder) of each run: the rig's own brain with the
    protocol's images, or one per ``--families`` with the images its archives show."""
    if args.family_list is None:
        return [("rig", args.rig, None, folder)]
    runs = []
    for name in args.family_list:
        out = folder / name
        out.mkdir(parents=True, exist_ok=True)
        scenario = Path(args.scenarios[name]) if name in args.own_scenarios else ROOT / args.scenarios[name]
        runs.append((name, family_rig(args.rig, scenario, out), family_images(scenario), out))
    return runs


def protocol_copy(
    protocol_path: Path,
    folder: Path,
    *,
    iterations: int | None,
    images: str | None,
    seed: int | None = None,
    shown: int | None = None,
) -> Path:
    """The protocol with its synthesize loop set to ``iterations`` and its synthesized images shown
    ``shown`` times, its natural-image pool drawn from ``images`` and its own and its synthesis's seed
    set to ``seed`` (a copy in ``folder``), or itself when none is given."""
    import yaml

    if iterations is None and images is None and seed is None and shown is None:
        return protocol_path
    data = yaml.safe_load(protocol_path.read_text())
    if iterations is not None or shown is not None:
        loops = [
            b
            for b in data.get("blocks", [])
            if b.get("kind") == "loop" and any(inner.get("kind") == "synthesize" for inner in b.get("blocks", []))
        ]
        if not loops:
            raise SystemExit(f"benchmarks/loop.py: {protocol_path} has no loop with a synthesize block")
        if iterations is not None:
            loops[-1]["iterations"] = iterations
        for inner in loops[-1]["blocks"] if shown is not None else []:
            if inner.get("kind") == "present_synthesized":
                inner["repeats"] = shown
    if images is not None:
        data.setdefault("images", {})["source"] = images
    if seed is not None:
        data["seed"] = seed
        if data.get("synthesis") is not None:
            data["synthesis"]["seed"] = seed
    copy = folder / protocol_path.name
    copy.write_text(yaml.safe_dump(data, sort_keys=False))
    return copy


def run_loop(args: argparse.Namespace, folder: Path) -> tuple[Any, float, dict]:
    """Run the protocol; (loop report, seconds, what ran)."""
    import torch

    from closedloop.config import load_protocol, load_rig, validate
    from closedloop.loop import run_until_done, simulated_brain, simulated_components
    from closedloop.transport import Endpoints
    from closedloop.reports.loop_report import loop_report
    from closedloop.server import ModelServer
    from closedloop.server.settings import ServerSettings

    from closedloop.model.device import resolve_device

    torch.set_num_threads(args.threads)
    device = str(resolve_device(args.device))  # here, so a missing GPU stops the benchmark instead of the server
    rig = load_rig(args.rig)
    protocol = load_protocol(
        protocol_copy(
            args.protocol,
            folder,
            iterations=args.iterations,
            images=getattr(args, "images", None),
            seed=getattr(args, "seed", None),
            shown=args.shown,
        )
    )
    validate(rig, protocol)
    if rig.acquisition.kind != "sim":
        raise SystemExit(f"benchmarks/loop.py: {args.rig} is not a simulated rig (acquisition.kind: sim)")
    endpoints = Endpoints.inproc()
    models = None if args.no_models else folder / "models"
    settings = ServerSettings.from_configs(
        rig,
        protocol,
        request_endpoint=endpoints.model,
        events_endpoint=endpoints.model_events,
        out_dir=models,
        device=device,
    )
    brain = simulated_brain(rig)
    session = folder / "loop.h5"
    loop = simulated_components(
        rig,
        protocol,
        session,
        endpoints=endpoints,
        brain=brain,
        model_server=ModelServer("model", settings),
        overwrite=True,
    )
    started = time.perf_counter()
    outcome = run_until_done(loop, timeout_s=args.timeout)
    seconds = time.perf_counter() - started
    if not loop.runner.finished:
        print(f"warning: the loop did not finish ({outcome.reason}); reporting what was recorded", file=sys.stderr)
    report = loop_report(session, brain, models_dir=models)
    ran = {
        "protocol": protocol.name,
        "protocol_file": str(args.protocol),
        "rig": rig.name,
        "device": device,
        "fit": settings.model.to_dict(),
        "session": str(session),
        "finished": bool(loop.runner.finished),
        "reason": outcome.reason,
    }
    return report, seconds, ran


def turnaround_stats(report) -> dict[str, Any]:
    """Median and max of each turnaround part, over all iterations and after the first.

    Spans with several refits in between (a protocol's warm-up fits) are left out.
    """
    parts = ("total", "extraction", "refit", "synthesis", "other")
    rows = [it.turnaround for it in report.iterations if it.turnaround.is_loop]
    out: dict[str, Any] = {}
    for label, chosen in (("all", rows), ("after_first", rows[1:])):
        stats = {}
        for part in parts:
            values = np.asarray([getattr(t, part) for t in chosen], dtype=np.float64)
            values = values[np.isfinite(values)]
            stats[part] = {
                "median_s": float(np.median(values)) if values.size else None,
                "max_s": float(values.max()) if values.size else None,
                "n": int(values.size),
            }
        out[label] = stats
    return out


#: Targets vs truth per iteration: loop report summary key -> column of the per-brain table.
TRUTH_COLUMNS = {
    "r_target_true_unit_median": "r unit",
    "r_target_true": "r pooled",
    "slope_true_unit_median": "slope",
    "max_predicted_over_true": "max p/t",
    "max_promised_over_true": "prom.",
    "max_true_beats_best_natural": "beats",
    "max_spread_hz": "max sd",
    "error_over_spread_true": "miss/sd",
    "interval_sds": "k",
    "interval_halfwidth_pct": "± %",
    "true_within_interval": "in 95 %",
}


def truth_rows(report) -> list[dict[str, float]]:
    """Per iteration: model version and held-out r/rmax of the model that made the images, and
    the loop report's targets vs truth figures (`TRUTH_COLUMNS`)."""
    rows = []
    for it in report.iterations:
        model = it.model_before
        row = {
            "iteration": it.number,
            "model_version": model.version if model else -1,
            "r_over_rmax": model.r_over_rmax_mean if model else float("nan"),
        }
        row.update({key: it.summary[key] for key in TRUTH_COLUMNS})
        rows.append(row)
    return rows


def presenter_frames(args: argparse.Namespace, protocol: Path) -> dict[str, Any]:
    """benchmarks/presenter.py over ``--presenter-stimuli`` trials, or why it was skipped."""
    if args.presenter_stimuli == 0:
        return {"skipped": "--presenter-stimuli 0"}
    from closedloop.present import display_problem

    problem = display_problem()
    if problem is not None and shutil.which("xvfb-run") is None:
        return {"skipped": f"no display and no xvfb-run ({problem})"}
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "presenter.json"
        command = [
            sys.executable,
            str(ROOT / "benchmarks/presenter.py"),
            "--rig",
            str(args.rig),
            "--protocol",
            str(protocol),
            "--stimuli",
            str(args.presenter_stimuli),
            "--json",
            str(out),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            lines = (done.stderr or done.stdout).strip().splitlines()
            return {
                "skipped": f"benchmarks/presenter.py failed ({done.returncode}): {lines[-1] if lines else 'no output'}"
            }
        return json.loads(out.read_text())["results"][0]


def _s(value) -> str:
    return "   n/a" if value is None or not np.isfinite(value) else f"{value:6.3f}"


def _n(value, digits: int = 2) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def print_loop(report, seconds: float, ran: dict, stats: dict, load: tuple[float, float]) -> None:
    print(
        f"closed loop: protocol {ran['protocol']} on {ran['rig']} (brain: {ran['brain']}), model server on "
        f"{ran['device']}; "
        f"{len(report.iterations)} iterations in {seconds:.1f} s (load average {load[0]:.1f} before, "
        f"{load[1]:.1f} after; {os.cpu_count()} CPUs)"
    )
    print(
        f"{'iter':>4} {'model':>5} {'turn s':>6} {'extract':>7} {'refit':>6} {'synth':>6} {'other':>6} | "
        f"{'r meas':>6} {'err %':>5} {'r true':>6} {'err %':>5} | {'max/best':>8} {'true':>5} | "
        f"{'model r':>7} {'refit r':>7}"
    )
    for it in report.iterations:
        t, s = it.turnaround, it.summary
        version = it.model_before.version if it.model_before else 0
        total = _s(t.total) if t.is_loop else f"({t.n_fits}f)".rjust(6)  # warm-up refits in between
        print(
            f"{it.number:>4} {'v' + str(version):>5} {total} {_s(t.extraction):>7} {_s(t.refit)} "
            f"{_s(t.synthesis)} {_s(t.other)} | {_n(s['r_target_measured']):>6} {_n(s['error_measured_pct'], 0):>5} "
            f"{_n(s['r_target_true']):>6} {_n(s['error_true_pct'], 0):>5} | "
            f"{_n(s['max_measured_over_best_natural']):>8} {_n(s['max_true_over_best_natural']):>5} | "
            f"{_n(s['r_predicted_before']):>7} {_n(s['r_predicted_after']):>7}"
        )
    for label, name in (("all", "all iterations"), ("after_first", "after the first")):
        part = stats[label]
        if part["total"]["n"]:
            print(
                f"turnaround, {name}: median {part['total']['median_s']:.3f} s, max {part['total']['max_s']:.3f} s "
                f"(refit median {_n(part['refit']['median_s'], 3)} s, synthesis median "
                f"{_n(part['synthesis']['median_s'], 3)} s, extraction median "
                f"{_n(part['extraction']['median_s'], 3)} s)"
            )
    print(
        "columns: turn s = turnaround ((Nf): N refits in between, a warm-up, left out); r meas / r true = "
        "r(target, measured / true rate) over graded images; err % = median |rate - "
        "target| as % of the unit's natural-image range; max/best = 'max' images' rate / best natural image's "
        "(measured, true); model r / refit r = r(prediction, measured) on the iteration's images for the model "
        "that made them and the refit after their responses"
    )
    for note in report.notes:
        print(f"note: {note}")


def _truth_cell(key: str, value: float) -> str:
    """One `TRUTH_COLUMNS` figure as the table shows it."""
    if key in ("max_true_beats_best_natural", "true_within_interval"):
        return "n/a" if not np.isfinite(value) else f"{100 * value:.0f} %"
    if key == "interval_halfwidth_pct":
        return _n(value, 0)
    return _n(value, 1 if key in ("max_spread_hz", "error_over_spread_true", "interval_sds") else 2)


def print_truth(runs: list[dict]) -> None:
    """The targets vs truth table: one line per brain and iteration."""
    print(
        f"{'brain':>13} {'seed':>4} {'iter':>4} {'model':>5} {'r/rmax':>6} | "
        + " ".join(f"{label:>8}" for label in TRUTH_COLUMNS.values())
    )
    for run in runs:
        seed = "-" if run["seed"] is None else str(run["seed"])
        for row in run["truth"]:
            values = [_truth_cell(key, row[key]) for key in TRUTH_COLUMNS]
            print(
                f"{run['brain']:>13} {seed:>4} {row['iteration']:>4} {'v' + str(row['model_version']):>5} "
                f"{_n(row['r_over_rmax'], 3):>6} | " + " ".join(f"{v:>8}" for v in values)
            )
    print(
        "columns: r/rmax = held-out r/rmax (reliable units) of the model that made the images; r unit / r pooled "
        "= median per-unit / pooled r(target, true rate) over graded images; slope = median per-unit slope of true "
        "rate on target (1: the true rates span the asked range); max p/t = 'max' images' median "
        "predicted / true rate; prom. = the same for the rate the loop report promises them (the prediction "
        "times the measured / predicted rate the model recorded at its units' top held-out photographs); "
        "beats = 'max' images truly above the unit's best natural image; max sd = their "
        "median ensemble spread (Hz); miss/sd = rms(true - predicted rate) / rms spread over all the iteration's "
        "images (1: the spread is an honest error bar); k = the loop report's 95 % interval, promise ± k spreads, "
        "from what was known before the images were shown, ± % its median half-width as % of the unit's natural "
        "range; in 95 % = true rates inside it (95 % if honest)"
    )


#: Figures averaged over repeated runs: truth row key -> column label.
REPEAT_COLUMNS = {
    "r_over_rmax": "r/rmax",
    "r_target_true_unit_median": "r unit",
    "r_target_true": "r pooled",
    "slope_true_unit_median": "slope",
    "max_predicted_over_true": "max p/t",
    "max_promised_over_true": "prom.",
    "max_true_beats_best_natural": "beats",
    "error_over_spread_true": "miss/sd",
    "true_within_interval": "in 95 %",
}


def repeat_summary(runs: list[dict]) -> list[dict[str, Any]]:
    """Per brain and iteration, mean, sd, min and max over the runs (seeds) of `REPEAT_COLUMNS`,
    and of the turnaround median after the first iteration (one value per run)."""
    rows = []
    for brain in dict.fromkeys(run["brain"] for run in runs):
        mine = [run for run in runs if run["brain"] == brain]
        medians = [run["turnaround"]["after_first"]["total"]["median_s"] for run in mine]
        turnaround = np.asarray([np.nan if m is None else m for m in medians], dtype=np.float64)
        for index in range(max(len(run["truth"]) for run in mine)):
            row: dict[str, Any] = {
                "brain": brain,
                "iteration": index + 1,
                "n_runs": len(mine),
                "turnaround_after_first_s": _spread(turnaround),
            }
            for key in REPEAT_COLUMNS:
                values = [run["truth"][index][key] for run in mine if index < len(run["truth"])]
                row[key] = _spread(np.asarray(values, dtype=np.float64))
            rows.append(row)
    return rows


def _spread(values: np.ndarray) -> dict[str, float | int]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"mean": float("nan"), "sd": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {
        "mean": float(finite.mean()),
        "sd": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "n": int(finite.size),
    }


def print_repeats(rows: list[dict[str, Any]]) -> None:
    """Mean ± sd over the repeated runs, one line per brain and iteration."""
    print(
        f"{'brain':>13} {'iter':>4} {'runs':>4} | "
        + " ".join(f"{label:>13}" for label in REPEAT_COLUMNS.values())
        + f" | {'turn s':>11}"
    )
    for row in rows:
        values = [f"{_n(row[key]['mean'], 3)} ± {_n(row[key]['sd'], 3)}" for key in REPEAT_COLUMNS]
        turn = row["turnaround_after_first_s"]
        print(
            f"{row['brain']:>13} {row['iteration']:>4} {row['n_runs']:>4} | "
            + " ".join(f"{v:>13}" for v in values)
            + f" | {_n(turn['mean'], 1):>5} ± {_n(turn['sd'], 1):<4}"
        )
    print(
        "mean ± sd over the runs (seeds); columns as in the table above; turn s: the runs' median turnaround "
        "after the first iteration"
    )


def print_presenter(result: dict) -> None:
    if "skipped" in result:
        print(f"presenter: skipped: {result['skipped']}")
        return
    print(
        f"presenter ({result['pacing']} pacing, {result['renderer']}): {result['stimuli']} stimuli "
        f"{result['frames_on']}/{result['frames_off']} frames at {result['refresh_hz']:g} Hz; frame interval mean "
        f"{result['interval_mean_ms']:.2f} ms, sd {result['interval_sd_ms']:.2f}, "
        f"p99 {result['interval_p99_ms']:.2f}, max {result['interval_max_ms']:.1f} ms; dropped frames "
        f"{result['dropped_frames']} ({result['trials_with_drops']} trials)"
    )


def run_brain(
    args: argparse.Namespace, brain: str, rig: Path, images: str | None, folder: Path, seed: int | None
) -> dict[str, Any]:
    """One loop on ``rig``'s brain (natural images from ``images``, else the protocol's; protocol
    and synthesis seeds ``seed``, else the protocol's), printed; its figures (JSON-safe but for
    ``report``)."""
    load_before = os.getloadavg()[0]
    namespace = argparse.Namespace(**{**vars(args), "rig": rig, "images": images, "seed": seed})
    report, seconds, ran = run_loop(namespace, folder)
    load = (load_before, os.getloadavg()[0])
    ran["brain"] = brain
    ran["seed"] = seed
    stats = turnaround_stats(report)
    print_loop(report, seconds, ran, stats, load)
    figure = report.figure(folder / "loop.png")
    print(f"figure: {figure}; session: {ran['session']}")
    return {
        "brain": brain,
        "seed": seed,
        "ran": ran,
        "seconds": seconds,
        "load_average": load,
        "turnaround": stats,
        "truth": truth_rows(report),
        "report": report,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from closedloop.errors import ClosedLoopError
    from closedloop.jsonsafe import json_safe

    folder = args.out or Path(tempfile.mkdtemp(prefix="closedloop-bench-loop-"))
    folder.mkdir(parents=True, exist_ok=True)
    runs = []
    try:
        for brain, rig, images, out in brains(args, folder):
            for seed in args.seed_list:
                run_folder = out if seed is None else out / f"seed{seed}"
                run_folder.mkdir(parents=True, exist_ok=True)
                runs.append(run_brain(args, brain, rig, images, run_folder, seed))
    except ClosedLoopError as error:
        print(f"benchmarks/loop.py: {error}", file=sys.stderr)
        return 2
    print_truth(runs)
    repeats = repeat_summary(runs) if len(args.seed_list) > 1 else []
    if repeats:
        print_repeats(repeats)
    presenter = presenter_frames(args, args.protocol)
    print_presenter(presenter)
    if args.json:
        figures = {
            "argv": sys.argv[1:] if argv is None else argv,
            "cpus": os.cpu_count(),
            "runs": [{**run, "report": run["report"].to_dict()} for run in runs],
            "repeats": repeats,
            "presenter": presenter,
        }
        args.json.write_text(json.dumps(json_safe(figures), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
