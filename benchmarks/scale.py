"""Benchmark: scaling offline work out: search and batch fits on local processes vs Ray, fused sessions.

Prints, on simulated archives (small by default, so it runs in minutes on 2 cores):

- wall time of ``closedloop fit ARCHIVE --search N`` (default 16 trials of a space of small
  networks, `space_yaml`): sequential in one
  process (``--workers 1``), local worker processes (``--workers W``), and ``--executor ray``
  on a Ray instance this script starts on 127.0.0.1 with W CPUs (its start-up is counted
  separately: ``ray start`` before, not in the fit's time);
- wall time of fitting S sessions (default 10) the same three ways;
- Ray's overhead per task: round trip of an empty task, and of a task that receives a
  session-sized array (submitted in a burst of 200);
- CNN time of S sessions fitted one by one vs fused into one training (``--fuse-sessions``'s
  path; on a CPU it is not meant to win; on a GPU it is the point) with ``--device``.

Every fit command runs as its own process (``python -m closedloop.cli fit ...``), so each
wall time includes Python and torch start-up (a few seconds), as a user sees it.

Usage::

    python benchmarks/scale.py                       # 16 trials, 10 sessions, 2 workers
    python benchmarks/scale.py --units 40 --images 270 --repeats 20 --epochs 200   # full-size sessions
    python benchmarks/scale.py --device cuda --skip-executors   # fused sessions on a GPU only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16, help="search trials (default 16)")
    parser.add_argument("--sessions", type=int, default=10, help="sessions to fit (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="local workers and Ray CPUs (default 2)")
    parser.add_argument("--units", type=int, default=10)
    parser.add_argument("--images", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=30, help="max epochs of every fit (default 30)")
    parser.add_argument("--device", default="cpu", help="device of the fused-sessions comparison (default cpu)")
    parser.add_argument("--skip-executors", action="store_true", help="only the fused-sessions comparison")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "closedloop-bench-scale")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


def make_archives(args: argparse.Namespace) -> list[Path]:
    from closedloop.sim.archive import ArchiveSpec, make_archive

    folder = args.out / f"archives-{args.units}u-{args.images}i-{args.repeats}r"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(1, max(args.sessions, 1) + 1):
        path = folder / f"s{seed:02d}.h5"
        if not path.exists():
            make_archive(
                path,
                ArchiveSpec(
                    layout="session", seed=seed, n_units=args.units, n_images=args.images, n_repeats=args.repeats
                ),
            )
        paths.append(path)
    return paths


def model_yaml(args: argparse.Namespace) -> Path:
    path = args.out / "model.yaml"
    path.write_text(
        f"model:\n  architecture: kindel2017\n  max_epochs: {args.epochs}\n  patience: 10\n  stop_check_every: 5\n"
    )
    return path


def space_yaml(args: argparse.Namespace) -> Path:
    """Small networks only (the default space's widest trials take minutes each on 2 loaded cores)."""
    path = args.out / "space.yaml"
    path.write_text(
        "layers: [1, 2]\nfilters: [4, 8]\nkernels: [3, 5, 7]\npooling: [[2, 2], [3, 2]]\n"
        "dense_units: [16, 32, 64]\ndropout_keep: [0.5, 0.9]\nlearning_rate: [1.0e-3, 1.0e-2]\n"
    )
    return path


def timed_fit(argv: list[str], env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "closedloop.cli", "fit", *argv, "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"fit failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def start_ray(cpus: int) -> tuple[subprocess.Popen, str, str, float]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="clray-")
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            f"--port={port}",
            f"--num-cpus={cpus}",
            "--num-gpus=0",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
            "--block",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if process.poll() is not None:
                raise SystemExit("ray start failed") from None
            time.sleep(0.2)
    return process, f"127.0.0.1:{port}", temp, time.perf_counter() - started


def stop_ray(process: subprocess.Popen, temp: str) -> None:
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait_s)
            break
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
    shutil.rmtree(temp, ignore_errors=True)


def ray_overhead(address: str, cpus: int) -> dict:
    from closedloop.fitting.executors import RayExecutor, TaskResources

    executor = RayExecutor(address, TaskResources(cpus=1))
    try:
        payload = np.zeros((270, 33, 33), np.float32)  # a session's images, about 1.2 MB

        def burst(fn, *args, n=200) -> float:
            started = time.perf_counter()
            executor.ray.get([executor.submit(fn, *args) for _ in range(n)])
            return (time.perf_counter() - started) / n

        burst(len, [], n=20)  # warm the workers
        empty = burst(len, [])
        shared = executor.share(payload)
        with_data = burst(len, shared)
        one_by_one = []
        for _ in range(20):
            started = time.perf_counter()
            executor.result(executor.submit(len, []))
            one_by_one.append(time.perf_counter() - started)
    finally:
        executor.close()
    return {
        "empty_task_ms_burst": 1000 * empty,
        "array_task_ms_burst": 1000 * with_data,
        "empty_task_ms_round_trip": 1000 * float(np.median(one_by_one)),
        "cpus": cpus,
    }


def fused_vs_alone(paths: list[Path], args: argparse.Namespace) -> dict:
    import torch

    from closedloop.data.loader import load_dataset
    from closedloop.fitting.model_files import load_config_yaml
    from closedloop.model.multi_session import fit_sessions
    from closedloop.model.train import fit_model

    torch.set_num_threads(args.workers)
    config = load_config_yaml(model_yaml(args)).replace(architecture="kindel2017")
    datasets = [load_dataset(path) for path in paths[: args.sessions]]
    seeds = list(range(len(datasets)))
    if args.device.startswith("cuda"):  # CUDA context and cuDNN start-up, not counted
        fit_model(datasets[0], config.replace(max_epochs=5), device=args.device, seed=0)
        torch.cuda.synchronize()
    started = time.perf_counter()
    for dataset, seed in zip(datasets, seeds):
        fit_model(dataset, config, device=args.device, seed=seed)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    alone = time.perf_counter() - started
    started = time.perf_counter()
    fit_sessions(datasets, config, seeds=seeds, device=args.device)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    fused = time.perf_counter() - started
    return {
        "sessions": len(datasets),
        "device": args.device,
        "one_by_one_s": alone,
        "fused_s": fused,
        "fused_per_session_s": fused / len(datasets),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = make_archives(args)
    config = model_yaml(args)
    env = dict(os.environ)
    figures: dict = {
        "sizes": {
            "units": args.units,
            "images": args.images,
            "repeats": args.repeats,
            "max_epochs": args.epochs,
            "workers": args.workers,
            "cores": os.cpu_count(),
        }
    }
    print(
        f"archives: {len(paths)} × {args.units} units × {args.images} images × {args.repeats} repeats; "
        f"kindel2017, max {args.epochs} epochs; {args.workers} workers / Ray CPUs; {os.cpu_count()} cores"
    )
    if not args.skip_executors:
        results = args.out / "results"
        search = [
            str(paths[0]),
            "--config",
            str(config),
            "--search",
            str(args.trials),
            "--seed",
            "1",
            "--space",
            str(space_yaml(args)),
            "--device",
            "cpu",
        ]
        fits = [*map(str, paths[: args.sessions]), "--config", str(config), "--seed", "1", "--device", "cpu"]
        for name, argv_ in (("search", search), ("fit", fits)):
            row = {}
            for how, extra in (("sequential", ["--workers", "1"]), ("local", ["--workers", str(args.workers)])):
                shutil.rmtree(results, ignore_errors=True)
                row[how] = timed_fit([*argv_, "--out", str(results), *extra], env)
                print(f"{name}: {how}: {row[how]:.1f} s", flush=True)
            process, address, temp, startup = start_ray(args.workers)
            try:
                shutil.rmtree(results, ignore_errors=True)
                row["ray"] = timed_fit([*argv_, "--out", str(results), "--executor", "ray", "--address", address], env)
                row["ray_start_s"] = startup
                print(
                    f"{name}: ray ({args.workers} CPUs; ray start took {startup:.1f} s before): {row['ray']:.1f} s",
                    flush=True,
                )
                if name == "fit":
                    figures["ray_overhead"] = ray_overhead(address, args.workers)
                    o = figures["ray_overhead"]
                    print(
                        f"ray per-task overhead: {o['empty_task_ms_burst']:.2f} ms per empty task in a burst of "
                        f"200, {o['array_task_ms_burst']:.2f} ms with a 1.2 MB shared array, "
                        f"{o['empty_task_ms_round_trip']:.1f} ms round trip of one task",
                        flush=True,
                    )
            finally:
                stop_ray(process, temp)
            row["speedup_local"] = row["sequential"] / row["local"]
            row["speedup_ray"] = row["sequential"] / row["ray"]
            figures[name] = row
            print(
                f"{name}: speed-up over sequential: local {row['speedup_local']:.2f}×, ray {row['speedup_ray']:.2f}×",
                flush=True,
            )
    fused = fused_vs_alone(paths, args)
    figures["fused_sessions"] = fused
    print(
        f"fused sessions ({fused['sessions']} on {fused['device']}): one by one {fused['one_by_one_s']:.1f} s, "
        f"fused {fused['fused_s']:.1f} s ({fused['fused_per_session_s']:.2f} s per session)"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
