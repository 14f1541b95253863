"""A search's best.yaml is a model file that a protocol's fit: section accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from closedloop.config.protocol import load_protocol
from closedloop.errors import ConfigError
from closedloop.fitting.model_files import write_config_yaml
from closedloop.model.model_config import ModelConfig

DEMO = Path(__file__).resolve().parents[2] / "protocols" / "demo.yaml"


def _protocol(tmp_path, fit_line):
    text, replaced = re.subn(r"(?m)^  architecture: \S+", f"  {fit_line}", DEMO.read_text(), count=1)
    assert replaced == 1
    path = tmp_path / "protocol.yaml"
    path.write_text(text)
    return path


def test_protocol_fit_section_starts_from_a_search_best_yaml(tmp_path):
    best = ModelConfig(core_filters=(8, 16), core_kernels=(5, 5), dense_units=64, learning_rate=2e-3, dropout_keep=0.7)
    write_config_yaml(tmp_path / "search" / "best.yaml", best, comment="Best of 4")
    protocol = load_protocol(_protocol(tmp_path, "model_file: search/best.yaml"))
    config = protocol.fit.model_config(seed=3)
    assert config.core_filters == (8, 16) and config.dense_units == 64 and config.learning_rate == 2e-3
    assert config.max_epochs == 300 and config.ensemble_size == 4 and config.seed == 3  # the section's own keys


def test_missing_model_file_and_both_keys_are_errors_with_line(tmp_path):
    with pytest.raises(ConfigError, match=r"protocol.yaml:\d+: fit.model_file: .*gone.yaml: not found"):
        load_protocol(_protocol(tmp_path, "model_file: gone.yaml"))
    write_config_yaml(tmp_path / "best.yaml", ModelConfig())
    with pytest.raises(ConfigError, match="either architecture or model_file"):
        load_protocol(_protocol(tmp_path, "model_file: best.yaml\n  architecture: kindel2017"))
    (tmp_path / "bad.yaml").write_text("model:\n  core_filters: [4]\n  dense_unit: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:3: model.dense_unit"):
        load_protocol(_protocol(tmp_path, "model_file: bad.yaml"))
