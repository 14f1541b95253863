"""Archive names, worker defaults and model configuration files."""

from __future__ import annotations


import pytest

from closedloop.errors import ClosedLoopError, ConfigError
from closedloop.fitting.batch import default_workers, session_names
from closedloop.fitting.model_files import load_config_yaml, named_config, write_config_yaml
from closedloop.model.model_config import ModelConfig
from tests.benchmark_scripts import load_benchmark


def test_clashing_stems_take_their_folder_name(tmp_path):
    paths = [tmp_path / "monkeyA" / "01.mat", tmp_path / "monkeyB" / "01.mat", tmp_path / "s.h5"]
    assert session_names(paths) == ["monkeyA_01", "monkeyB_01", "s"]


def test_names_that_still_clash_are_an_error(tmp_path):
    paths = [tmp_path / "a" / "x" / "01.mat", tmp_path / "b" / "x" / "01.mat"]
    with pytest.raises(ClosedLoopError, match="would both be written to 'x_01/'"):
        session_names(paths)
    with pytest.raises(ClosedLoopError, match="given twice"):
        session_names([tmp_path / "s.h5", tmp_path / "." / "s.h5"])


def test_default_workers_split_cpu_but_share_gpu_once():
    assert default_workers(1, "cpu") == 1
    assert 1 <= default_workers(10, "cpu") <= 10
    assert default_workers(10, "cuda:0") == 1


def test_config_yaml_round_trip_and_errors(tmp_path):
    config = ModelConfig(core_filters=(8, 16), core_kernels=(5, 3), dense_units=64, learning_rate=3e-4)
    path = write_config_yaml(tmp_path / "best.yaml", config, comment="chosen by a test")
    assert path.read_text().startswith("# chosen by a test\n")
    assert load_config_yaml(path) == config

    flat = tmp_path / "flat.yaml"
    flat.write_text("dense_units: 20\nlearning_rate: 1e-3\n")  # top-level fields work too
    assert load_config_yaml(flat).dense_units == 20

    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  core_filters: [8, 8]\n  core_kernels: [5]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:3: model.core_kernels"):
        load_config_yaml(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_config_yaml(tmp_path / "missing.yaml")


def test_a_model_file_may_change_a_named_preset(tmp_path):
    edge = tmp_path / "edge.yaml"
    edge.write_text("model:\n  preset: recommended\n  padding: same\n  l1_readout: 0.1\n")
    assert load_config_yaml(edge) == named_config("recommended").replace(padding="same", l1_readout=0.1)
    flat = tmp_path / "flat.yaml"
    flat.write_text("preset: divisive\n")
    assert load_config_yaml(flat) == named_config("divisive")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("model:\n  padding: same\n  preset: recomended\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml:3: model.preset.*unknown preset 'recomended'.*recommended"):
        load_config_yaml(wrong)
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: recommended\npadding: wide\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2: model.padding"):
        load_config_yaml(bad)


def test_named_presets():
    assert named_config("kindel2017").core_filters == (16, 32)
    with pytest.raises(ConfigError, match="unknown preset"):
        named_config("no-such-preset")


def test_benchmark_script_runs_on_a_tiny_archive(tiny_config_file, tmp_path, capsys):
    import json

    module = load_benchmark("fit")
    status = module.main(
        [
            "--sessions",
            "1",
            "--units",
            "4",
            "--images",
            "20",
            "--repeats",
            "3",
            "--config",
            str(tiny_config_file),
            "--out",
            str(tmp_path),
            "--json",
            str(tmp_path / "numbers.json"),
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0 and "mean r/rmax" in printed and "time per session" in printed
    numbers = json.loads((tmp_path / "numbers.json").read_text())
    assert numbers["sessions"] == 1 and numbers["units"] >= 1 and numbers["cnn_fit_s"]["median"] > 0
    assert (tmp_path / "archives" / "sim01.h5").exists()
