"""Fit quality on a small simulated V1 population with known ground truth.

The population, its images and Poisson trials come from `closedloop.sim`; the model is
the "recommended" preset (fewer ensemble members, to stay fast) and the paper's linear
baseline, both scored on held-out images with the report's r/rmax over reliable units.
"""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.data.dataset import ResponseDataset
from closedloop.data.preprocess import preprocess
from closedloop.model.model_config import ModelConfig
from closedloop.model.predict import predict
from closedloop.model.presets import KINDEL2017, PRESETS, preset
from closedloop.model.report import evaluate
from closedloop.model.train import fit_model
from closedloop.errors import ConfigError
from closedloop.sim.photographs import natural_images
from closedloop.sim.population import SimulatedV1

WINDOW_S = 0.05


def simulated_dataset(n_units: int, n_images: int, n_repeats: int, seed: int) -> ResponseDataset:
    population = SimulatedV1(n_units=n_units, seed=seed)
    images = natural_images(
        n_images, size_px=population.size_px, aperture_diameter_px=population.spec.aperture_diameter_px, seed=seed + 100
    )
    rates = population.expected_rates(images)
    rng = np.random.default_rng(seed)
    counts = rng.poisson(np.repeat(rates[:, None, :], n_repeats, axis=1) * WINDOW_S)
    return ResponseDataset(
        preprocess(images),
        (counts / WINDOW_S).astype(np.float32),
        population.unit_ids,
        np.arange(n_images, dtype=np.int64),
        f"simulated V1 seed {seed}",
    )


def reliable_r_over_rmax(dataset: ResponseDataset, config: ModelConfig) -> float:
    result = fit_model(dataset, config, device="cpu")
    held_out = result.split.held_out
    columns = [int(np.flatnonzero(dataset.unit_ids == unit)[0]) for unit in result.unit_ids]
    report = evaluate(predict(result.model, dataset.images[held_out]), dataset.trial_rates[held_out][:, :, columns])
    assert report.reliable.sum() >= 5, "too few reliable units for a meaningful test"
    return float(np.nanmean(report.r_over_rmax[report.reliable]))


@pytest.mark.slow
def test_recommended_model_fits_simulated_v1_far_better_than_linear():
    dataset = simulated_dataset(n_units=12, n_images=200, n_repeats=10, seed=5)
    cnn = reliable_r_over_rmax(dataset, preset("recommended").replace(ensemble_size=2, seed=0))
    linear = reliable_r_over_rmax(dataset, ModelConfig(architecture="linear", seed=0))
    # Seed 5 measured: 0.69 (recommended, 2 members; 0.71 with one shared stopping set and no output
    # nonlinearity, which pay off with more members and data) vs 0.36 (linear); the paper's network 0.69.
    assert cnn > 0.6, cnn
    assert cnn > linear + 0.25, (cnn, linear)


def test_kindel2017_preset_is_table1():
    assert PRESETS["kindel2017"] == KINDEL2017 == ModelConfig()
    table1 = preset("kindel2017")
    assert (table1.architecture, table1.core_filters, table1.core_kernels) == ("kindel2017", (16, 32), (7, 7))
    assert (table1.pool_kernel, table1.pool_stride, table1.pool_layers, table1.batch_norm) == (3, 2, None, False)
    assert (table1.dense_units, table1.dropout_keep, table1.ensemble_size) == (300, 0.55, 1)


def test_recommended_preset_round_trips_and_unknown_names_fail():
    assert ModelConfig.from_dict(preset("recommended").to_dict()) == preset("recommended")
    with pytest.raises(ConfigError, match="unknown preset 'best'.*kindel2017, recommended"):
        preset("best")
