"""Two ensembles blended per unit: weights from out-of-fold predictions, saved, warm-started, refused where unusable."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _synthetic_responses import make_dataset  # noqa: E402

from closedloop.errors import ClosedLoopError, ConfigError  # noqa: E402
from closedloop.model.blend import (  # noqa: E402
    UNJUDGED_WEIGHT,
    BlendedNetwork,
    blend_weights,
    out_of_fold_predictions,
)
from closedloop.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from closedloop.model.model_config import ModelConfig  # noqa: E402
from closedloop.model.predict import predict, predict_with_spread  # noqa: E402
from closedloop.model.presets import preset  # noqa: E402
from closedloop.model.train import _member_subsets, fit_model  # noqa: E402

TINY_BLEND = ModelConfig(
    architecture="factorised",
    core_filters=(4, 4),
    core_kernels=(5, 5),
    pool_layers=(1,),
    batch_norm=True,
    gabor_bank=True,
    padding="same",
    pool_stride=3,
    output_knots=4,
    output_tail="flat",
    l1_readout=0.1,
    learning_rate=3e-3,
    max_epochs=12,
    patience=4,
    stop_check_every=3,
    stop_sets="rotating",
    stop_metric="correlation",
    ensemble_size=2,
    partner={"padding": "valid", "pool_stride": 2, "l1_readout": 0.01},
)


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(n_images=90, n_units=4, n_repeats=6)


@pytest.fixture(scope="module")
def fitted(dataset):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fit_model(dataset, TINY_BLEND, device="cpu", seed=0)
    finally:
        torch.set_num_threads(threads)


def test_each_unit_gets_the_weight_whose_blend_tracks_its_rates() -> None:
    rng = np.random.default_rng(0)
    rates = rng.normal(10, 3, (200, 3))
    noise = rng.normal(0, 3, (200, 3))
    first = rates + np.array([0.1, 3.0, 1.0]) * noise  # good for unit 0, poor for unit 1
    second = rates + np.array([3.0, 0.1, 1.0]) * -noise  # the reverse; unit 2: errors cancel half-way
    weights = blend_weights(first, second, rates)
    assert weights[0] == pytest.approx(1.0, abs=0.1)
    assert weights[1] == pytest.approx(0.0, abs=0.1)
    assert weights[2] == pytest.approx(0.5, abs=0.1)


def test_a_unit_whose_rates_never_vary_gets_the_even_weight() -> None:
    predictions = np.random.default_rng(1).normal(size=(20, 2))
    rates = np.column_stack([np.full(20, 5.0), predictions[:, 1]])
    assert blend_weights(predictions, predictions[::-1], rates)[0] == UNJUDGED_WEIGHT


def test_out_of_fold_predictions_use_only_the_members_that_stopped_on_an_image() -> None:
    member_rates = np.stack([np.full((5, 1), 1.0), np.full((5, 1), 3.0)])  # member 0 says 1, member 1 says 3
    positions, predictions = out_of_fold_predictions(member_rates, [np.array([0, 1]), np.array([1, 3])], 5)
    assert positions.tolist() == [0, 1, 3]
    assert predictions[:, 0].tolist() == [1.0, 2.0, 3.0]


def test_a_fit_blends_both_ensembles_with_weights_judged_on_fit_images_only(dataset, fitted) -> None:
    model = fitted.model
    assert isinstance(model, BlendedNetwork) and model.n_members == 2
    assert fitted.best_epoch.shape == (4,) and fitted.history["train_loss"].shape[1] == 4
    weights = model.first_weight.numpy()
    assert np.all((weights >= 0) & (weights <= 1))
    images = torch.as_tensor(dataset.images)
    with torch.no_grad():
        w = model.first_weight
        expected = (w * model.first(images) + (1 - w) * model.second(images)).numpy()
    np.testing.assert_allclose(predict(model, dataset.images), expected, rtol=1e-5, atol=1e-5)
    # The held-out images' rates play no part: hiding them leaves every weight as it was.
    rates = dataset.mean_rates.astype(np.float64)
    hidden = rates.copy()
    hidden[fitted.split.held_out] = np.nan
    stop_sets = [stop for _, stop in _member_subsets(fitted.split, fitted.config)]
    assert not np.intersect1d(np.concatenate(stop_sets), fitted.split.held_out).size
    np.testing.assert_array_equal(model.choose_weights(dataset.images, hidden, stop_sets).astype(np.float32), weights)


def test_a_saved_blend_loads_and_predicts_the_same(tmp_path, dataset, fitted) -> None:
    path = save_checkpoint(tmp_path / "model.pt", fitted)
    loaded = load_checkpoint(path, "cpu")
    assert loaded.config == fitted.config and loaded.config.partner_config().padding == "valid"
    assert isinstance(loaded.model, BlendedNetwork)
    np.testing.assert_array_equal(predict(loaded, dataset.images), predict(fitted.model, dataset.images))


def test_one_pass_gives_the_prediction_and_the_members_spread(dataset, fitted) -> None:
    images = dataset.images[:25]
    mean, spread = predict_with_spread(fitted.model, images, batch_size=10)
    assert np.array_equal(mean, predict(fitted.model, images, batch_size=10))
    was_training = fitted.model.training
    fitted.model.eval()
    try:
        with torch.no_grad():
            members = fitted.model.forward_members(torch.as_tensor(images)).numpy()
    finally:
        fitted.model.train(was_training)
    np.testing.assert_allclose(spread, members.std(axis=0), rtol=1e-4, atol=1e-5)
    assert np.all(spread > 0)
    empty_mean, empty_spread = predict_with_spread(fitted.model, images[:0])
    assert empty_mean.shape == empty_spread.shape == (0, mean.shape[1])


def test_a_refit_warm_starts_both_ensembles_from_a_blend_of_the_same_structure(dataset, fitted) -> None:
    warm = fit_model(dataset, TINY_BLEND.replace(max_epochs=3), device="cpu", seed=1, initial_model=fitted.model)
    assert warm.warm_started
    other_tail = dict(TINY_BLEND.partner or (), output_tail="identity")  # the second ensemble's structure differs
    changed = TINY_BLEND.replace(max_epochs=3, partner=other_tail)
    assert not fit_model(dataset, changed, device="cpu", seed=1, initial_model=fitted.model).warm_started


def test_a_blend_takes_no_given_core(dataset, fitted) -> None:
    with pytest.raises(ClosedLoopError, match="cannot start from a given core"):
        fit_model(dataset, TINY_BLEND, device="cpu", seed=0, core_from=fitted.model.first)
    single = TINY_BLEND.replace(partner=None)
    with pytest.raises(ClosedLoopError, match="blends two networks"):
        fit_model(dataset, single, device="cpu", seed=0, core_from=fitted.model)


@pytest.mark.parametrize(
    ("partner", "field", "message"),
    [
        ({"seed": 3}, "model.partner.seed", "both ensembles share it"),
        ({"ensemble_size": 2}, "model.partner.ensemble_size", "both ensembles share it"),
        ({"padding": "diagonal"}, "model.partner.padding", "must be one of valid, same"),
        ({"pool_stride": "two"}, "model.partner.pool_stride", "must be an integer"),
        ({"colour": 1}, "model.partner.colour", "unknown setting"),
        ({"refit": True}, "model.refit", "must be false with a partner"),
        ([1, 2], "model.partner", "mapping of settings"),
        ({}, "model.partner", "mapping of settings"),
    ],
)
def test_a_bad_partner_is_refused_naming_the_setting(partner, field: str, message: str) -> None:
    settings = dict(TINY_BLEND.to_dict(), partner=partner)
    with pytest.raises(ConfigError, match=message) as caught:
        ModelConfig.from_dict(settings, source="model.yaml")
    assert caught.value.field == field


def test_the_blend_preset_round_trips_through_plain_data() -> None:
    blend = preset("gabor-blend")
    assert ModelConfig.from_dict(blend.to_dict()) == blend
    assert blend.n_networks == 2 * blend.ensemble_size
    # gabor-wide and gabor's grid, four members each, their learned layers trained with pixel noise,
    # each unit's readout with a contrast gain, both stopping after 30 epochs without improvement
    both = {"ensemble_size": blend.ensemble_size, "input_noise": 0.4, "contrast_gain": True, "patience": 30}
    assert blend.replace(partner=None) == preset("gabor-wide").replace(**both)
    assert blend.partner_config() == preset("gabor").replace(output_tail="flat", **both)


def test_the_default_blend_fits_fused_as_a_gpu_does_and_equals_its_members_fitted_in_turn(dataset) -> None:
    # On a GPU members train fused (ensemble_mode auto); the CPU trains them in turn.  The
    # default's ingredients, tiny: a bank, rotating stop sets, a contrast gain (not its training
    # noise, which fused members draw differently).
    config = TINY_BLEND.replace(gabor_wavelengths=(4.0,), contrast_gain=True, max_epochs=6)
    fused = fit_model(dataset, config.replace(ensemble_mode="fused"), device="cpu", seed=0)
    in_turn = fit_model(dataset, config.replace(ensemble_mode="independent"), device="cpu", seed=0)
    assert np.array_equal(fused.best_epoch, in_turn.best_epoch)
    images = dataset.images[in_turn.split.held_out]
    assert np.allclose(predict(fused.model, images), predict(in_turn.model, images), rtol=1e-3, atol=1e-3)
