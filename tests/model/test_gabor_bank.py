"""The fixed Gabor bank: quadrature filters, and features at the learned core's grid positions."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _synthetic_responses import make_dataset  # noqa: E402

from closedloop.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from closedloop.model.cores import ConvCore, MemberBatchNorm, MemberStandardisation  # noqa: E402
from closedloop.errors import ConfigError  # noqa: E402
from closedloop.model.gabor_bank import (  # noqa: E402
    MEMO_SIZE,
    N_ORIENTATIONS,
    GaborBank,
    gabor_pairs,
    kernel_size,
)
from closedloop.model.model_config import GABOR_WAVELENGTHS, LEGACY_GABOR_WAVELENGTHS, ModelConfig  # noqa: E402
from closedloop.model.networks import build_network  # noqa: E402
from closedloop.model.predict import predict  # noqa: E402
from closedloop.model.presets import preset  # noqa: E402
from closedloop.model.train import fit_model  # noqa: E402


def grating(size: int, wavelength: float, theta: float, phase: float) -> torch.Tensor:
    axis = torch.arange(size, dtype=torch.float64)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    along = x * math.cos(theta) + y * math.sin(theta)
    return torch.cos(2 * math.pi * along / wavelength + phase).float()


def test_filters_are_zero_mean_unit_norm_pairs() -> None:
    filters = gabor_pairs()
    assert filters.shape[0] == 2 * len(GABOR_WAVELENGTHS) * N_ORIENTATIONS
    flat = filters.flatten(1).double()
    assert torch.allclose(flat.sum(1), torch.zeros(len(flat), dtype=torch.float64), atol=1e-5)
    assert torch.allclose(flat.norm(dim=1), torch.ones(len(flat), dtype=torch.float64), atol=1e-5)


def test_energy_is_phase_invariant_and_tuned() -> None:
    # A complex cell: the pair's energy hardly changes as a preferred grating drifts, while each
    # filter's own response swings through zero; a grating at the orthogonal orientation barely drives it.
    filters = gabor_pairs()
    pair = 2 * (1 * N_ORIENTATIONS + 2)  # wavelength 6 px, orientation 2 of 8 (45 degrees)
    even, odd = filters[pair, 0], filters[pair + 1, 0]
    size = even.shape[-1]
    energies, evens = [], []
    for phase in torch.linspace(0, 2 * math.pi, 9)[:-1].tolist():
        image = grating(size, GABOR_WAVELENGTHS[1], math.pi / 4, phase)
        e, o = float((image * even).sum()), float((image * odd).sum())
        energies.append(math.hypot(e, o))
        evens.append(e)
    assert max(energies) / min(energies) < 1.1
    assert min(evens) < -0.5 * max(energies) and max(evens) > 0.5 * max(energies)
    orthogonal = grating(size, GABOR_WAVELENGTHS[1], 3 * math.pi / 4, 0.3)
    assert math.hypot(float((orthogonal * even).sum()), float((orthogonal * odd).sum())) < 0.1 * min(energies)


@pytest.mark.parametrize(
    "options",
    [
        {"pool_layers": (1,)},  # recommended: 7 x 7 grid every 2 px from px 10
        {},  # the paper's: pooled after both layers, 3 x 3 every 4 px
        {"pool_layers": (1,), "padding": "same"},
        {"kernels": (5, 3), "pool_layers": (2,)},
    ],
)
def test_grid_geometry_is_where_the_learned_core_looks(options) -> None:
    # The centre of the input pixels that each output position of the learned core depends on
    # (its gradient's support) is where grid_geometry says that position sits.
    kernels = options.pop("kernels", (7, 7))
    core = ConvCore(input_size=33, filters=(2, 2), kernels=kernels, **options)
    with torch.no_grad():
        for layer in core.layers:
            layer.weight.fill_(0.01)
            layer.bias.fill_(1.0)  # every ReLU passes, so every pixel of the field matters
    start, step = core.grid_geometry()
    size = core.output_shape[-1]
    generator = torch.Generator().manual_seed(0)
    for index in {size // 2, 0 if core.padding == "valid" else size // 2}:
        # Max-pooling passes a gradient to one pixel of its window: random images reach them all.
        images = torch.rand(64, 33, 33, generator=generator, requires_grad=True)
        core(images)[:, 0, index, index].sum().backward()
        rows = torch.nonzero(images.grad.abs().sum((0, 2))).flatten()
        assert (rows.min() + rows.max()).item() / 2 == pytest.approx(start + step * index, abs=0.5)


def test_bank_features_peak_where_the_pattern_is() -> None:
    # A small grating patch centred under grid position (2, 5) drives the matching energy
    # channel most at that position.
    bank = GaborBank(grid_size=7, grid_start=10.0, grid_step=2)
    row, col = 10 + 2 * 2, 10 + 2 * 5
    patch = grating(33, GABOR_WAVELENGTHS[0], 0.0, 0.0)
    axis = torch.arange(33, dtype=torch.float32)
    envelope = torch.exp(-((axis[:, None] - row) ** 2 + (axis[None, :] - col) ** 2) / (2 * 2.0**2))
    features = bank((patch * envelope)[None, None])
    assert features.shape == (1, bank.n_features, 7, 7)
    assert (features >= 0).all()
    energy = features[0, 0]  # wavelength 4 px, orientation 0: the patch's own
    assert divmod(int(energy.argmax()), 7) == (2, 5)


def test_core_with_bank_adds_its_channels_and_keeps_gradients() -> None:
    core = ConvCore(n_members=2, input_size=33, pool_layers=(1,), batch_norm=True, gabor_bank=True)
    assert core.bank is not None
    assert core.output_shape == (32 + core.bank.n_features, 7, 7)
    images = torch.rand(3, 33, 33, requires_grad=True)
    out = core(images)
    assert out.shape == (3, 2 * core.output_shape[0], 7, 7)
    # Synthesis needs pixel gradients through the bank's channels, not only the learned ones.
    bank_channels = out.unflatten(1, (2, -1))[:, :, 32:]
    bank_channels.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert "bank.filters" not in core.state_dict()  # rebuilt, never saved


def test_gabor_preset() -> None:
    assert preset("gabor").gabor_bank
    assert not preset("recommended").gabor_bank


def test_gabor_wide_reads_out_up_to_the_image_edges() -> None:
    # The gabor preset's grid stops about 10 px in from the edge (receptive fields at the rim
    # fitted worse); gabor-wide's first and last positions lie within 2 px of the edges.
    for name, reaches_edges in (("gabor", False), ("gabor-wide", True)):
        core = build_network(preset(name), n_units=3, n_members=1, input_size=33).core
        assert core.bank is not None
        first = core.bank.grid_start
        last = first + core.bank.grid_step * (core.bank.grid_size - 1)
        assert (first <= 2 and last >= 30) == reaches_edges, (name, first, last)


def test_sessions_fused_into_one_core_each_get_their_own_bank_features() -> None:
    # Fused sessions (closedloop.model.multi_session) give every member its own images.
    core = ConvCore(n_members=2, input_size=33, pool_layers=(1,), gabor_bank=True).eval()
    images = torch.rand(3, 2, 33, 33, generator=torch.Generator().manual_seed(4))
    shared = ConvCore(n_members=2, input_size=33, pool_layers=(1,), gabor_bank=True).eval()
    shared.load_state_dict(core.state_dict())
    core.layers[0].shared_input = False
    with torch.no_grad():
        fused = core(images).unflatten(1, (2, -1))
        for member in range(2):
            alone = shared(images[:, member]).unflatten(1, (2, -1))[:, member]
            assert torch.allclose(fused[:, member], alone, atol=1e-5)


def test_a_gabor_model_trains_saves_and_loads(tmp_path) -> None:
    dataset = make_dataset(n_images=40, n_units=3, size=15, seed=2)
    config = ModelConfig(
        architecture="factorised", core_filters=(4,), core_kernels=(5,), max_epochs=5, seed=0, ensemble_size=2
    )
    result = fit_model(dataset, config.replace(gabor_bank=True), device="cpu")
    assert result.model.core.bank is not None
    path = save_checkpoint(tmp_path / "model.pt", result, metrics={}, model_version=1)
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.config.gabor_bank
    assert np.array_equal(predict(loaded, dataset.images), predict(result.model, dataset.images))


def test_a_fused_fit_with_a_bank_equals_its_members_fitted_one_by_one() -> None:
    # Fused is what a GPU fits by default; the bank's filters (one set for all members) once broke
    # the trainer's per-member bookkeeping of the best epoch's weights.
    dataset = make_dataset(n_images=40, n_units=3, size=15, seed=2)
    config = ModelConfig(
        architecture="factorised", core_filters=(4,), core_kernels=(5,), max_epochs=5, seed=0, ensemble_size=2
    ).replace(gabor_bank=True, gabor_wavelengths=(4.0,))
    fused = fit_model(dataset, config.replace(ensemble_mode="fused"), device="cpu")
    alone = fit_model(dataset, config.replace(ensemble_mode="independent"), device="cpu")
    assert np.array_equal(fused.best_epoch, alone.best_epoch)
    assert np.allclose(predict(fused.model, dataset.images), predict(alone.model, dataset.images), atol=1e-4)


def test_a_fit_standardises_the_bank_over_its_training_images() -> None:
    dataset = make_dataset(n_images=40, n_units=3, size=15, seed=2)
    config = ModelConfig(architecture="factorised", core_filters=(4,), core_kernels=(5,), max_epochs=3, seed=0)
    result = fit_model(dataset, config.replace(gabor_bank=True), device="cpu")
    seen = []
    result.model.core.bank_norm.register_forward_hook(lambda module, args, out: seen.append(out))
    with torch.no_grad():
        result.model(torch.as_tensor(dataset.images[result.split.train], dtype=torch.float32))
    mean, variance = seen[0].mean(dim=(0, 2, 3)), seen[0].var(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-4)
    assert torch.allclose(variance, torch.ones_like(variance), atol=1e-2)  # eps 1e-5 against faint channels
    assert not any(p.requires_grad for p in result.model.core.bank_norm.parameters())  # nothing learned


def test_members_are_standardised_over_their_own_images() -> None:
    generator = torch.Generator().manual_seed(7)
    features = torch.rand(6, 2 * 3, 4, 4, generator=generator) * torch.arange(1, 7).view(1, 6, 1, 1)
    own = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 1]], dtype=torch.float32)
    norm = MemberStandardisation(n_members=2, channels=3)
    norm.set_statistics(features, own)
    out = norm(features).unflatten(1, (2, 3))
    for member in range(2):
        mine = out[own[member] > 0, member]
        assert torch.allclose(mine.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
        assert torch.allclose(mine.var(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)


def test_models_saved_with_a_batch_normalised_bank_predict_as_before() -> None:
    # Until the bank was standardised once per fit, it had batch norm: its eval-mode map is kept.
    old = MemberBatchNorm(n_members=2, channels=3)
    generator = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for tensor in (old.weight, old.bias, old.running_mean):
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
        old.running_var.copy_(torch.rand(old.running_var.shape, generator=generator) + 0.5)
    new = MemberStandardisation(n_members=2, channels=3)
    new.load_state_dict(old.state_dict())
    features = torch.rand(5, 6, 4, 4, generator=generator)
    with torch.no_grad():
        assert torch.allclose(new(features), old.eval()(features), atol=1e-6)


def test_features_grow_less_than_contrast() -> None:
    # Divisive normalisation: four times the contrast gives less than four times the features,
    # and a faint pattern is nearly linear.
    bank = GaborBank(grid_size=7, grid_start=10.0, grid_step=2)
    image = torch.rand(1, 1, 33, 33, generator=torch.Generator().manual_seed(5)) - 0.5
    with torch.no_grad():
        faint = (bank(0.04 * image).sum() / bank(0.01 * image).sum()).item()
        strong = (bank(40 * image).sum() / bank(10 * image).sum()).item()
    assert 3.5 < faint <= 4.0
    assert 1.0 <= strong < 1.5


def test_features_of_a_repeated_input_are_reused_and_of_a_changed_one_recomputed() -> None:
    bank = GaborBank(grid_size=7, grid_start=10.0, grid_step=2)
    images = torch.rand(4, 1, 33, 33, generator=torch.Generator().manual_seed(6))
    first = bank(images)
    assert bank(images.clone()) is first  # equal content, another tensor: reused
    images[2, 0, 16, 16] += 1.0  # changed in place: never served the old features
    changed = bank(images)
    assert changed is not first and torch.equal(changed, bank._features(images))
    assert not torch.equal(changed[2], first[2]) and torch.equal(changed[0], first[0])
    # Only the last MEMO_SIZE inputs are kept.
    others = [torch.rand(4, 1, 33, 33) for _ in range(MEMO_SIZE)]
    for other in others:
        bank(other)
    assert bank(images) is not changed
    # A gradient-carrying input (synthesis) is never served kept features, and gets its gradient.
    pixels = images.clone().requires_grad_(True)
    features = bank(pixels)
    features.sum().backward()
    assert features.requires_grad and pixels.grad is not None and pixels.grad.abs().sum() > 0
    # Nothing computed in inference mode is kept (it could not take part in training later).
    fresh = torch.rand(4, 1, 33, 33)
    with torch.inference_mode():
        bank(fresh)
    assert all(not torch.equal(seen, fresh) for seen, _ in bank._memo)


def test_a_fit_reusing_bank_features_equals_one_recomputing_them(monkeypatch) -> None:
    dataset = make_dataset(n_images=40, n_units=3, size=15, seed=3)
    config = ModelConfig(
        architecture="factorised",
        core_filters=(4,),
        core_kernels=(5,),
        batch_norm=True,
        max_epochs=6,
        seed=0,
        ensemble_size=2,
        stop_sets="rotating",
        gabor_bank=True,
    )
    computed = []
    features = GaborBank._features

    def counted(self, images):
        computed.append(len(images))
        return features(self, images)

    monkeypatch.setattr(GaborBank, "_features", counted)
    reused = fit_model(dataset, config, device="cpu")
    passes_reused = len(computed)
    monkeypatch.setattr(GaborBank, "forward", counted)
    computed.clear()
    recomputed = fit_model(dataset, config, device="cpu")
    assert passes_reused < len(computed) / 3  # once per member's image set, not per epoch
    assert np.array_equal(predict(reused.model, dataset.images), predict(recomputed.model, dataset.images))


def test_the_longest_wavelength_sets_the_kernel_and_is_tuned_to() -> None:
    assert kernel_size(LEGACY_GABOR_WAVELENGTHS) == 15  # what every bank was before wavelengths were a setting
    assert kernel_size(GABOR_WAVELENGTHS) == 23 and max(GABOR_WAVELENGTHS) == 13.5
    # A coarse grating (13.5 px) drives the 13.5-px pair's energy more than any finer pair's.
    filters = gabor_pairs()
    image = grating(filters.shape[-1], 13.5, 0.0, 0.4)
    responses = (filters[:, 0] * image).sum((1, 2)).view(-1, 2)  # (pairs, even/odd)
    energy = responses.norm(dim=1).view(len(GABOR_WAVELENGTHS), N_ORIENTATIONS)
    assert int(energy.max(dim=1).values.argmax()) == GABOR_WAVELENGTHS.index(13.5)


@pytest.mark.parametrize("wavelengths", [[], [1.0, 4.0], [4.0, "long"], [4.0, 60.0], [float("nan")], "4, 6"])
def test_bad_wavelengths_are_refused_naming_the_setting(wavelengths) -> None:
    with pytest.raises(ConfigError) as caught:
        ModelConfig.from_dict({"gabor_bank": True, "gabor_wavelengths": wavelengths}, source="model.yaml")
    assert caught.value.field == "model.gabor_wavelengths"


def test_models_saved_before_the_wavelengths_were_a_setting_load_with_their_three(tmp_path) -> None:
    # Such a checkpoint's configuration has no gabor_wavelengths; its readout weighs the 3-wavelength
    # bank's channels, so it must be rebuilt with that bank, not today's default.
    dataset = make_dataset(n_images=40, n_units=3, size=15, seed=2)
    config = ModelConfig(
        architecture="factorised", core_filters=(4,), core_kernels=(5,), max_epochs=3, seed=0, gabor_bank=True
    )
    result = fit_model(dataset, config.replace(gabor_wavelengths=LEGACY_GABOR_WAVELENGTHS), device="cpu")
    path = save_checkpoint(tmp_path / "model.pt", result, metrics={}, model_version=1)
    record = torch.load(path, weights_only=True)
    del record["config"]["gabor_wavelengths"]
    torch.save(record, path)
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.config.gabor_wavelengths == LEGACY_GABOR_WAVELENGTHS
    assert np.array_equal(predict(loaded, dataset.images), predict(result.model, dataset.images))
    # and a model fitted now keeps its own wavelengths
    current = fit_model(dataset, config, device="cpu")
    reloaded = load_checkpoint(save_checkpoint(tmp_path / "new.pt", current, metrics={}, model_version=1), "cpu")
    assert reloaded.config.gabor_wavelengths == GABOR_WAVELENGTHS
    assert np.array_equal(predict(reloaded, dataset.images), predict(current.model, dataset.images))
