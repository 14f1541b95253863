"""Early stopping judged by correlation (`ModelConfig.stop_metric`): the score, and what it picks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _synthetic_responses import make_dataset  # noqa: E402

from closedloop.errors import ConfigError  # noqa: E402
from closedloop.model.model_config import ModelConfig, describe_stop_score  # noqa: E402
from closedloop.model.predict import predict  # noqa: E402
from closedloop.model.split import DataSplit  # noqa: E402
from closedloop.model.train import fit_model  # noqa: E402
from closedloop.model.trainer import mean_correlation  # noqa: E402


def _pearson_mean(prediction: np.ndarray, rates: np.ndarray) -> float:
    """Mean over units whose rates vary, by numpy."""
    varies = rates.std(axis=0) > 0
    return float(np.mean([np.corrcoef(prediction[:, u], rates[:, u])[0, 1] for u in np.where(varies)[0]]))


def test_mean_correlation_is_pearson_per_member_over_its_own_images():
    rng = np.random.default_rng(0)
    prediction = rng.normal(size=(2, 12, 4))
    rates = rng.normal(size=(12, 4))
    rates[:, 3] = 7.0  # a unit that never varies is left out
    mask = np.ones((2, 12))
    mask[1, 8:] = 0  # member 1 is judged on its first eight images only
    weight = torch.as_tensor(mask, dtype=torch.float64).unsqueeze(2).expand(2, 12, 4)
    got = mean_correlation(torch.as_tensor(prediction), torch.as_tensor(rates).expand(2, 12, 4), weight).numpy()
    assert got[0] == pytest.approx(_pearson_mean(prediction[0], rates), abs=1e-9)
    assert got[1] == pytest.approx(_pearson_mean(prediction[1, :8], rates[:8]), abs=1e-9)


def test_missing_responses_leave_only_that_unit_out_of_that_image():
    rng = np.random.default_rng(1)
    prediction, rates = rng.normal(size=(1, 10, 2)), rng.normal(size=(10, 2))
    observed = np.ones((10, 2))
    observed[:4, 0] = 0  # unit 0 has no responses to the first four images
    weight = torch.as_tensor(observed, dtype=torch.float64).unsqueeze(0)
    got = mean_correlation(torch.as_tensor(prediction), torch.as_tensor(rates).unsqueeze(0), weight).item()
    unit0 = np.corrcoef(prediction[0, 4:, 0], rates[4:, 0])[0, 1]
    unit1 = np.corrcoef(prediction[0, :, 1], rates[:, 1])[0, 1]
    assert got == pytest.approx((unit0 + unit1) / 2, abs=1e-9)


def test_a_stopping_set_whose_rates_sit_higher_is_still_read_for_its_correlation():
    """The stopping images' rates shifted up: their loss can only worsen as the model learns
    the training images' level, so stopping by loss keeps an early epoch; by correlation it
    keeps training and predicts held-out images better."""
    dataset = make_dataset(n_images=80, n_units=4, size=15, seed=3)
    split = DataSplit(train=np.arange(0, 48), stop=np.arange(48, 64), held_out=np.arange(64, 80), seed=0)
    dataset.trial_rates[48:64] += 3 * dataset.mean_rates.std(axis=0)  # the stopping block sits higher
    config = ModelConfig(
        architecture="factorised", core_filters=(6,), core_kernels=(5,), max_epochs=150, patience=20, seed=0
    )
    by_loss = fit_model(dataset, config, device="cpu", split=split)
    by_r = fit_model(dataset, config.replace(stop_metric="correlation"), device="cpu", split=split)
    assert int(by_r.best_epoch[0]) > int(by_loss.best_epoch[0])
    held_out = dataset.images[64:], dataset.mean_rates[64:]
    r_by_loss = _pearson_mean(predict(by_loss.model, held_out[0]), held_out[1])
    r_by_r = _pearson_mean(predict(by_r.model, held_out[0]), held_out[1])
    assert r_by_r > r_by_loss
    assert np.all(by_r.history["stop_loss"] >= -1.0) and np.all(by_r.history["stop_loss"] <= 1.0)  # minus an r


def test_the_metric_is_checked_and_reported_as_read():
    with pytest.raises(ConfigError, match="stop_metric"):
        ModelConfig(stop_metric="r2")
    assert describe_stop_score(-0.4123, ModelConfig(stop_metric="correlation")) == "stop r 0.412"
    assert describe_stop_score(0.9, ModelConfig()) == "stop loss 0.900"
