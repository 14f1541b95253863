"""Fitting: split, Eq. 1 loss, unit exclusion, determinism, early stopping, baselines."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _synthetic_responses import make_dataset  # noqa: E402

from closedloop.data.dataset import ResponseDataset  # noqa: E402
from closedloop.errors import ClosedLoopError  # noqa: E402
from closedloop.model.ensemble import unstack_members  # noqa: E402
from closedloop.model.networks import ModelConfig  # noqa: E402
from closedloop.model.predict import predict  # noqa: E402
from closedloop.model.split import split_images  # noqa: E402
from closedloop.model.train import (  # noqa: E402
    ExcludedUnitsWarning,
    _member_subsets,
    eq1_loss,
    fit_ensemble,
    fit_model,
)

TINY = ModelConfig(
    core_filters=(4,), core_kernels=(5,), dense_units=16, max_epochs=8, patience=100, stop_check_every=2, seed=0
)


@pytest.fixture(scope="module")
def small_dataset() -> ResponseDataset:
    return make_dataset(n_images=40, n_units=4, size=15, seed=3)


def mean_pearson_r(prediction: np.ndarray, measured: np.ndarray) -> float:
    return float(np.mean([np.corrcoef(prediction[:, u], measured[:, u])[0, 1] for u in range(measured.shape[1])]))


def with_trial_rates(dataset: ResponseDataset, trial_rates: np.ndarray) -> ResponseDataset:
    return ResponseDataset(
        dataset.images, trial_rates.astype(np.float32), dataset.unit_ids, dataset.image_ids, dataset.source
    )


# --- split -----------------------------------------------------------------------------------------


def test_split_sizes_follow_the_paper():
    split = split_images(270, seed=1)
    assert (len(split.train), len(split.stop), len(split.held_out)) == (178, 38, 54)
    everything = np.concatenate([split.train, split.stop, split.held_out])
    assert np.array_equal(np.sort(everything), np.arange(270))
    assert len(split.fit) == 216


def test_split_is_seeded():
    assert np.array_equal(split_images(100, 5).held_out, split_images(100, 5).held_out)
    assert not np.array_equal(split_images(100, 5).held_out, split_images(100, 6).held_out)


@pytest.mark.parametrize("n_images", [0, 3, 9])
def test_split_with_too_few_images_is_an_error(n_images):
    with pytest.raises(ClosedLoopError, match=f"only {n_images} images"):
        split_images(n_images, seed=0)


# --- loss and unit exclusion ----------------------------------------------------------------------


def test_eq1_loss_matches_a_hand_computation():
    prediction = torch.tensor([[1.0, 0.0], [2.0, 4.0], [0.0, 1.0]])
    rates = torch.tensor([[0.0, 1.0], [2.0, 2.0], [3.0, 1.0]])
    variance = torch.tensor([2.0, 4.0])
    # unit 0: (1 + 0 + 9) / 2 = 5; unit 1: (1 + 4 + 0) / 4 = 1.25
    assert eq1_loss(prediction, rates, variance).item() == pytest.approx(6.25)


def test_unfittable_units_are_excluded_with_a_warning(small_dataset):
    trials = small_dataset.trial_rates.copy()
    trials[:, :, 0] = 0.0  # never fires
    trials[:, :, 1] = 10.0  # fires, but the same for every image
    trials[5, :, 2] = np.nan  # no recorded repeat for one image
    dataset = with_trial_rates(small_dataset, trials)
    with pytest.warns(ExcludedUnitsWarning, match="3 of 4 units excluded"):
        result = fit_model(dataset, TINY.replace(max_epochs=2), device="cpu")
    assert result.unit_ids.tolist() == [103]
    reasons = {u.unit_id: u.reason for u in result.excluded_units}
    assert reasons[100] == "never fired"
    assert "zero variance" in reasons[101]
    assert "NaN" in reasons[102]
    assert np.all(np.isfinite(result.history["train_loss"])) and np.all(np.isfinite(result.history["stop_loss"]))
    assert predict(result.model, dataset.images[:3]).shape == (3, 1)


def test_no_fittable_unit_is_an_error(small_dataset):
    dataset = with_trial_rates(small_dataset, np.zeros_like(small_dataset.trial_rates))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExcludedUnitsWarning)
        with pytest.raises(ClosedLoopError, match="no unit can be fitted"):
            fit_model(dataset, TINY, device="cpu")


def test_training_loss_is_normalised_eq1(small_dataset):
    # With max_epochs=1, the recorded training loss is Eq. 1 / (images × units) of the initial weights.
    result = fit_model(small_dataset, TINY.replace(max_epochs=1, dropout_keep=1.0, learning_rate=1e-9), device="cpu")
    split = result.split
    rates = torch.as_tensor(small_dataset.mean_rates[split.train], dtype=torch.float64)
    prediction = torch.as_tensor(predict(result.model, small_dataset.images[split.train]), dtype=torch.float64)
    expected = eq1_loss(prediction, rates, rates.var(0, unbiased=False)) / rates.numel()
    assert result.history["train_loss"][0, 0] == pytest.approx(expected.item(), rel=1e-4)


# --- determinism and early stopping ---------------------------------------------------------------


def test_same_seed_same_weights_on_cpu(small_dataset):
    first = fit_model(small_dataset, TINY, device="cpu", seed=11)
    second = fit_model(small_dataset, TINY, device="cpu", seed=11)
    other = fit_model(small_dataset, TINY, device="cpu", seed=12)
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    assert not torch.equal(first.model.readout.hidden_weight, other.model.readout.hidden_weight)
    assert first.config.seed == 11 and np.array_equal(first.split.held_out, second.split.held_out)


def test_missing_seed_is_drawn_and_recorded(small_dataset):
    result = fit_model(small_dataset, TINY.replace(seed=None, max_epochs=1), device="cpu")
    assert isinstance(result.config.seed, int) and result.split.seed == result.config.seed


@pytest.mark.parametrize("options", [{}, {"architecture": "factorised", "batch_norm": True}])
def test_early_stopping_restores_the_best_epoch(small_dataset, options):
    # With batch norm the running statistics (buffers) must be the best epoch's too.
    config = TINY.replace(max_epochs=60, patience=4, stop_check_every=1, learning_rate=3e-2, **options)
    seen = []
    result = fit_model(small_dataset, config, device="cpu", progress=lambda *args: seen.append(args))
    stop_loss = result.history["stop_loss"][:, 0]
    best = int(result.best_epoch[0])
    assert best == int(np.argmin(stop_loss))
    assert result.epochs_run < 60 and result.epochs_run == best + 1 + config.patience
    # The returned weights are the best epoch's: recompute their stopping-set loss.
    stop = result.split.stop
    rates = small_dataset.mean_rates
    prediction = predict(result.model, small_dataset.images[stop])
    variance = rates[result.split.train].var(0)
    recomputed = np.mean((prediction - rates[stop]) ** 2 / variance)
    assert recomputed == pytest.approx(stop_loss[best], rel=1e-4)
    assert len(seen) == result.epochs_run and seen[-1][0] == result.epochs_run


def test_minibatch_training_runs(small_dataset):
    result = fit_model(small_dataset, TINY.replace(batch_size=8, max_epochs=3), device="cpu")
    assert result.history["train_loss"].shape == (3, 1)
    assert np.all(np.isfinite(result.history["train_loss"]))


# --- ensembles -------------------------------------------------------------------------------------


def test_fused_and_independent_training_agree_without_dropout(small_dataset):
    config = TINY.replace(dropout_keep=1.0, max_epochs=5, ensemble_size=2)
    fused = fit_ensemble(small_dataset, config, n_members=2, mode="fused", device="cpu")
    independent = fit_ensemble(small_dataset, config, n_members=2, mode="independent", device="cpu")
    assert fused.model.n_members == independent.model.n_members == 2
    for key, value in fused.model.state_dict().items():
        assert torch.allclose(value, independent.model.state_dict()[key], rtol=1e-3, atol=1e-5), key
    # Members start from different seeds, so they differ from each other.
    a, b = unstack_members(fused.model)
    assert not torch.allclose(a.readout.hidden_weight, b.readout.hidden_weight)


def test_fused_rotating_stop_sets_train_each_member_as_if_alone(small_dataset):
    # Members train on different images of one batch (per-member masks, batch-norm
    # statistics over each member's own images); early stopping freezes each member as
    # its own patience runs out.  The result must be the members trained one by one.
    config = ModelConfig(
        architecture="factorised",
        core_filters=(4, 4),
        core_kernels=(5, 5),
        pool_layers=(1,),
        batch_norm=True,
        output_knots=4,
        l1_readout=0.01,
        learning_rate=3e-3,
        max_epochs=40,
        patience=5,
        stop_check_every=3,
        stop_sets="rotating",
        ensemble_size=3,
        seed=2,
    )
    fused = fit_model(small_dataset, config.replace(ensemble_mode="fused"), device="cpu")
    alone = fit_model(small_dataset, config.replace(ensemble_mode="independent"), device="cpu")
    assert np.array_equal(fused.best_epoch, alone.best_epoch)
    # Same losses epoch by epoch and the same members, to rounding.
    for key in ("train_loss", "stop_loss"):
        trained = np.isfinite(alone.history[key][:10])  # NaN after a member alone has stopped
        assert np.allclose(fused.history[key][:10][trained], alone.history[key][:10][trained], rtol=1e-4), key
    images = small_dataset.images[fused.split.held_out]
    for fused_member, alone_member in zip(unstack_members(fused.model), unstack_members(alone.model)):
        assert np.allclose(predict(fused_member, images), predict(alone_member, images), rtol=1e-3, atol=1e-3)


def test_ensemble_prediction_is_the_member_mean(small_dataset):
    result = fit_model(small_dataset, TINY.replace(ensemble_size=3, max_epochs=3), device="cpu")
    images = small_dataset.images[:10]
    members = [predict(member, images) for member in unstack_members(result.model)]
    assert np.allclose(predict(result.model, images), np.mean(members, axis=0), atol=1e-5)
    assert result.best_epoch.shape == (3,) and result.history["stop_loss"].shape[1] == 3


# --- using the stopping images for training too -----------------------------------------------------


def test_rotating_stop_sets_cover_every_fit_image_and_never_the_held_out_ones():
    split = split_images(100, seed=4)
    subsets = _member_subsets(split, ModelConfig(stop_sets="rotating", ensemble_size=4))
    assert np.array_equal(subsets[0][0], split.train) and np.array_equal(subsets[0][1], split.stop)
    for train, stop in subsets:
        assert np.array_equal(np.sort(np.concatenate([train, stop])), split.fit)
        assert len(stop) == len(split.stop) and not np.intersect1d(stop, train).size
    stopped_on = np.unique(np.concatenate([stop for _, stop in subsets]))
    assert len(stopped_on) == 4 * 14  # consecutive blocks: no image stops two members
    shared = _member_subsets(split, ModelConfig(ensemble_size=3))
    assert all(np.array_equal(stop, split.stop) for _, stop in shared)


@pytest.mark.parametrize(
    "options",
    [
        {"refit": True},
        {"refit": True, "stop_sets": "rotating", "ensemble_size": 2},
        {"refit": True, "ensemble_size": 2, "ensemble_mode": "fused"},
    ],
)
def test_refit_ignores_held_out_responses_and_differs_from_the_stopped_fit(small_dataset, options):
    config = TINY.replace(
        architecture="factorised", batch_norm=True, pool_layers=(1,), max_epochs=8, learning_rate=1e-2, **options
    )
    result = fit_model(small_dataset, config, device="cpu")
    held_out = result.split.held_out
    trials = small_dataset.trial_rates.copy()
    trials[held_out] = trials[held_out][::-1] * 3.0
    scrambled = fit_model(with_trial_rates(small_dataset, trials), config, device="cpu")
    for key, value in result.model.state_dict().items():
        assert torch.equal(value, scrambled.model.state_dict()[key]), key
    # Each member is refitted for exactly the epochs early stopping chose.
    refit_loss = result.history["refit_loss"]
    epochs = np.sum(np.isfinite(refit_loss), axis=0)
    assert np.array_equal(epochs, result.best_epoch + 1)
    stopped = fit_model(small_dataset, config.replace(refit=False), device="cpu")
    assert np.array_equal(stopped.best_epoch, result.best_epoch)
    assert not torch.equal(stopped.model.readout.mask, result.model.readout.mask)


# --- the point of the CNN --------------------------------------------------------------------------


def test_linear_baseline_recovers_a_linear_population():
    dataset = make_dataset(n_images=60, n_units=3, size=11, seed=1)
    weights = np.random.default_rng(0).standard_normal((121, 3))
    rates = 20 + 5 * (dataset.images.reshape(60, -1) - 0.5) @ weights
    linear = with_trial_rates(dataset, np.repeat(rates[:, None, :], 2, axis=1))
    result = fit_model(linear, ModelConfig(architecture="linear", seed=0), device="cpu")
    held_out = result.split.held_out
    assert mean_pearson_r(predict(result.model, linear.images[held_out]), rates[held_out]) > 0.95


def test_cnn_beats_the_linear_baseline_on_held_out_images():
    dataset = make_dataset(n_images=240, n_units=6, size=21, seed=0)
    # A one-layer core keeps this fast; on this seed r is about 0.67 (CNN) vs 0.38 (linear).
    cnn_config = ModelConfig(
        core_filters=(8,), core_kernels=(7,), dense_units=64, learning_rate=5e-3, max_epochs=200, patience=40, seed=0
    )
    cnn = fit_model(dataset, cnn_config, device="cpu")
    linear = fit_model(dataset, ModelConfig(architecture="linear", seed=0), device="cpu")
    held_out = cnn.split.held_out
    assert np.array_equal(held_out, linear.split.held_out)
    measured = dataset.mean_rates[held_out]
    r_cnn = mean_pearson_r(predict(cnn.model, dataset.images[held_out]), measured)
    r_linear = mean_pearson_r(predict(linear.model, dataset.images[held_out]), measured)
    assert r_cnn > r_linear + 0.2, (r_cnn, r_linear)


# --- CUDA graphs ----------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "config",
    [
        TINY.replace(dropout_keep=1.0, max_epochs=30, ensemble_size=2, ensemble_mode="fused"),
        ModelConfig(
            architecture="factorised",
            core_filters=(4, 4),
            core_kernels=(5, 5),
            pool_layers=(1,),
            batch_norm=True,
            output_knots=4,
            max_epochs=30,
            patience=5,
            stop_check_every=3,
            stop_sets="rotating",
            ensemble_size=3,
            ensemble_mode="fused",
            seed=1,
        ),
    ],
    ids=["dense-fused", "factorised-rotating"],
)
def test_cuda_graph_epochs_equal_eager_epochs(small_dataset, config):
    graphed = fit_model(small_dataset, config, device="cuda")
    eager = fit_model(small_dataset, config.replace(cuda_graphs=False), device="cuda")
    assert np.array_equal(graphed.best_epoch, eager.best_epoch) and graphed.epochs_run == eager.epochs_run
    assert np.allclose(graphed.history["stop_loss"], eager.history["stop_loss"], rtol=1e-3, equal_nan=True)
    images = small_dataset.images[graphed.split.held_out]
    assert np.allclose(predict(graphed.model, images), predict(eager.model, images), rtol=1e-3, atol=1e-3)
