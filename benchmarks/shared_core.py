"""Benchmark: does a core learned from several sessions fit a session better?

Per simulator family (`benchmarks/generalise.py`'s ``FAMILIES``), ``--sessions`` simulated
sessions of different populations (seeds 1..N, ``--units`` each; session 1 is
generalise.py's archive of that family) show one image set (``--image-sets same``, image
seed 1, as pvc-8's sessions) or each its own (``different``: image seeds 1..N).  The deep
family's sessions record from one network (``--brains one``, the default: network seed 1,
session 1's, as a lab's sessions record one animal's V1) or each from its own
(``each``: the network follows the session's seed); the other families have no
network, and their sessions' units are drawn from one family alike.  Session 1
is then fitted with the default preset five ways, scored on its own held-out images:

- ``alone``: `closedloop fit` on it alone;
- ``shared``: `closedloop fit --shared-core` on all N sessions (one core, every image and
  unit; its held-out images are the pooled split's, so they differ from the others' when
  the image sets differ);
- ``fixed``: its readouts on the core of sessions 2..N fitted together, the core kept as it
  is (`closedloop fit --core-from MODEL --fixed-core`);
- ``tuned``: the same core trained on with the readouts (``--core-from MODEL``, the default);
- ``alone few`` / ``fixed few`` / ``tuned few``: the same with only ``--few`` of its fit
  images (a new session early on), the held-out images unchanged.

Printed: held-out mean r/rmax and r/oracle (model mean r over the mean r of the simulator's
exact rates, `benchmarks/generalise.py`) and the fit time of each.

Usage::

    nice python benchmarks/shared_core.py --families classic,deep          # 2 CPU threads
    python benchmarks/shared_core.py --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from generalise import FAMILIES  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="classic,deep", help=f"comma list of {', '.join(FAMILIES)}")
    parser.add_argument("--sessions", type=int, default=4, help="sessions per family (default 4)")
    parser.add_argument(
        "--image-sets", choices=("same", "different"), default="same", help="the sessions' images (default same)"
    )
    parser.add_argument(
        "--brains",
        choices=("one", "each"),
        default="one",
        help="deep family: the sessions record one network (default) or each its own",
    )
    parser.add_argument("--units", type=int, default=30, help="units per session (default 30)")
    parser.add_argument("--images", type=int, default=270, help="natural images (default 270)")
    parser.add_argument("--repeats", type=int, default=20, help="repeats per image (default 20)")
    parser.add_argument("--few", type=int, default=80, help="fit images of the 'few' variants (default 80)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="fit seed (default 0)")
    parser.add_argument(
        "--preset", default="recommended", help="model preset (default recommended, as in benchmarks/README.md)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "closedloop-bench-shared-core",
        help="folder for cached archives",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    args.family_list = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in args.family_list if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    if args.sessions < 2:
        parser.error("--sessions must be at least 2 (one to score, one to share a core with)")
    return args


def sessions(family: str, args: argparse.Namespace) -> list[Path]:
    """The family's sessions, made once and reused while their spec is unchanged."""
    from closedloop.sim.archive import ArchiveSpec, make_archive

    folder = args.out / "archives"
    folder.mkdir(parents=True, exist_ok=True)
    scenario = Path(FAMILIES[family])
    if family == "deep" and args.brains == "one":
        scenario = one_network_scenario(scenario, folder)
    wanted = json.dumps([scenario.read_text(), args.units, args.images, args.repeats])
    paths = []
    for seed in range(1, args.sessions + 1):
        image_seed = 1 if args.image_sets == "same" else seed
        name = f"{family}_s{seed}" + ("" if image_seed == 1 else f"_i{image_seed}")
        path = folder / f"{name}{'_n1' if scenario.parent == folder else ''}.h5"
        stamp = path.with_suffix(".spec.json")
        if not (path.exists() and stamp.exists() and stamp.read_text() == wanted):
            spec = ArchiveSpec(
                seed=seed,
                image_seed=image_seed,
                n_units=args.units,
                n_images=args.images,
                n_repeats=args.repeats,
                scenario=scenario,
            )
            make_archive(path, spec, overwrite=True)
            stamp.write_text(wanted)
        paths.append(path)
    return paths


def one_network_scenario(scenario: Path, folder: Path) -> Path:
    """A copy of ``scenario`` whose sessions all read network seed 1 (kept beside the archives it makes)."""
    import yaml

    text = yaml.safe_load(scenario.read_text())
    text["population"]["network_seed"] = 1
    path = folder / f"{scenario.stem}_network1.yaml"
    wanted = yaml.safe_dump(text, sort_keys=False)
    if not (path.exists() and path.read_text() == wanted):
        path.write_text(wanted)
    return path


def score(result, dataset, seed: int) -> dict:
    """Held-out r/rmax and r/oracle of a fit of ``dataset`` (its split's held-out images)."""
    from closedloop.model.predict import predict
    from closedloop.model.report import evaluate
    from closedloop.sim.truth import oracle_rates

    held = result.split.held_out
    position = {int(u): i for i, u in enumerate(dataset.unit_ids)}
    columns = np.asarray([position[int(u)] for u in result.unit_ids])
    oracle = oracle_rates(dataset.source, dataset.image_ids[held], result.unit_ids, dataset.window_s)
    report = evaluate(
        predict(result.model, dataset.images[held]),
        dataset.trial_rates[held][:, :, columns],
        unit_ids=result.unit_ids,
        seed=seed,
        oracle_pred=oracle,
    )
    summary = report.summary
    return {
        "r_over_rmax": float(summary["mean_r_over_rmax"]),
        "r_over_oracle": float(summary.get("mean_r_over_oracle") or np.nan),
        "fit_s": float(result.fit_seconds),
    }


def few_images(dataset, split, keep: int, seed: int):
    """``dataset`` with only ``keep`` of its fit images (train and stop alike) and every held-out image."""
    from closedloop.model.split import DataSplit

    kept_fit = np.sort(np.random.default_rng(seed).permutation(split.fit)[:keep])
    positions = np.concatenate([kept_fit, split.held_out])
    new = {int(old): i for i, old in enumerate(positions)}
    smaller = dataclasses.replace(
        dataset,
        images=dataset.images[positions],
        trial_rates=dataset.trial_rates[positions],
        image_ids=dataset.image_ids[positions],
    )

    def moved(part: np.ndarray) -> np.ndarray:
        return np.asarray([new[int(p)] for p in part if int(p) in new], dtype=np.int64)

    return smaller, DataSplit(moved(split.train), moved(split.stop), moved(split.held_out), seed=split.seed)


def family_rows(family: str, args: argparse.Namespace) -> dict:
    from closedloop.data.loader import load_dataset
    from closedloop.model.presets import preset
    from closedloop.model.shared_core import fit_shared_core
    from closedloop.model.train import fit_model

    config = preset(args.preset)
    datasets = [load_dataset(path, units="all") for path in sessions(family, args)]
    target = datasets[0]
    rows: dict[str, dict] = {}

    def fit(name: str, make, scored=target, split=None, core_model=None, fixed=False):
        started = time.perf_counter()
        result = (
            make()
            if make
            else fit_model(
                scored, config, device=args.device, seed=args.seed, split=split, core_from=core_model, fixed_core=fixed
            )
        )
        rows[name] = score(result, scored, args.seed) | {"wall_s": time.perf_counter() - started}
        print(
            f"  {family} {name}: r/rmax {rows[name]['r_over_rmax']:.3f}, r/oracle {rows[name]['r_over_oracle']:.3f}",
            file=sys.stderr,
        )
        return result

    # The shared fit first: its split of session 1 (the pooled split's part) is every other fit's.
    shared = fit("shared", lambda: fit_shared_core(datasets, config, seed=args.seed, device=args.device)[0])
    fit("alone", None, split=shared.split)
    started = time.perf_counter()
    others = datasets[1:]
    core = (
        fit_shared_core(others, config, seed=args.seed, device=args.device)[0]
        if len(others) > 1
        else fit_model(others[0], config, device=args.device, seed=args.seed)
    )
    rows_core_s = time.perf_counter() - started
    fit("fixed", None, split=shared.split, core_model=core.model, fixed=True)
    fit("tuned", None, split=shared.split, core_model=core.model)
    rows["tuned"]["core_fit_s"] = rows_core_s
    few, few_split = few_images(target, shared.split, args.few, args.seed)
    fit("alone few", None, scored=few, split=few_split)
    fit("fixed few", None, scored=few, split=few_split, core_model=core.model, fixed=True)
    fit("tuned few", None, scored=few, split=few_split, core_model=core.model)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from closedloop.model.device import describe_device, resolve_device

    device = resolve_device(args.device)
    args.device = str(device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # excluded units and nanmeans, as `closedloop fit` reports them
        for family in args.family_list:
            results[family] = family_rows(family, args)
    print(
        f"session 1 of {args.sessions} sessions per family, {args.image_sets} images, "
        f"deep: {'one network' if args.brains == 'one' else 'a network each'} "
        f"({args.units} units x {args.images} images x {args.repeats} repeats each); 'few': {args.few} fit images; "
        f"device {describe_device(device)}; "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    head = f"{'family':<14}{'fit':<14}{'r/rmax':>8}{'r/oracle':>10}{'fit s':>8}"
    print(head + "\n" + "-" * len(head))
    for family, rows in results.items():
        for name, row in rows.items():
            print(f"{family:<14}{name:<14}{row['r_over_rmax']:>8.3f}{row['r_over_oracle']:>10.3f}{row['fit_s']:>8.0f}")
    print(
        "fixed / tuned: session 1's readouts on the core of sessions 2..N fitted together (its time not included), "
        "the core kept as it is / trained on"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "device": describe_device(device),
            "families": results,
            "settings": {k: v for k, v in vars(args).items() if k not in ("json", "out")},
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
