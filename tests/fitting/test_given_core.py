"""A new session's readouts fitted on a core learned elsewhere, which stays as it was."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tiny_models import TINY_RECOMMENDED
import torch

from closedloop.data.loader import load_dataset
from closedloop.errors import ClosedLoopError
from closedloop.model.given_core import install_core, starting_core
from closedloop.model.model_config import ModelConfig
from closedloop.model.networks import build_network
from closedloop.model.train import fit_model

CONFIG = TINY_RECOMMENDED


@pytest.fixture(scope="module")
def old_and_new(archives):
    whole = load_dataset(archives["session"])
    old = dataclasses.replace(whole.select_units(np.arange(0, 4)), source="old")
    new = dataclasses.replace(whole.select_units(np.arange(4, whole.n_units)), source="new")
    return fit_model(old, CONFIG, seed=3, device="cpu"), new


def _core(model) -> dict[str, np.ndarray]:
    state = model.state_dict()
    return {k: v.numpy().copy() for k, v in state.items() if k.startswith("core.") and v.dim() > 0}


@pytest.mark.parametrize("mode", ["fused", "independent"])
def test_the_core_is_copied_and_kept_while_the_readouts_learn(old_and_new, mode):
    source, new = old_and_new
    config = CONFIG.replace(ensemble_mode=mode, ensemble_size=3)  # more members than the source: cycles
    fitted = fit_model(new, config, seed=9, device="cpu", core_from=source.model, fixed_core=True)
    before, after = _core(source.model), _core(fitted.model)
    for key, value in after.items():  # batch-norm statistics included
        assert np.array_equal(value, before[key][[0, 1, 0]]), key
    cold = fit_model(new, config, seed=9, device="cpu")
    assert not np.allclose(cold.model.state_dict()["core.layers.0.weight"], after["core.layers.0.weight"])
    # The readouts trained: the stop loss fell from where the readouts started.
    assert np.nanmin(fitted.history["stop_loss"]) < fitted.history["stop_loss"][0].max()
    assert fitted.model.n_units == new.n_units


def test_a_core_of_another_shape_or_a_linear_model_is_refused(old_and_new):
    source, new = old_and_new
    with pytest.raises(ClosedLoopError, match="core_filters"):
        fit_model(new, CONFIG.replace(core_filters=(4, 8)), seed=1, device="cpu", core_from=source.model)
    with pytest.raises(ClosedLoopError, match="core_normalisation"):
        fit_model(new, CONFIG.replace(core_normalisation="divisive"), seed=1, device="cpu", core_from=source.model)
    linear = fit_model(new, ModelConfig(architecture="linear"), seed=1, device="cpu")
    with pytest.raises(ClosedLoopError, match="not a CNN"):
        fit_model(new, CONFIG, seed=1, device="cpu", core_from=linear.model)


def test_a_given_core_gets_no_gradient_and_stays_in_eval_mode(old_and_new):
    source, new = old_and_new
    network = build_network(CONFIG, new.n_units, 2, new.images.shape[1])
    install_core(network, starting_core(source.model, [1, 0], fixed=True))
    network.train()
    assert not network.core.training and network.readout.training
    assert all(not p.requires_grad for p in network.core.parameters())
    network(torch.as_tensor(new.images[:4])).sum().backward()
    assert all(p.grad is None for p in network.core.parameters())
    assert network.readout.mask.grad is not None
    swapped = source.model.state_dict()["core.layers.0.weight"][[1, 0]]
    assert torch.equal(network.state_dict()["core.layers.0.weight"], swapped)


def test_a_tuned_core_starts_from_the_given_one_and_trains_on(old_and_new):
    source, new = old_and_new
    config = CONFIG.replace(learning_rate=1e-9, max_epochs=1, patience=1, stop_check_every=1)  # one step: no move
    start = fit_model(new, config, seed=9, device="cpu", core_from=source.model)
    for key, value in _core(start.model).items():
        if "running" not in key:  # batch norm's statistics follow the new images when the core trains
            assert np.allclose(value, _core(source.model)[key], atol=1e-6), key
    tuned = fit_model(new, CONFIG, seed=9, device="cpu", core_from=source.model)
    moved = _core(tuned.model)["core.layers.0.weight"]
    assert not np.allclose(moved, _core(source.model)["core.layers.0.weight"])
    assert not np.allclose(moved, _core(fit_model(new, CONFIG, seed=9, device="cpu").model)["core.layers.0.weight"])
