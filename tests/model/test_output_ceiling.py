"""A flat output tail stops at the highest drive of the images each member was fitted on."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _synthetic_responses import make_dataset  # noqa: E402

from closedloop.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from closedloop.model.model_config import ModelConfig  # noqa: E402
from closedloop.model.networks import build_network, extrapolating_tails  # noqa: E402
from closedloop.model.train import _member_subsets, fit_model  # noqa: E402

FLAT = ModelConfig(
    architecture="factorised", core_filters=(4,), core_kernels=(5,), output_knots=4, output_tail="flat",
    max_epochs=20, seed=0,
)  # fmt: skip
LAST_HINGE = 3.0


def test_the_ceiling_only_ever_lowers_the_last_hinge():
    tail = build_network(FLAT, n_units=3, n_members=2).unit_nonlinearity
    assert torch.equal(tail.ceiling, torch.full((2, 3), LAST_HINGE))
    tail.set_ceiling(torch.tensor([[1.5, 7.0, float("-inf")], [2.5, 0.5, 3.0]]))
    assert torch.equal(tail.ceiling, torch.tensor([[1.5, LAST_HINGE, LAST_HINGE], [2.5, 0.5, LAST_HINGE]]))
    z = torch.tensor([[[1.0, 2.0, 9.0], [4.0, 4.0, 4.0]], [[1.0, 2.0, 9.0], [4.0, 4.0, 4.0]]])  # (M, B, U)
    with torch.no_grad():
        capped = tail(z)  # the hinges' slopes start at 0: the identity up to the ceiling
        assert torch.equal(capped[:, 1], torch.tensor([[1.5, 3.0, 3.0], [2.5, 0.5, 3.0]]))
        assert torch.equal(capped[:, 0], torch.tensor([[1.0, 2.0, 3.0], [1.0, 0.5, 3.0]]))
        with extrapolating_tails(torch.tensor([False, True])):  # synthesis drives past it
            assert torch.equal(tail(z)[:, 0], capped[:, 0]) and not torch.equal(tail(z)[:, 1], capped[:, 1])
    tail.reset_ceiling()
    assert torch.equal(tail.ceiling, torch.full((2, 3), LAST_HINGE))


def test_a_fit_sets_each_members_ceiling_from_its_own_training_images():
    dataset = make_dataset(n_images=60, n_units=4, size=15, seed=1)
    result = fit_model(dataset, FLAT.replace(ensemble_size=3), device="cpu")
    model = result.model.eval()
    images = torch.as_tensor(dataset.images)
    with torch.no_grad():
        drive = model.readout_values(images)  # (M, images, U)
    for member, (train, _) in enumerate(_member_subsets(result.split, result.config)):
        highest = drive[member, train].amax(dim=0).clamp_max(LAST_HINGE)
        assert torch.allclose(model.unit_nonlinearity.ceiling[member], highest)
    assert (model.unit_nonlinearity.ceiling < LAST_HINGE).any()  # small data: some unit's drive stays below it
    # no training image is capped by it, so the fit's predictions of its data are the last hinge's
    with torch.no_grad():
        fitted = model.forward_members(images)
        model.unit_nonlinearity.reset_ceiling()
        at_hinge = model.forward_members(images)
    for member, (train, _) in enumerate(_member_subsets(result.split, result.config)):
        assert torch.allclose(fitted[member, train], at_hinge[member, train])


def test_the_ceiling_is_saved_and_models_saved_before_it_keep_the_last_hinge(tmp_path):
    dataset = make_dataset(n_images=40, n_units=3, size=15, seed=2)
    result = fit_model(dataset, FLAT.replace(ensemble_size=2, max_epochs=5), device="cpu")
    path = save_checkpoint(tmp_path / "model.pt", result, metrics={}, model_version=1)
    loaded = load_checkpoint(path, device="cpu")
    assert torch.equal(loaded.model.unit_nonlinearity.ceiling, result.model.unit_nonlinearity.ceiling)
    state = {key: value for key, value in result.model.state_dict().items() if not key.endswith("ceiling")}
    older = build_network(result.config, n_units=3, n_members=2, input_size=15)
    older.unit_nonlinearity.ceiling.fill_(0.0)
    older.load_state_dict(state)
    assert torch.equal(older.unit_nonlinearity.ceiling, torch.full((2, 3), LAST_HINGE))


def test_a_warm_start_trains_at_the_last_hinge_not_at_the_models_ceiling():
    dataset = make_dataset(n_images=40, n_units=3, size=15, seed=2)
    config = FLAT.replace(ensemble_size=2, max_epochs=5)
    first = fit_model(dataset, config, device="cpu")
    poisoned = copy.deepcopy(first.model)
    with torch.no_grad():
        poisoned.unit_nonlinearity.ceiling.fill_(-5.0)  # every image capped: no gradient through the drive
    clean = fit_model(dataset, config, device="cpu", initial_model=first.model)
    again = fit_model(dataset, config, device="cpu", initial_model=poisoned)
    assert clean.warm_started and again.warm_started
    for key, value in clean.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value), key


@pytest.mark.parametrize("tail", ["learned", "identity"])
def test_only_a_flat_tail_has_a_ceiling_set(tail):
    dataset = make_dataset(n_images=40, n_units=3, size=15, seed=2)
    result = fit_model(dataset, FLAT.replace(output_tail=tail, ensemble_size=1, max_epochs=3), device="cpu")
    assert torch.equal(result.model.unit_nonlinearity.ceiling, torch.full((1, 3), LAST_HINGE))
