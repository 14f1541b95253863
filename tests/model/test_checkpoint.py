"""Checkpoints: round trip, atomic writes, refusing wrong files, compatibility, devices."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _synthetic_responses import make_dataset  # noqa: E402

from closedloop.data.dataset import Preprocessing  # noqa: E402
from closedloop.errors import ClosedLoopError, DataFileError  # noqa: E402
from closedloop.model.checkpoint import (  # noqa: E402
    FORMAT_VERSION,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
)
from closedloop.model.networks import ModelConfig  # noqa: E402
from closedloop.model.predict import predict  # noqa: E402
from closedloop.model.train import fit_model  # noqa: E402

TINY = ModelConfig(core_filters=(4,), core_kernels=(5,), dense_units=16, max_epochs=3, seed=0)


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(n_images=40, n_units=3, size=15, seed=2)


@pytest.fixture(scope="module")
def fitted(dataset):
    return fit_model(dataset, TINY.replace(ensemble_size=2), device="cpu")


@pytest.mark.parametrize("architecture", ["kindel2017", "factorised", "linear"])
def test_round_trip_gives_identical_predictions(tmp_path, dataset, architecture):
    config = TINY.replace(architecture=architecture)
    result = fit_model(dataset, config, device="cpu")
    path = save_checkpoint(tmp_path / "model.pt", result, metrics={"r": np.array([0.1, 0.2, 0.3])}, model_version=7)
    loaded = load_checkpoint(path, device="cpu")
    assert np.array_equal(predict(loaded, dataset.images), predict(result.model, dataset.images))
    assert loaded.config == result.config
    assert loaded.model_version == 7
    assert np.allclose(loaded.metrics["r"].numpy(), [0.1, 0.2, 0.3])


def test_checkpoint_records_split_units_and_rate_statistics(tmp_path, dataset, fitted):
    loaded = load_checkpoint(save_checkpoint(tmp_path / "m.pt", fitted), device="cpu")
    assert loaded.model.n_members == 2
    for part in ("train", "stop", "held_out"):
        assert np.array_equal(getattr(loaded.split, part), getattr(fitted.split, part))
    assert loaded.split.seed == 0
    assert np.array_equal(loaded.unit_ids, dataset.unit_ids)
    assert np.array_equal(loaded.image_ids, dataset.image_ids)
    assert loaded.preprocessing == {"downsample": 2, "crop": 33}
    stats = loaded.rate_statistics
    fit_rates = dataset.mean_rates[fitted.split.fit]
    assert stats.percentiles.shape == (101, 3)
    assert np.allclose(stats.percentiles[0], fit_rates.min(0)) and np.allclose(stats.percentiles[100], fit_rates.max(0))
    assert np.allclose(stats.mean, fit_rates.mean(0))
    # each unit's trial variance per Hz over the fit images' trials, by hand
    trials = dataset.trial_rates[fitted.split.fit]
    means, variances = trials.mean(1), trials.var(1, ddof=1)
    by_hand = (variances * (trials.shape[1] - 1)).sum(0) / (means * (trials.shape[1] - 1)).sum(0)
    assert np.all(by_hand > 0) and np.allclose(stats.noise_per_hz, by_hand)
    assert loaded.trained_on.startswith("cpu") and loaded.closedloop_version
    assert loaded.fit["member_seeds"] == fitted.member_seeds


def test_a_model_saved_before_the_noise_was_recorded_reads_as_none(tmp_path, fitted):
    path = save_checkpoint(tmp_path / "old.pt", fitted)
    record = torch.load(path, weights_only=True)
    del record["rate_statistics"]["noise_per_hz"]
    torch.save(record, path)
    assert load_checkpoint(path, device="cpu").rate_statistics.noise_per_hz is None


def test_save_is_atomic_and_replaces(tmp_path, fitted):
    path = tmp_path / "model.pt"
    path.write_bytes(b"old")
    save_checkpoint(path, fitted)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind
    assert load_checkpoint(path, device="cpu").model.n_members == 2


def test_failed_save_leaves_no_file(tmp_path, fitted):
    with pytest.raises(TypeError, match="cannot be stored"):
        save_checkpoint(tmp_path / "model.pt", fitted, metrics={"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_missing_file(tmp_path):
    with pytest.raises(DataFileError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt", device="cpu")


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"", bytes(range(256)) * 4])
def test_foreign_file_is_refused(tmp_path, content):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(DataFileError, match="not a closedloop model checkpoint"):
        load_checkpoint(path, device="cpu")


def test_other_torch_file_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(DataFileError, match="no format 'closedloop-model' marker"):
        load_checkpoint(path, device="cpu")


def _rewrite(path: Path, change) -> None:
    record = torch.load(path, weights_only=True)
    change(record)
    torch.save(record, path)


def test_missing_keys_are_named(tmp_path, fitted):
    path = save_checkpoint(tmp_path / "m.pt", fitted)
    _rewrite(path, lambda record: (record.pop("split"), record.pop("unit_ids")))
    with pytest.raises(DataFileError, match="missing unit_ids, split"):
        load_checkpoint(path, device="cpu")


def test_version_mismatch_is_refused(tmp_path, fitted):
    path = save_checkpoint(tmp_path / "m.pt", fitted)
    _rewrite(path, lambda record: record.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(DataFileError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        load_checkpoint(path, device="cpu")


def test_damaged_state_is_refused(tmp_path, fitted):
    path = save_checkpoint(tmp_path / "m.pt", fitted)
    _rewrite(path, lambda record: record["state_dict"].pop("core.layers.0.weight"))
    with pytest.raises(DataFileError, match="damaged"):
        load_checkpoint(path, device="cpu")


def test_compatibility_check(tmp_path, dataset, fitted):
    loaded = load_checkpoint(save_checkpoint(tmp_path / "m.pt", fitted), device="cpu")
    reordered = dataset.select_units(np.array([2, 0, 1]))
    assert check_compatible(loaded, reordered).tolist() == [1, 2, 0]
    with pytest.raises(ClosedLoopError, match="preprocessing differs"):
        check_compatible(loaded, dataclasses.replace(dataset, preprocessing=Preprocessing(downsample=4)))
    with pytest.raises(ClosedLoopError, match=r"1 model unit\(s\) are not in the data \(ids 101\)"):
        check_compatible(loaded, dataset.select_units(np.array([0, 2])))


def test_loading_on_a_missing_gpu_is_a_clear_error(tmp_path, fitted, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", fitted)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ClosedLoopError, match="no CUDA GPU"):
        load_checkpoint(path, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fit_on_gpu_load_on_cpu(tmp_path, dataset):
    result = fit_model(dataset, TINY.replace(ensemble_size=3, max_epochs=20), device="cuda")
    assert next(result.model.parameters()).device.type == "cuda"
    assert result.device.startswith("cuda:0")
    on_gpu = predict(result.model, dataset.images)
    loaded = load_checkpoint(save_checkpoint(tmp_path / "gpu.pt", result), device="cpu")
    assert next(loaded.model.parameters()).device.type == "cpu"
    assert loaded.trained_on.startswith("cuda:0")
    assert np.allclose(predict(loaded, dataset.images), on_gpu, rtol=1e-3, atol=1e-3)
    back_on_gpu = load_checkpoint(tmp_path / "gpu.pt", device="auto")
    assert next(back_on_gpu.model.parameters()).device.type == "cuda"
