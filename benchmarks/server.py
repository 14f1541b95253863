"""Benchmark: model server latency for Predict and Synthesize, idle and while a refit runs (docs/architecture.md).

A `ModelServer` runs as a thread component (Supervisor) on tcp loopback; a client in the
main thread plays the runner.  A simulated V1 population (seed 1) gives the responses:
natural images at the rig's 66-px stimulus size, Poisson trials in the 50–100 ms window.

1. Block 1 (the first ``--images`` × 3/4 images) with ``refit``: the cold fit, timed
   from the request to `ModelUpdated`.
2. Idle: Predict of ``--predict`` new images, ``--trials`` times; one Synthesize of
   ``--synthesize`` images (units × p20…p80 of their measured rates, ``--steps`` steps).
3. Block 2 (the remaining images) with ``refit``; while that warm-started refit runs,
   Predict ``--trials`` times and one Synthesize again.  An answer counts as "during the
   refit" only if it arrived before `ModelUpdated` for version 2; the others are left out.

Prints a summary, then the figures as JSON (``--json PATH`` also writes them).

Usage::

    python benchmarks/server.py                          # recommended preset, 2 CPU threads
    python benchmarks/server.py --preset kindel2017 --ensemble 2 --images 60 --repeats 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--preset", default="recommended", help="model preset (default recommended)")
    parser.add_argument("--ensemble", type=int, default=None, help="ensemble members (default: the preset's)")
    parser.add_argument("--max-epochs", type=int, default=300, help="epoch cap of each refit (default 300)")
    parser.add_argument("--patience", type=int, default=30, help="early-stopping patience (default 30)")
    parser.add_argument("--units", type=int, default=40, help="simulated units (default 40)")
    parser.add_argument("--images", type=int, default=270, help="natural images fitted (default 270)")
    parser.add_argument("--repeats", type=int, default=4, help="trials per image (default 4)")
    parser.add_argument("--predict", type=int, default=1000, help="images per PredictRequest (default 1000)")
    parser.add_argument("--synthesize", type=int, default=200, help="images per SynthesizeRequest (default 200)")
    parser.add_argument("--steps", type=int, default=200, help="synthesis steps (default 200)")
    parser.add_argument("--trials", type=int, default=5, help="Predict requests timed in each phase (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    return parser.parse_args(argv)


def simulate(args: argparse.Namespace):
    """Display images for fitting and for prediction, and trial rates of every fitted image."""
    from closedloop.sim.photographs import natural_images
    from closedloop.sim.population import SimulatedV1

    population = SimulatedV1(n_units=args.units, seed=1)
    images = natural_images(args.images + args.predict, size_px=66, seed=1)
    fitted, unseen = images[: args.images], images[args.images :]
    expected = population.expected_rates(fitted)
    counts = np.random.default_rng(1).poisson(np.repeat(expected, args.repeats, axis=0) * 0.05)
    return fitted, unseen, counts / 0.05, population.unit_ids.astype(np.int64)


def fit_request(block, index, images, rates, unit_ids, repeats):
    from closedloop.messages import FitRequest

    ids = np.arange(len(images), dtype=np.int64)[index]
    rows = np.concatenate([np.arange(i * repeats, (i + 1) * repeats) for i in ids])
    return FitRequest(
        block=block,
        stimulus_ids=np.repeat(ids, repeats),
        rates=rates[rows],
        unit_ids=unit_ids,
        image_ids=ids,
        images=images[index],
        refit=True,
    )


def wait_for_update(events, version: int, timeout_s: float = 1800):
    from closedloop.messages import Error, ModelUpdated

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = events.recv(200)
        if got is None:
            continue
        if isinstance(got.message, Error) and got.message.code == "fit_failed":
            raise SystemExit(f"refit failed: {got.message.message}")
        if isinstance(got.message, ModelUpdated) and got.message.version == version:
            return got.message, time.perf_counter()
    raise SystemExit(f"no ModelUpdated version {version} within {timeout_s} s")


def timed(client, message, timeout_s: float = 600):
    started = time.perf_counter()
    reply = client.request(message, int(timeout_s * 1000))
    if reply is None or type(reply.message).__name__ == "Error":
        raise SystemExit(f"{type(message).__name__} failed: {None if reply is None else reply.message}")
    return reply.message, started, time.perf_counter()


def stats(seconds: list[float]) -> dict:
    if not seconds:
        return {"n": 0}
    values = np.asarray(seconds) * 1000
    return {
        "n": len(values),
        "p50_ms": float(np.median(values)),
        "max_ms": float(values.max()),
        "min_ms": float(values.min()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from closedloop.messages import PredictRequest, SynthesizeRequest
    from closedloop.model.presets import preset
    from closedloop.runtime import Supervisor
    from closedloop.server import ModelServer, ServerSettings
    from closedloop.transport import RequestClient, Subscriber, tcp_endpoint

    torch.set_num_threads(args.threads)
    config = preset(args.preset).replace(max_epochs=args.max_epochs, patience=args.patience)
    if args.ensemble:
        config = config.replace(ensemble_size=args.ensemble)
    fitted, unseen, rates, unit_ids = simulate(args)
    settings = ServerSettings(
        request_endpoint=tcp_endpoint(),
        events_endpoint=tcp_endpoint(),
        model=config,
        device=args.device,
        seed=1,
        synthesis_steps=args.steps,
    )
    server = ModelServer("model", settings)
    supervisor = Supervisor([server], setup_timeout_s=120)
    if not supervisor.start():
        raise SystemExit("the model server did not start")
    client = RequestClient(server.request_endpoint, source="bench")
    events = Subscriber(server.events_endpoint)  # every topic: one sequence per source, so a filter shows gaps
    time.sleep(0.3)
    load_before = os.getloadavg()
    first = int(round(args.images * 0.75))
    try:
        _, sent, _ = timed(client, fit_request(1, slice(0, first), fitted, rates, unit_ids, args.repeats))
        update1, done = wait_for_update(events, 1)
        cold_s = done - sent

        means = rates.reshape(args.images, args.repeats, -1).mean(axis=1)
        per_unit = max(1, args.synthesize // len(unit_ids))
        percentiles = np.linspace(20, 80, per_unit)
        targets = np.percentile(means, percentiles, axis=0).T.ravel()[: args.synthesize]
        units = np.repeat(unit_ids, per_unit)[: args.synthesize]
        synth = SynthesizeRequest(unit_ids=units, targets=targets, seed=1)
        predict = PredictRequest(images=unseen)

        idle_predict = [end - start for _, start, end in (timed(client, predict) for _ in range(args.trials))]
        _, start, end = timed(client, synth)
        idle_synth = end - start

        _, sent, _ = timed(client, fit_request(2, slice(first, args.images), fitted, rates, unit_ids, args.repeats))
        answers = []
        for _ in range(args.trials):
            answers.append(("predict", *timed(client, predict)))
        answers.append(("synthesize", *timed(client, synth)))
        busy_after = server.refitting
        update2, done2 = wait_for_update(events, 2)
        warm_s = done2 - sent
    finally:
        report = supervisor.shutdown()
        client.close()
        events.close()
    during = {
        kind: [
            end - start for k, reply, start, end in answers if k == kind and end < done2 and reply.model_version == 1
        ]
        for kind in ("predict", "synthesize")
    }
    figures = {
        "device": str(server.device),
        "threads": args.threads,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "model": {
            "preset": args.preset,
            "ensemble": config.ensemble_size,
            "max_epochs": config.max_epochs,
            "patience": config.patience,
        },
        "data": {
            "units": args.units,
            "images_block1": first,
            "images_block2": args.images - first,
            "repeats": args.repeats,
        },
        "refit_cold_s": cold_s,
        "refit_warm_s": warm_s,
        "model_v1": {k: update1.metrics[k] for k in ("r_mean", "r_over_rmax_mean", "epochs_run")},
        "model_v2": {k: update2.metrics[k] for k in ("r_mean", "r_over_rmax_mean", "epochs_run", "warm_start")},
        "predict_images": len(unseen),
        "synthesize_images": len(units),
        "synthesis_steps": args.steps,
        "predict_idle": stats(idle_predict),
        "predict_during_refit": stats(during["predict"]),
        "synthesize_idle_s": idle_synth,
        "synthesize_during_refit_s": during["synthesize"][0] if during["synthesize"] else None,
        "refit_still_running_after_answers": bool(busy_after),
        "server_ok": report.ok,
    }
    print(
        f"model server ({figures['device']}, {args.threads} threads, {config.ensemble_size}-member "
        f"{args.preset}; load {load_before[0]:.1f} before)"
    )
    print(
        f"  refit: cold {cold_s:.1f} s ({first} images), warm {warm_s:.1f} s ({args.images} images); "
        f"r/rmax {update1.metrics['r_over_rmax_mean']:.3f} -> {update2.metrics['r_over_rmax_mean']:.3f}"
    )
    for phase in ("idle", "during_refit"):
        p = figures[f"predict_{phase}"]
        s = figures[f"synthesize_{phase}_s"]
        text = f"p50 {p['p50_ms']:.0f} ms, max {p['max_ms']:.0f} ms (n={p['n']})" if p["n"] else "no answer in time"
        print(
            f"  {phase:>12}: predict {len(unseen)} images {text}; synthesize {len(units)} images "
            + ("n/a" if s is None else f"{s:.1f} s")
        )
    print(json.dumps(figures, indent=2, default=float))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
