"""Contrast gain control on the readout: what it computes, per member, and in a fitted model."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _synthetic_responses import make_dataset  # noqa: E402

from closedloop.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from closedloop.model.contrast_gain import VARIANCE_FLOOR, ContrastGain  # noqa: E402
from closedloop.model.ensemble import stack_members, unstack_members  # noqa: E402
from closedloop.model.model_config import ModelConfig  # noqa: E402
from closedloop.model.networks import build_network  # noqa: E402
from closedloop.model.predict import predict  # noqa: E402
from closedloop.model.presets import PRESETS  # noqa: E402
from closedloop.model.train import fit_model  # noqa: E402

SMALL = ModelConfig(architecture="factorised", core_filters=(4,), core_kernels=(5,), max_epochs=5, seed=0)


def _images(n: int, contrasts: list[float], seed: int = 0) -> torch.Tensor:
    """Grey images (0.5) with noise of the given pixel standard deviations."""
    noise = torch.randn(n, 1, 9, 9, generator=torch.Generator().manual_seed(seed))
    noise = noise / noise.flatten(1).std(dim=1, unbiased=False).view(-1, 1, 1, 1)
    return 0.5 + noise * torch.tensor(contrasts).view(-1, 1, 1, 1)


def test_each_value_is_scaled_and_shifted_by_the_images_contrast_as_written():
    layer = ContrastGain(n_members=1, n_units=2)
    images = _images(3, [0.1, 0.2, 0.0])
    layer.set_statistics(images[:2])  # typical variance: the mean of 0.01 and 0.04
    assert math.isclose(layer.typical_variance.item(), 0.025, rel_tol=1e-5)
    with torch.no_grad():
        layer.gain.copy_(torch.tensor([[0.5, -1.0]]))
        layer.offset.copy_(torch.tensor([[0.0, 2.0]]))
        z = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]])
        out = layer(z, images)
    for row, variance in enumerate((0.01, 0.04, 0.0)):
        s = math.tanh(math.log(variance / 0.025 + VARIANCE_FLOOR) - math.log1p(VARIANCE_FLOOR))
        assert math.isclose(out[0, row, 0].item(), math.exp(0.5 * s), rel_tol=1e-4)
        assert math.isclose(out[0, row, 1].item(), math.exp(-s) + 2.0 * s, rel_tol=1e-4)
    # A blank image is at the floor of the squashed scale, not at minus infinity.
    assert torch.isfinite(out).all()


def test_it_starts_as_the_identity_and_members_keep_their_own():
    layer = ContrastGain(n_members=2, n_units=3)
    images = torch.rand(4, 2, 9, 9, generator=torch.Generator().manual_seed(1))  # each member its own images
    layer.set_statistics(images)
    z = torch.randn(2, 4, 3)
    with torch.no_grad():
        assert torch.equal(layer(z, images), z)
        layer.gain[1].fill_(0.3)
        layer.offset[1].fill_(-0.2)
        after = layer(z, images)
        assert torch.equal(after[0], z[0])
        assert not torch.allclose(after[1], z[1])
        layer.init_member(1, torch.Generator())
        layer.set_statistics(images)
        assert torch.equal(layer(z, images), z)


def test_the_typical_variance_is_each_members_own_training_images():
    layer = ContrastGain(n_members=2, n_units=1)
    images = _images(3, [0.1, 0.2, 0.3])
    layer.set_statistics(images, sample_weight=torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    assert torch.allclose(layer.typical_variance, torch.tensor([0.025, 0.09]), rtol=1e-5)


def test_the_network_applies_it_before_the_output_nonlinearity_and_stacks_members():
    config = SMALL.replace(contrast_gain=True, output_knots=4, ensemble_size=2)
    network = build_network(config, n_units=3, n_members=2, input_size=9)
    assert build_network(SMALL, n_units=3, input_size=9).contrast_gain is None
    images = torch.rand(5, 9, 9, generator=torch.Generator().manual_seed(2))
    network.set_feature_statistics(images)
    before = network.forward_members(images)
    with torch.no_grad():
        network.contrast_gain.gain.fill_(0.4)
        network.contrast_gain.offset.fill_(0.1)
        after = network.forward_members(images)
        z = network.readout(network.core(images))
        expected = network.contrast_gain(z, images[:, None])
        expected = network.unit_nonlinearity(expected)
        expected = network.output_offset[:, None] + network.output_scale[:, None] * expected
        expected = torch.nn.functional.softplus(expected)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, expected, atol=1e-6)
    restacked = stack_members(unstack_members(network))
    assert torch.allclose(restacked.forward_members(images), after, atol=1e-6)


def test_a_model_with_contrast_gain_trains_saves_and_loads(tmp_path):
    dataset = make_dataset(n_images=40, n_units=3, size=15, seed=2)
    result = fit_model(dataset, SMALL.replace(contrast_gain=True, ensemble_size=2), device="cpu")
    layer = result.model.contrast_gain
    assert layer is not None and layer.gain.shape == (2, 3)
    assert layer.gain.abs().sum() > 0 and layer.offset.abs().sum() > 0  # it learned
    pixels = torch.as_tensor(dataset.images).flatten(1).var(dim=1, unbiased=False)
    assert 0.2 * pixels.mean() < layer.typical_variance[0] < 5 * pixels.mean()  # set from the training images
    path = save_checkpoint(tmp_path / "model.pt", result, metrics={}, model_version=1)
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.config.contrast_gain is True
    assert np.array_equal(predict(loaded, dataset.images), predict(result.model, dataset.images))


def test_the_default_fit_uses_it_in_both_ensembles():
    network = build_network(PRESETS["gabor-blend"], n_units=2, n_members=1)
    assert network.first.contrast_gain is not None and network.second.contrast_gain is not None


def test_a_model_without_it_does_not_warm_start_one_with_it():
    dataset = make_dataset(n_images=40, n_units=3, size=15, seed=2)
    without = fit_model(dataset, SMALL.replace(ensemble_size=2, max_epochs=3), device="cpu")
    config = SMALL.replace(contrast_gain=True, ensemble_size=2, max_epochs=3)
    cold = fit_model(dataset, config, device="cpu", initial_model=without.model)
    again = fit_model(dataset, config, device="cpu", initial_model=cold.model)
    assert not cold.warm_started and again.warm_started
