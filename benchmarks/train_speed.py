"""Benchmark: time per training epoch, eager vs CUDA graphs (issue: fitting speed on a GPU).

Trains on one simulated session's data (40 units, 270 images → 178 train + 38 stop)
for a fixed number of epochs with early stopping disabled, so every variant does the
same work, and prints milliseconds per epoch:

- the paper's network (``kindel2017``), one network and a fused 8-member ensemble;
- the ``recommended`` ensemble (8 members, rotating stop sets: fused with per-member
  masks on a GPU, one member after another on the CPU);

each with CUDA graphs (the default on a GPU) and without.  Kindel et al.'s network in
plain eager PyTorch takes ~1.1 s for 500 epochs on an H200 (the figure to beat).

Usage::

    python benchmarks/train_speed.py --device cuda
    python benchmarks/train_speed.py --device cpu --epochs 50
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--epochs", type=int, default=500, help="epochs per fit (default 500)")
    parser.add_argument("--repeats", type=int, default=3, help="timed fits per variant; the median is shown")
    parser.add_argument("--json", default=None, help="also write the figures as JSON")
    return parser.parse_args(argv)


def session_dataset():
    """One simulated session (seed 1), preprocessed as fitting sees it."""
    import tempfile
    from pathlib import Path

    from closedloop.data.loader import load_dataset
    from closedloop.sim.archive import ArchiveSpec, make_archive

    path = Path(tempfile.gettempdir()) / "closedloop-train-speed-seed1.h5"
    if not path.exists():
        make_archive(path, ArchiveSpec(seed=1))
    return load_dataset(path)


def timed_fit(dataset, config, device: str) -> float:
    import torch

    from closedloop.model.train import fit_model

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    fit_model(dataset, config, device=device, seed=0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    from closedloop.model.presets import preset

    args = parse_args(argv)
    dataset = session_dataset()
    fixed = {"max_epochs": args.epochs, "patience": args.epochs + 1}
    variants = {
        "kindel2017 x1": preset("kindel2017").replace(**fixed),
        "kindel2017 x8 fused": preset("kindel2017").replace(ensemble_size=8, ensemble_mode="fused", **fixed),
        "recommended x8": preset("recommended").replace(**fixed),
    }
    results = {}
    for name, config in variants.items():
        for graphs in (True, False) if args.device.startswith("cuda") else (False,):
            variant = config.replace(cuda_graphs=graphs)
            timed_fit(dataset, variant.replace(max_epochs=10, patience=11), args.device)  # warm-up
            seconds = float(np.median([timed_fit(dataset, variant, args.device) for _ in range(args.repeats)]))
            label = f"{name} {'graph' if graphs else 'eager'}"
            results[label] = {"seconds": round(seconds, 3), "ms_per_epoch": round(1000 * seconds / args.epochs, 3)}
            per_epoch = results[label]["ms_per_epoch"]
            print(f"{label:32s} {seconds:7.2f} s for {args.epochs} epochs = {per_epoch:.2f} ms/epoch", flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"device": args.device, "epochs": args.epochs, "results": results}, file, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
