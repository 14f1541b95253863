"""Benchmark: how much of the deep brain can these data teach at all?

The deep family (sim/deep.yaml) reads units at three depths of a random 3-layer CNN
(`closedloop.sim.deepnet`).  A fitted model must learn that brain's later layers from
the same 216 fit images the other families give.  This script fits a *reference* model
that is handed what no fitted model has — the brain's own first layer, exactly — and
scores it the way `closedloop fit` scores a model, on the same held-out images of the
same split (`benchmarks/generalise.py`'s deep archive, split seed ``--seed``):

- features: the true layer-1 maps (16 channels) in a (2·``--half`` + 1)² window of the
  layer-1 grid around the unit's receptive-field centre;
- a linear map (kernel ridge, its strength chosen by 5-fold cross-validation on the fit
  images), then a cubic output polynomial fitted on the fit images, trained on the
  measured trial-averaged rates (as a fit is).

It prints, per depth and over all units, the reference's mean r / mean r_oracle next
to the same figure of a fitted model's metrics (``--metrics``, a ``metrics.json`` of a
fit to that archive, e.g. one `benchmarks/generalise.py` cached).  A layer-2 unit is a
rectified sum of 16 × 5 × 5 first-layer values; with 216 images even the reference
learns it only partly, which bounds what a generic model can reach on this brain.

Usage::

    python benchmarks/deep_reference.py --metrics /tmp/closedloop-bench-generalise/fits/gabor-blend/deep/metrics.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from generalise import archive  # noqa: E402

from closedloop.synth.verify import pearson  # noqa: E402

RIDGE_STRENGTHS = (1.0, 10.0, 100.0, 1e3, 1e4)
FOLDS = 5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=30, help="units per session (default 30, as generalise.py)")
    parser.add_argument("--images", type=int, default=270, help="natural images (default 270)")
    parser.add_argument("--repeats", type=int, default=20, help="repeats per image (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="split seed, as the fit's (default 0)")
    parser.add_argument("--half", type=int, default=3, help="feature window half-width on layer 1's grid (default 3)")
    parser.add_argument("--metrics", type=Path, default=None, help="a fit's metrics.json to compare with")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "closedloop-bench-generalise",
        help="folder for the cached archive (generalise.py's by default)",
    )
    return parser.parse_args(argv)


def ridge_weights(features: np.ndarray, target: np.ndarray, strength: float) -> np.ndarray:
    """Ridge solution in its dual form (fewer images than features)."""
    gram = features @ features.T
    return features.T @ np.linalg.solve(gram + strength * np.eye(len(gram)), target - target.mean())


def reference_prediction(train: np.ndarray, target: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Kernel ridge (strength by cross-validation) then a cubic output polynomial, all on ``train``."""
    mean, sd = train.mean(0), train.std(0) + 1e-9
    train, test = (train - mean) / sd, (test - mean) / sd
    folds = np.array_split(np.arange(len(train)), FOLDS)

    def cross_validated(strength: float) -> float:
        scores = []
        for fold in folds:
            rest = np.setdiff1d(np.arange(len(train)), fold)
            weights = ridge_weights(train[rest], target[rest], strength)
            scores.append(pearson(train[fold] @ weights, target[fold]))
        return float(np.nanmean(scores))

    strength = max(RIDGE_STRENGTHS, key=cross_validated)
    weights = ridge_weights(train, target, strength)

    def cubic(x: np.ndarray) -> np.ndarray:
        return np.stack([np.ones_like(x), x, x**2, x**3], axis=1)

    coefficients = np.linalg.lstsq(cubic(train @ weights), target, rcond=None)[0]
    return cubic(test @ weights) @ coefficients


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from closedloop.data.loader import load_dataset
    from closedloop.model.split import split_images
    from closedloop.sim.deepnet import DeepStage
    from closedloop.sim.truth import ArchiveTruth

    args.device = "cpu"
    path = archive("deep", args)
    truth = ArchiveTruth(path)
    population = truth.population
    stage = population.stage
    if not isinstance(stage, DeepStage):
        raise SystemExit(f"{path} is not a deep-family archive")
    dataset = load_dataset(path)
    pixels = truth.stimulus_pixels(dataset.image_ids)
    true_rates = population.expected_rates(pixels)
    layer1 = stage.layers(pixels)[0]
    side = layer1.shape[-1]
    split = split_images(len(dataset.image_ids), args.seed)
    fit_rows, held_out = split.fit, split.held_out
    measured = np.nanmean(dataset.trial_rates, axis=1)  # (images, units), the fit's targets

    column = {int(u): i for i, u in enumerate(population.unit_ids)}
    depth_of: dict[int, str] = {}
    r_reference, r_oracle = {}, {}
    for data_column, unit in enumerate(dataset.unit_ids):
        index = column[int(unit)]
        depth_of[int(unit)] = str(population.unit_types[index])
        centre_y, centre_x = divmod(int(np.argmax(stage.readout[1][index])), side)
        rows = np.clip(np.arange(centre_y - args.half, centre_y + args.half + 1), 0, side - 1)
        cols = np.clip(np.arange(centre_x - args.half, centre_x + args.half + 1), 0, side - 1)
        features = layer1[:, :, rows][:, :, :, cols].reshape(len(pixels), -1)
        rates = measured[:, data_column]
        predicted = reference_prediction(features[fit_rows], rates[fit_rows], features[held_out])
        r_reference[int(unit)] = pearson(predicted, rates[held_out])
        r_oracle[int(unit)] = pearson(true_rates[held_out, index], rates[held_out])

    fitted: dict[int, float] = {}
    if args.metrics is not None:
        record = json.loads(args.metrics.read_text())["metrics"]
        fitted = {int(u): float("nan" if r is None else r) for u, r in zip(record["unit_ids"], record["units"]["r"])}

    def ratio(units: list[int], r: dict[int, float]) -> float:
        both = [u for u in units if u in r and np.isfinite(r[u]) and np.isfinite(r_oracle[u])]
        return float(np.mean([r[u] for u in both]) / np.mean([r_oracle[u] for u in both])) if both else float("nan")

    print(
        f"deep brain ({path}), split seed {args.seed}: {len(fit_rows)} fit, {len(held_out)} held-out images; "
        f"reference = the brain's true layer 1 in a {2 * args.half + 1}² window, ridge + cubic output"
    )
    print(f"{'units':<10}{'n':>4}{'reference r/oracle':>20}{'fitted r/oracle':>17}")
    groups = {depth: [u for u, d in depth_of.items() if d == depth] for depth in sorted(set(depth_of.values()))}
    groups["all"] = list(depth_of)
    for name, units in groups.items():
        fitted_ratio = f"{ratio(units, fitted):.3f}" if fitted else "–"
        print(f"{name:<10}{len(units):>4}{ratio(units, r_reference):>20.3f}{fitted_ratio:>17}")
    print("r/oracle: mean held-out r over the mean r of the simulator's exact rates (as closedloop fit reports it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
