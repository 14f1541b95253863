"""Eq. 1 weighted by the predicted rate (`ModelConfig.loss_weights` "rate"): the weights, the loss, the option."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _synthetic_responses import make_dataset  # noqa: E402

from closedloop.errors import ConfigError  # noqa: E402
from closedloop.model.model_config import ModelConfig  # noqa: E402
from closedloop.model.networks import build_network  # noqa: E402
from closedloop.model.presets import preset  # noqa: E402
from closedloop.model.train import fit_model  # noqa: E402
from closedloop.model.trainer import DeviceData, Trainer, rate_weights  # noqa: E402

SMALL = ModelConfig(architecture="factorised", core_filters=(4,), core_kernels=(5,), max_epochs=6, seed=0)


def test_weights_are_one_up_to_the_mean_then_fall_as_one_over_the_rate():
    prediction = torch.tensor([[[0.0, 2.0], [10.0, 20.0], [40.0, 5.0]]], requires_grad=True)  # (1 member, 3, 2)
    mean_rate = torch.tensor([[10.0, 4.0]])
    weights = rate_weights(prediction, mean_rate)
    expected = torch.tensor([[[1.0, 1.0], [1.0, 0.2], [0.25, 0.8]]])
    assert torch.allclose(weights, expected)
    assert not weights.requires_grad  # reweighting, not a term the optimiser can shrink


def test_a_unit_that_never_fires_on_average_gets_finite_weights():
    weights = rate_weights(torch.tensor([[[0.0], [3.0]]]), torch.tensor([[0.0]]))
    assert torch.all(torch.isfinite(weights)) and torch.all(weights <= 1.0)


def _loss(config: ModelConfig) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """One member's training loss under ``config``, with what numpy needs to recompute it."""
    dataset = make_dataset(n_images=40, n_units=3, size=15, seed=4)
    data = DeviceData(dataset.images, dataset.mean_rates, [(np.arange(30), np.arange(30, 40))], torch.device("cpu"))
    network = build_network(config, dataset.n_units, 1, dataset.images.shape[1])
    network.set_output_statistics(data.mean_rate, data.std_rate)
    network.set_feature_statistics(data.train_images, None)
    network.eval()
    trainer = Trainer(network, data, config)
    with torch.no_grad():
        loss = trainer._member_loss(data.train_images, data.train_rates, None, None)
        prediction = network.forward_members(data.train_images)[0].numpy()
    return float(loss[0]), prediction, dataset.mean_rates[:30], dataset.mean_rates[:30].mean(axis=0)


def test_the_training_loss_is_eq1_with_each_term_weighted_by_its_predicted_rate():
    loss, prediction, rates, mean = _loss(SMALL.replace(loss_weights="rate"))
    weights = mean / np.maximum(prediction, mean)
    expected = np.mean((prediction - rates) ** 2 / rates.var(axis=0) * weights)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert np.any(weights < 0.99)  # some images are predicted above their unit's mean
    plain, *_ = _loss(SMALL)
    assert plain == pytest.approx(np.mean((prediction - rates) ** 2 / rates.var(axis=0)), rel=1e-5)
    assert loss < plain


def test_a_fit_with_rate_weights_runs_and_records_the_setting():
    dataset = make_dataset(n_images=40, n_units=3, size=15, seed=5)
    fit = fit_model(dataset, SMALL.replace(loss_weights="rate", stop_metric="correlation"), device="cpu")
    assert fit.config.loss_weights == "rate"
    assert ModelConfig.from_dict(fit.config.to_dict()).loss_weights == "rate"
    assert np.all(np.isfinite(fit.history["train_loss"]))


def test_the_setting_is_checked_and_old_configs_keep_eq1():
    with pytest.raises(ConfigError, match="loss_weights"):
        ModelConfig.from_dict({"loss_weights": "poisson"}, source="m.yaml")
    saved_before = {key: value for key, value in ModelConfig().to_dict().items() if key != "loss_weights"}
    assert ModelConfig.from_dict(saved_before).loss_weights == "none"
    assert preset("kindel2017").loss_weights == "none"
