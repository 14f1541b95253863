"""Several sessions fused into one batched training equal the sessions fitted one by one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tiny_models import TINY_RECOMMENDED

from closedloop.data.loader import load_dataset
from closedloop.model.model_config import ModelConfig
from closedloop.model.multi_session import _member_images, fit_sessions
from closedloop.model.predict import predict
from closedloop.model.train import fit_model, prepare_fit

CONFIG = TINY_RECOMMENDED.replace(max_epochs=15, ensemble_mode="fused")


@pytest.fixture(scope="module")
def sessions(archives):
    first = load_dataset(archives["session"])
    second = load_dataset(archives["pvc8"])
    # A third session on the first one's images with fewer units: shared images, padded units.
    fewer = dataclasses.replace(
        first, trial_rates=first.trial_rates[:, :, :3], unit_ids=first.unit_ids[:3], source="fewer-units"
    )
    return [first, second, fewer]


@pytest.mark.parametrize(
    "config",
    [
        CONFIG,
        CONFIG.replace(refit=True, stop_sets="shared", max_epochs=8),
        CONFIG.replace(gabor_bank=True, gabor_wavelengths=(4.0,), contrast_gain=True, max_epochs=8),
        ModelConfig(
            core_filters=(4,),
            core_kernels=(5,),
            dense_units=8,
            max_epochs=8,
            patience=3,
            stop_check_every=2,
            dropout_keep=1.0,
        ),
    ],
    ids=["recommended-like", "refit-shared", "gabor-bank-and-contrast-gain", "kindel2017-like"],
)
def test_fused_sessions_equal_sessions_fitted_one_by_one(sessions, config):
    seeds = [11, 12, 13]
    fused = fit_sessions(sessions, config, seeds=seeds, device="cpu")
    for dataset, seed, together in zip(sessions, seeds, fused):
        alone = fit_model(dataset, config, seed=seed, device="cpu")
        assert np.array_equal(together.unit_ids, alone.unit_ids)
        assert np.array_equal(together.split.held_out, alone.split.held_out)
        assert np.array_equal(together.best_epoch, alone.best_epoch) and together.epochs_run == alone.epochs_run
        for key, value in alone.history.items():
            assert together.history[key].shape == value.shape, key
            finite = np.isfinite(value)
            assert np.array_equal(finite, np.isfinite(together.history[key])), key
            assert np.allclose(together.history[key][finite], value[finite], rtol=1e-4, atol=1e-6), key
        images = dataset.images[alone.split.held_out]
        assert np.allclose(predict(together.model, images), predict(alone.model, images), rtol=1e-3, atol=1e-3)
        assert together.model.n_units == alone.model.n_units and together.model.build_spec == alone.model.build_spec


def test_each_member_gets_its_own_session_images_zero_padded(sessions):
    prepared = [prepare_fit(dataset, CONFIG, seed=1) for dataset in sessions]
    images = _member_images(prepared, 2)
    assert images.shape == (max(len(p.images) for p in prepared), 6, 33, 33)
    for s, prep in enumerate(prepared):
        for member in (2 * s, 2 * s + 1):
            assert np.array_equal(images[: len(prep.images), member], prep.images)
            assert not images[len(prep.images) :, member].any()


def test_fit_command_fuses_sessions_and_writes_each(archives, tiny_config_file, tmp_path, capsys):
    import json

    from closedloop.cli import main

    config = tmp_path / "no-dropout.yaml"  # dropout is drawn differently in a fused batch
    config.write_text(tiny_config_file.read_text() + "  dropout_keep: 1.0\n")
    out, alone = tmp_path / "fused", tmp_path / "alone"
    base = [
        "fit",
        str(archives["session"]),
        str(archives["pvc8"]),
        "--config",
        str(config),
        "--seed",
        "3",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main([*base, "--out", str(out), "--fuse-sessions"]) == 0
    assert main([*base, "--out", str(alone), "--workers", "1"]) == 0
    for name in ("s1", "01"):
        a = json.loads((out / name / "metrics.json").read_text())
        b = json.loads((alone / name / "metrics.json").read_text())
        assert a["best_epoch"] == b["best_epoch"] and a["epochs_run"] == b["epochs_run"]
        assert np.isclose(a["metrics"]["summary"]["mean_r"], b["metrics"]["summary"]["mean_r"], atol=1e-3)
    assert "every session's CNN in one fused training" in capsys.readouterr().out
