"""Training-image noise (`ModelConfig.input_noise`): where it goes, how strong, and what it leaves alone."""

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
from closedloop.model.predict import predict  # noqa: E402
from closedloop.model.train import fit_model  # noqa: E402
from closedloop.model.trainer import DeviceData, Trainer, member_data  # noqa: E402

SMALL = ModelConfig(architecture="factorised", core_filters=(4,), core_kernels=(5,), max_epochs=6, seed=0)


def _framed_dataset():
    """Images whose 3-pixel frame is the same grey in every image (an aperture's outside)."""
    dataset = make_dataset(n_images=40, n_units=3, size=15, seed=4)
    dataset.images[:, :3, :] = dataset.images[:, -3:, :] = 0.5
    dataset.images[:, :, :3] = dataset.images[:, :, -3:] = 0.5
    return dataset


def _images_seen_in_training(config: ModelConfig, seen_by: str = "learned") -> tuple[torch.Tensor, torch.Tensor]:
    """The training images and what the core's learned layers (or its Gabor bank) saw of them."""
    dataset = _framed_dataset()
    data = DeviceData(dataset.images, dataset.mean_rates, [(np.arange(30), np.arange(30, 40))], torch.device("cpu"))
    network = build_network(config, dataset.n_units, 1, dataset.images.shape[1])
    network.set_output_statistics(data.mean_rate, data.std_rate)
    network.set_feature_statistics(data.train_images, None)
    seen = []
    if seen_by == "learned":
        learned = network.core._learned
        network.core._learned = lambda x: seen.append(x.detach().clone()) or learned(x)
    else:
        bank = network.core.bank
        network.core._bank_features = lambda x, _: (
            seen.append(x.detach().clone()) or type(network.core)._bank_features(network.core, x, bank)
        )
    torch.manual_seed(0)
    Trainer(network, data, config).epoch()
    assert torch.equal(seen[1], data.stop_images)  # the stopping images are never perturbed
    assert network.core.training_noise is not None or config.input_noise == 0
    return data.train_images, seen[0]


def test_noise_follows_each_pixels_spread_and_spares_the_frame():
    clean, noisy = _images_seen_in_training(SMALL.replace(input_noise=0.5))
    added = (noisy - clean)[:, 0]
    assert torch.equal(added[:, :3], torch.zeros_like(added[:, :3]))  # no noise where images never vary
    assert torch.equal(added[:, :, -3:], torch.zeros_like(added[:, :, -3:]))
    inside = added[:, 3:-3, 3:-3]
    spread = clean[:, 0, 3:-3, 3:-3].std(dim=0)
    ratio = (inside.std(dim=0) / spread).mean().item()
    assert 0.4 < ratio < 0.6  # 30 draws per pixel around 0.5 times that pixel's spread


def test_a_gabor_bank_sees_the_clean_images():
    # Its features are fixed: noising them would only recompute the bank every epoch.
    config = SMALL.replace(input_noise=0.5, gabor_bank=True, gabor_wavelengths=(4.0,), padding="same")
    clean, seen_by_bank = _images_seen_in_training(config, seen_by="bank")
    assert torch.equal(seen_by_bank, clean)
    _, seen_by_learned = _images_seen_in_training(config)
    assert not torch.equal(seen_by_learned, clean)


def test_without_noise_the_training_step_sees_the_images_unchanged():
    clean, seen = _images_seen_in_training(SMALL)
    assert torch.equal(seen, clean)


def test_a_noisy_fit_is_seeded_and_differs_from_a_clean_one():
    dataset = make_dataset(n_images=40, n_units=3, size=15, seed=2)
    noisy = SMALL.replace(input_noise=0.4)
    first, second = fit_model(dataset, noisy, device="cpu"), fit_model(dataset, noisy, device="cpu")
    clean = fit_model(dataset, SMALL, device="cpu")
    assert np.array_equal(predict(first.model, dataset.images), predict(second.model, dataset.images))
    assert not np.allclose(predict(first.model, dataset.images), predict(clean.model, dataset.images))


def test_sessions_fitted_together_each_scale_the_noise_by_their_own_images():
    rng = np.random.default_rng(5)
    images = np.zeros((10, 2, 9, 9), np.float32)  # session 1 has 10 images, session 2 six and padding
    images[:, 0] = rng.uniform(0, 1, (10, 9, 9))
    images[:6, 1] = rng.uniform(0.4, 0.6, (6, 9, 9))
    train_mask = np.ones((2, 10), np.float32)
    train_mask[1, 6:] = 0
    data = member_data(images, np.zeros((2, 10, 1)), train_mask, None, np.ones((2, 1)), torch.device("cpu"))
    assert data.pixel_spread.shape == (1, 2, 9, 9)
    assert np.allclose(data.pixel_spread[0, 0].numpy(), images[:, 0].std(axis=0, ddof=1), atol=1e-6)
    assert np.allclose(data.pixel_spread[0, 1].numpy(), images[:6, 1].std(axis=0, ddof=1), atol=1e-6)


@pytest.mark.parametrize("value", [-0.1, float("nan"), 2.5])
def test_a_bad_noise_level_names_the_field(value):
    with pytest.raises(ConfigError, match="input_noise"):
        ModelConfig(input_noise=value)


def test_yaml_values_are_read_and_checked():
    assert ModelConfig.from_dict({"input_noise": "0.4"}).input_noise == 0.4
    assert ModelConfig.from_dict(ModelConfig(input_noise=0.3).to_dict()).input_noise == 0.3
    with pytest.raises(ConfigError, match="input_noise"):
        ModelConfig.from_dict({"input_noise": True})
    with pytest.raises(ConfigError, match="input_noise.*linear"):
        ModelConfig(architecture="linear", input_noise=0.4)
