"""Benchmark: the PsychoPy presenter's frame intervals and dropped frames (benchmarks/README.md).

Shows ``--stimuli`` random images (one trial each, the protocol's frames on/off) in
the rig's window and reports the interval before every flip — mean, sd, p99, max —
the dropped frames (intervals above 1.5 frame periods) and the trials that had any,
plus how far each image's time on screen was from its whole number of frames.

Without a display the script runs itself again under ``xvfb-run`` at the rigs'
resolution.  Xvfb does not wait for vertical blanking, so the presenter paces flips
on a software refresh grid there (``pacing`` in the output): the figures then measure
this machine's scheduling and Mesa's software renderer, not a monitor.  Run it on an
otherwise idle machine; the load average before and after is printed.

Usage::

    python benchmarks/presenter.py                                   # rigs/sim.yaml, 1000 stimuli
    python benchmarks/presenter.py --rig rigs/sim.yaml --rig rigs/example_openephys.yaml --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.config import load_protocol, load_rig
from closedloop.config.rig import Rig
from closedloop.errors import ClosedLoopError
from closedloop.present import display_problem
from closedloop.present.psychopy_presenter import PsychoPyPresenter

ROOT = Path(__file__).resolve().parents[1]
_UNDER_XVFB = "CLOSEDLOOP_BENCH_UNDER_XVFB"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rig", action="append", type=Path, help="rig YAML (repeat for several; default rigs/sim.yaml)"
    )
    parser.add_argument(
        "--protocol",
        type=Path,
        default=ROOT / "protocols/demo.yaml",
        help="protocol whose timing gives the frames on/off (default protocols/demo.yaml)",
    )
    parser.add_argument("--stimuli", type=int, default=1000, help="trials to show (default 1000)")
    parser.add_argument("--frames-on", type=int, help="override the protocol's stimulus frames")
    parser.add_argument("--frames-off", type=int, help="override the protocol's blank frames")
    parser.add_argument("--pacing", choices=("auto", "vsync", "software"), default="auto")
    parser.add_argument("--windowed", action="store_true", help="open a window even if the rig says full screen")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.stimuli < 1:
        parser.error("--stimuli must be at least 1")
    args.rig = args.rig or [ROOT / "rigs/sim.yaml"]
    return args


def ensure_display(rigs: list[Rig], argv: list[str]) -> None:
    """Re-run this script under xvfb-run when there is no display (or say how)."""
    width = max(rig.display.width_px for rig in rigs)
    height = max(rig.display.height_px for rig in rigs)
    problem = display_problem(width, height)
    if problem is None:
        return
    xvfb_run = shutil.which("xvfb-run")
    if xvfb_run is None or os.environ.get(_UNDER_XVFB):
        sys.exit(f"benchmarks/presenter.py: {problem}")
    print(f"no display: re-running under xvfb-run at {width}×{height}", file=sys.stderr, flush=True)
    os.environ[_UNDER_XVFB] = "1"
    os.execv(
        xvfb_run,
        [
            xvfb_run,
            "-a",
            "-s",
            f"-screen 0 {width}x{height}x24 +extension GLX +extension RANDR",
            sys.executable,
            str(Path(__file__).resolve()),
            *argv,
        ],
    )


def run_rig(rig: Rig, args: argparse.Namespace) -> dict[str, Any]:
    timing = load_protocol(args.protocol).frames(rig)
    frames_on = args.frames_on or timing.stimulus_frames
    frames_off = args.frames_off or timing.blank_frames
    rng = np.random.default_rng(args.seed)
    size = rig.stimulus.size_px
    # 100 distinct images cycled: each trial still uploads its texture, as a real block does.
    images = {i: rng.random((size, size), dtype=np.float32) for i in range(100)}
    order = [i % len(images) for i in range(args.stimuli)]
    presenter = PsychoPyPresenter(fullscreen=False if args.windowed else None, pacing=args.pacing)
    load_before = os.getloadavg()[0]
    with presenter:
        presenter.open(rig, timing)
        started = time.monotonic()
        records = presenter.show_block(images, order, frames_on=frames_on, frames_off=frames_off)
        wall_s = time.monotonic() - started
        pacing, renderer = presenter.pacing, presenter.renderer
    period = 1.0 / rig.display.refresh_hz
    intervals_ms = 1000 * np.concatenate([r.frame_intervals for r in records])
    on_error_ms = 1000 * (np.array([r.on_duration_s for r in records]) - frames_on * period)
    dropped = np.array([r.dropped_frames for r in records])
    return {
        "rig": rig.name,
        "refresh_hz": rig.display.refresh_hz,
        "resolution": [rig.display.width_px, rig.display.height_px],
        "fullscreen": rig.display.fullscreen and not args.windowed,
        "pacing": pacing,
        "renderer": renderer,
        "stimuli": len(records),
        "frames_on": frames_on,
        "frames_off": frames_off,
        "frames": int(intervals_ms.size),
        "frame_ms": 1000 * period,
        "interval_mean_ms": float(intervals_ms.mean()),
        "interval_sd_ms": float(intervals_ms.std(ddof=1)) if intervals_ms.size > 1 else 0.0,
        "interval_p99_ms": float(np.percentile(intervals_ms, 99)),
        "interval_max_ms": float(intervals_ms.max()),
        "dropped_frames": int(dropped.sum()),
        "trials_with_drops": int(np.count_nonzero(dropped)),
        "on_time_error_median_ms": float(np.median(np.abs(on_error_ms))),
        "on_time_error_p99_ms": float(np.percentile(np.abs(on_error_ms), 99)),
        "wall_s": wall_s,
        "expected_s": (1 + len(records) * (frames_on + frames_off)) * period,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
    }


def print_table(results: list[dict[str, Any]]) -> None:
    header = (
        f"{'rig':<20} {'Hz':>5} {'pacing':>8} {'stimuli':>7} {'on/off':>7} {'frame':>6} {'mean':>6} "
        f"{'sd':>5} {'p99':>6} {'max':>6} {'dropped':>7} {'trials':>6} {'load':>9}"
    )
    print(header)
    print(
        f"{'':<20} {'':>5} {'':>8} {'':>7} {'frames':>7} {'ms':>6} {'ms':>6} {'ms':>5} {'ms':>6} {'ms':>6} "
        f"{'frames':>7} {'w/drop':>6} {'before/after':>9}"
    )
    for r in results:
        print(
            f"{r['rig']:<20} {r['refresh_hz']:>5g} {r['pacing']:>8} {r['stimuli']:>7} "
            f"{r['frames_on']:>3}/{r['frames_off']:<3} {r['frame_ms']:>6.2f} {r['interval_mean_ms']:>6.2f} "
            f"{r['interval_sd_ms']:>5.2f} {r['interval_p99_ms']:>6.2f} {r['interval_max_ms']:>6.1f} "
            f"{r['dropped_frames']:>7} {r['trials_with_drops']:>6} "
            f"{r['load_average_before']:>4.1f}/{r['load_average_after']:<4.1f}"
        )
    for r in results:
        print(
            f"{r['rig']}: {r['frames']} intervals, image time on screen off by median "
            f"{r['on_time_error_median_ms']:.2f} ms (p99 {r['on_time_error_p99_ms']:.2f} ms); "
            f"{r['wall_s']:.1f} s for {r['expected_s']:.1f} s of frames; renderer {r['renderer']}"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        rigs = [load_rig(path) for path in args.rig]
        ensure_display(rigs, argv)
        results = [run_rig(rig, args) for rig in rigs]
    except ClosedLoopError as error:
        print(f"benchmarks/presenter.py: {error}", file=sys.stderr)
        return 2
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "argv": argv}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
