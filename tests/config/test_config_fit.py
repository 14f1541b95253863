"""A protocol's fit section → the ModelConfig the model server fits: the architecture's preset,
changed only where the protocol says so; keys an architecture does not use are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from config_helpers import DELETE, write_variant

from closedloop.config import load_protocol
from closedloop.errors import ConfigError
from closedloop.model.presets import DIVISIVE, KINDEL2017, RECOMMENDED

KINDEL = "protocols/kindel2017.yaml"
UNSET = {"fit.learning_rate": DELETE, "fit.dropout_keep": DELETE, "fit.ensemble": DELETE}


def _config(tmp_path: Path, changes: dict[str, Any], seed: int | None = None):
    return load_protocol(write_variant(tmp_path, KINDEL, changes)).fit.model_config(seed)


def test_recommended_without_overrides_is_the_preset(tmp_path: Path) -> None:
    config = _config(tmp_path, {**UNSET, "fit.architecture": "recommended"}, seed=3)
    assert config == RECOMMENDED.replace(max_epochs=1000, patience=50, seed=3)
    assert (config.learning_rate, config.ensemble_size, config.stop_sets) == (3e-3, 8, "rotating")


def test_divisive_is_recommended_with_a_normalising_core(tmp_path: Path) -> None:
    config = _config(tmp_path, {**UNSET, "fit.architecture": "divisive", "fit.ensemble": 4})
    assert config == DIVISIVE.replace(max_epochs=1000, patience=50, ensemble_size=4)
    assert config == RECOMMENDED.replace(max_epochs=1000, patience=50, ensemble_size=4, core_normalisation="divisive")


def test_gabor_is_recommended_with_a_gabor_bank(tmp_path: Path) -> None:
    config = _config(tmp_path, {**UNSET, "fit.architecture": "gabor", "fit.stop_metric": "loss"})
    assert config == RECOMMENDED.replace(max_epochs=1000, patience=50, gabor_bank=True, stop_metric="loss")


def test_gabor_wide_is_gabor_on_a_grid_reaching_the_edges(tmp_path: Path) -> None:
    config = _config(tmp_path, {**UNSET, "fit.architecture": "gabor-wide", "fit.ensemble": 4})
    wide = RECOMMENDED.replace(gabor_bank=True, padding="same", pool_stride=3, l1_readout=0.1, output_tail="flat")
    assert config == wide.replace(max_epochs=1000, patience=50, ensemble_size=4)


def test_gabor_blend_counts_the_members_of_each_ensemble_and_takes_no_core(tmp_path: Path) -> None:
    config = _config(tmp_path, {**UNSET, "fit.architecture": "gabor-blend", "fit.ensemble": 2})
    assert config.partner is not None and (config.ensemble_size, config.n_networks) == (2, 4)
    core = tmp_path / "core.pt"
    core.write_bytes(b"")
    changes = {**UNSET, "fit.architecture": "gabor-blend", "fit.core_from": "core.pt"}
    with pytest.raises(ConfigError, match="blends two ensembles") as caught:
        _config(tmp_path, changes)
    assert caught.value.field is not None and caught.value.field.endswith("core_from")


def test_every_model_preset_is_a_protocol_architecture() -> None:
    from typing import get_args

    from closedloop.config.protocol import _ARCHITECTURE_BASE, FitArchitecture
    from closedloop.model.presets import PRESETS

    assert set(get_args(FitArchitecture)) == set(_ARCHITECTURE_BASE) == {*PRESETS, "factorised", "linear"}


def test_given_settings_replace_the_presets(tmp_path: Path) -> None:
    changes = {
        **UNSET,
        "fit.architecture": "recommended",
        "fit.learning_rate": 0.01,
        "fit.ensemble": 3,
        "fit.batch_size": 32,
    }
    config = _config(tmp_path, changes)
    assert (config.learning_rate, config.ensemble_size, config.batch_size) == (0.01, 3, 32)
    assert (config.architecture, config.batch_norm, config.output_knots) == ("factorised", True, 8)


def test_training_image_noise_is_off_unless_asked_for(tmp_path: Path) -> None:
    assert _config(tmp_path, {**UNSET, "fit.architecture": "recommended"}).input_noise == 0.0
    noisy = _config(tmp_path, {**UNSET, "fit.architecture": "divisive", "fit.input_noise": 0.4})
    assert noisy == DIVISIVE.replace(max_epochs=1000, patience=50, input_noise=0.4)


def test_the_stopping_metric_is_the_presets_unless_given(tmp_path: Path) -> None:
    assert _config(tmp_path, {**UNSET, "fit.architecture": "recommended"}).stop_metric == "correlation"
    assert _config(tmp_path, {**UNSET, "fit.architecture": "kindel2017"}).stop_metric == "loss"
    by_loss = _config(tmp_path, {**UNSET, "fit.architecture": "recommended", "fit.stop_metric": "loss"})
    assert by_loss == RECOMMENDED.replace(max_epochs=1000, patience=50, stop_metric="loss")


def test_kindel2017_is_table_1(tmp_path: Path) -> None:
    assert _config(tmp_path, UNSET) == KINDEL2017.replace(max_epochs=1000, patience=50)
    shipped = load_protocol(Path(__file__).resolve().parents[2] / KINDEL).fit.model_config()
    assert shipped == KINDEL2017.replace(max_epochs=1000, patience=50)


def test_factorised_and_linear(tmp_path: Path) -> None:
    factorised = _config(tmp_path, {**UNSET, "fit.architecture": "factorised"})
    assert (factorised.architecture, factorised.learning_rate, factorised.batch_norm) == ("factorised", 1e-3, False)
    linear = _config(tmp_path, {**UNSET, "fit.architecture": "linear", "fit.ensemble": 1})
    assert (linear.architecture, linear.ensemble_size) == ("linear", 1)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        (
            {"fit.architecture": "recommended", "fit.learning_rate": DELETE, "fit.ensemble": DELETE},
            "fit.dropout_keep: is not used by the recommended architecture (only by kindel2017); remove it",
        ),
        (
            {**UNSET, "fit.architecture": "linear", "fit.learning_rate": 0.01},
            "fit.learning_rate: is not used by the linear architecture",
        ),
        ({**UNSET, "fit.architecture": "linear", "fit.ensemble": 3}, "fit.ensemble: must be 1 for the linear"),
        ({**UNSET, "fit.architecture": "linear", "fit.input_noise": 0.4}, "fit.input_noise: is not used by the linear"),
        ({"fit.input_noise": 3}, "fit.input_noise: must be <= 2"),
        ({"fit.stop_metric": "r2"}, "fit.stop_metric"),
        ({**UNSET, "fit.architecture": "linear", "fit.stop_metric": "loss"}, "fit.stop_metric: is not used by"),
        ({"fit.ensemble": 0}, "fit.ensemble: must be >= 1, got 0"),
        ({"fit.learning_rate": -1}, "fit.learning_rate: must be > 0"),
        ({"fit.architecture": "recomended"}, "did you mean 'recommended'?"),
    ],
)
def test_fit_settings_an_architecture_cannot_use_are_refused(tmp_path: Path, changes, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_protocol(write_variant(tmp_path, KINDEL, changes))
    assert fragment in str(caught.value)
