"""`closedloop fit --shared-core` and `--core-from` through the command line, on archives of one image set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from closedloop.cli import main
from closedloop.data.loader import load_dataset
from closedloop.model.checkpoint import load_checkpoint
from closedloop.sim.archive import ArchiveSpec, make_archive

TINY_FACTORISED = """\
model:
  architecture: factorised
  core_filters: [4, 4]
  core_kernels: [5, 5]
  pool_layers: [1]
  batch_norm: true
  max_epochs: 8
  patience: 4
  stop_check_every: 2
  ensemble_size: 2
"""


@pytest.fixture(scope="module")
def same_images(tmp_path_factory):
    """Two sessions (other units, other trials) of one image set, a third of other images, and a config."""
    folder = tmp_path_factory.mktemp("shared")
    paths = {name: folder / f"{name}.h5" for name in ("a", "b", "other")}
    for name, seed, image_seed in (("a", 1, 7), ("b", 2, 7), ("other", 3, None)):
        spec = ArchiveSpec(seed=seed, image_seed=image_seed, n_units=5, n_images=40, n_repeats=3)
        make_archive(paths[name], spec)
    config = folder / "tiny.yaml"
    config.write_text(TINY_FACTORISED)
    return paths, config


def _fit(*arguments: str) -> int:
    return main(["fit", *arguments, "--device", "cpu", "--seed", "3", "--workers", "1", "--no-progress"])


def _core(state) -> dict:
    return {key: value.numpy() for key, value in state.items() if key.startswith("core.") and value.dim() > 0}


def test_every_session_gets_its_share_of_one_core(same_images, tmp_path, capsys):
    paths, config = same_images
    out = tmp_path / "out"
    archives = [str(paths[name]) for name in ("a", "b", "other")]
    assert _fit(*archives, "--out", str(out), "--config", str(config), "--shared-core") == 0
    assert "one core shared by a, b, other" in capsys.readouterr().out
    records = {name: json.loads((out / name / "metrics.json").read_text()) for name in ("a", "b", "other")}
    assert all(record["shared_core"] == {"sessions": ["a", "b", "other"]} for record in records.values())
    # a and b showed the same images: the same ones are held out in both
    assert records["a"]["split"] == records["b"]["split"]
    models = {name: load_checkpoint(out / name / "model.pt", "cpu") for name in ("a", "b", "other")}
    cores = {name: _core(model.model.state_dict()) for name, model in models.items()}
    for name in ("b", "other"):
        assert all(np.array_equal(cores["a"][key], cores[name][key]) for key in cores["a"])
    for name in ("a", "b", "other"):  # each session's model predicts its own units only
        assert np.array_equal(models[name].unit_ids, load_dataset(paths[name]).unit_ids)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["executor"] == "shared-core"
    assert [s["shared_core_with"] for s in summary["sessions"]] == [["a", "b", "other"]] * 3


def test_a_new_session_fits_its_readouts_on_a_saved_core_kept_or_tuned(same_images, tmp_path):
    paths, config = same_images
    assert _fit(str(paths["a"]), "--out", str(tmp_path / "first"), "--config", str(config)) == 0
    core_file = tmp_path / "first" / "a" / "model.pt"
    source = _core(load_checkpoint(core_file, "cpu").model.state_dict())
    for how, extra in (("fixed", ["--fixed-core"]), ("tuned", [])):
        out = tmp_path / how
        assert _fit(str(paths["b"]), "--out", str(out), "--core-from", str(core_file), *extra) == 0
        record = json.loads((out / "b" / "metrics.json").read_text())
        assert record["core_from"] == {"model": str(core_file), "core": how}
        assert record["config"]["core_filters"] == [4, 4]  # the core's own configuration
        fitted = _core(load_checkpoint(out / "b" / "model.pt", "cpu").model.state_dict())
        kept = all(np.array_equal(fitted[key], source[key]) for key in source)
        assert kept == (how == "fixed")


@pytest.fixture(scope="module")
def core_file(same_images, tmp_path_factory):
    paths, config = same_images
    out = tmp_path_factory.mktemp("core")
    assert _fit(str(paths["a"]), "--out", str(out), "--config", str(config)) == 0
    return out / "a" / "model.pt"


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--config", "{config}", "--shared-core", "--fuse-sessions"],
            "choose one of --fuse-sessions and --shared-core",
        ),
        (["--config", "{config}", "--shared-core", "--executor", "ray"], "--shared-core trains in this process"),
        (["--core-from", "{core}", "--shared-core"], "leave out --shared-core"),
        (["--core-from", "{absent}"], "no such checkpoint"),
        (["--config", "{config}", "--fixed-core"], "--fixed-core only makes sense with --core-from"),
        (["--core-from", "{core}", "--preset", "kindel2017"], "the core was fitted with architecture"),
        (["--preset", "gabor-blend", "--shared-core"], "--shared-core needs one network per session"),
    ],
)
def test_mistakes_are_one_line_errors_before_any_work(same_images, core_file, tmp_path, capsys, extra, message):
    paths, config = same_images
    capsys.readouterr()
    filled = [word.format(core=core_file, absent=tmp_path / "absent.pt", config=config) for word in extra]
    status = _fit(str(paths["a"]), str(paths["b"]), "--out", str(tmp_path / "out"), *filled)
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
