"""Divisive normalisation in the core: what it computes, per member, and in a fitted model."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _synthetic_responses import make_dataset  # noqa: E402

from closedloop.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from closedloop.model.cores import ConvCore  # noqa: E402
from closedloop.model.divisive import POOL, SIGMA_FLOOR, MemberDivisiveNormalisation  # noqa: E402
from closedloop.model.model_config import ModelConfig  # noqa: E402
from closedloop.model.networks import build_network  # noqa: E402
from closedloop.model.predict import predict  # noqa: E402
from closedloop.model.train import fit_model  # noqa: E402


def _set(layer: MemberDivisiveNormalisation, mix: float, semisaturation: float) -> None:
    """Raw parameters whose softplus is ``mix`` and ``semisaturation`` (all members, all channels)."""
    with torch.no_grad():
        layer.mix.fill_(float(np.log(np.expm1(mix))))
        layer.semisaturation.fill_(float(np.log(np.expm1(semisaturation))))


def test_each_channel_is_divided_by_the_mixed_local_mean_as_written():
    layer = MemberDivisiveNormalisation(n_members=1, channels=2)
    _set(layer, mix=0.5, semisaturation=0.2)
    x = torch.zeros(1, 2, 9, 9)
    x[0, 0, 4, 4] = 2.0  # one active pixel in channel 0
    x[0, 1] = 1.0  # channel 1 uniformly active
    y = layer(x)
    # At the centre the 5x5 pool of channel 0 holds one 2 in 25 pixels, channel 1's is 1.
    divisor = 0.2 + SIGMA_FLOOR + 0.5 * (2.0 / POOL**2) + 0.5 * 1.0
    assert torch.isclose(y[0, 0, 4, 4], torch.tensor(2.0 / divisor))
    assert torch.isclose(y[0, 1, 4, 4], torch.tensor(1.0 / divisor))
    # In a corner the pool is cut to 3x3 pixels (no zero padding counted) and sees only channel 1.
    assert torch.isclose(y[0, 1, 0, 0], torch.tensor(1.0 / (0.2 + SIGMA_FLOOR + 0.5)))


def test_the_output_grows_less_than_in_proportion_to_contrast():
    layer = MemberDivisiveNormalisation(n_members=1, channels=4)
    x = torch.rand(3, 4, 11, 11, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        at_start = (layer(4 * x).sum() / layer(x).sum()).item()
        _set(layer, mix=0.5, semisaturation=1.0)
        mixed = (layer(4 * x).sum() / layer(x).sum()).item()
        _set(layer, mix=1e-6, semisaturation=1.0)
        nearly_linear = (layer(4 * x).sum() / layer(x).sum()).item()
    assert 1.0 < at_start < 4.0  # four times the input, less than four times the output
    assert 1.0 < mixed < 2.0  # a stronger mix saturates more
    assert abs(nearly_linear - 4.0) < 1e-3  # without a mix it is a fixed gain


def test_members_have_their_own_weights():
    layer = MemberDivisiveNormalisation(n_members=2, channels=3)
    x = torch.rand(2, 6, 7, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = layer(x)
        layer.mix[1].add_(1.0)
        after = layer(x)
        assert torch.equal(after[:, :3], before[:, :3])  # member 0 untouched
        assert torch.all(after[:, 3:] <= before[:, 3:]) and not torch.equal(after[:, 3:], before[:, 3:])
        layer.init_member(1, torch.Generator())
        assert torch.equal(layer(x), before)


def test_the_core_divides_its_first_layer_after_max_pooling():
    core = ConvCore(n_members=1, input_size=19, filters=(3, 2), kernels=(3, 3), normalisation="divisive")
    _set(core.divisive, mix=0.7, semisaturation=0.1)
    images = torch.rand(2, 19, 19, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        first = torch.nn.functional.max_pool2d(core.layers[0](images[:, None]), 3, 2).relu()
        second = torch.nn.functional.max_pool2d(core.layers[1](core.divisive(first)), 3, 2).relu()
        assert torch.allclose(core(images), second, atol=1e-6)
    assert ("divisive1", (1, 3, 8, 8)) in core.layer_shapes()
    assert core.output_shape == (2, 2, 2)  # the division keeps the map's shape


def test_a_divisive_core_trains_saves_and_loads(tmp_path):
    dataset = make_dataset(n_images=40, n_units=3, size=15, seed=2)
    config = ModelConfig(
        architecture="factorised", core_filters=(4,), core_kernels=(5,), max_epochs=5, seed=0, ensemble_size=2
    )
    plain = build_network(config, n_units=3)
    assert plain.core.divisive is None
    result = fit_model(dataset, config.replace(core_normalisation="divisive"), device="cpu")
    layer = result.model.core.divisive
    assert layer is not None and layer.mix.shape == (2, 4, 4)
    assert not torch.allclose(layer.mix, torch.full_like(layer.mix, layer.mix.flatten()[0].item()))  # it learned
    path = save_checkpoint(tmp_path / "model.pt", result, metrics={}, model_version=1)
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.config.core_normalisation == "divisive"
    assert np.array_equal(predict(loaded, dataset.images), predict(result.model, dataset.images))
