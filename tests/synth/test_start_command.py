"""`closedloop synth --start natural|blank [--data FILE]`: where rate targets start, end to end."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from closedloop.cli import main
from closedloop.data.dataset import Preprocessing
from closedloop.data.loader import load_dataset
from closedloop.model.checkpoint import load_checkpoint
from closedloop.synth.library import read_library
from closedloop.synth.plan import checkpoint_starts

from _synth_models import TINY_CONFIG

ARGS = ["--units", "all", "--targets", "p35,p80,max", "--steps", "40", "--seed", "2", "--min-r", "-1"]


def synth(model, out, *extra) -> int:
    return main(["synth", str(model), "--out", str(out), "--device", "cpu", *ARGS, *extra])


def test_rate_targets_start_from_the_fitted_images_and_say_which(tiny_checkpoint, tmp_path, capsys):
    model_path, archive = tiny_checkpoint
    synth(model_path, tmp_path / "natural", "--start", "natural", "--json", str(tmp_path / "n.json"))
    printed = capsys.readouterr().out
    library = read_library(tmp_path / "natural" / "library.h5")
    checkpoint = load_checkpoint(model_path, "cpu")
    fitted = set(np.asarray(checkpoint.image_ids)[checkpoint.split.fit].tolist())
    rate = library.target_kind != "max"
    assert set(library.start_image_id[rate].tolist()) <= fitted | {-1}
    assert (library.start_image_id[rate] >= 0).any() and (library.start_image_id[~rate] == -1).all()
    header = next(line for line in printed.splitlines() if "target Hz" in line)
    assert " from " in header and "blank" in printed
    summary = json.loads((tmp_path / "n.json").read_text())
    assert summary["start"] == "natural"
    assert [row["start_image_id"] for row in summary["images"]] == [
        None if i < 0 else int(i) for i in library.start_image_id
    ]

    synth(model_path, tmp_path / "blank", "--json", str(tmp_path / "b.json"))  # the default
    assert (read_library(tmp_path / "blank" / "library.h5").start_image_id == -1).all()
    assert json.loads((tmp_path / "b.json").read_text())["start"] == "blank"


def test_start_images_are_the_fit_images_with_their_measured_means(tiny_checkpoint):
    model_path, archive = tiny_checkpoint
    checkpoint = load_checkpoint(model_path, "cpu")
    starts = checkpoint_starts(checkpoint)
    dataset = load_dataset(archive, preprocessing=Preprocessing(**checkpoint.preprocessing))
    rows = checkpoint.split.fit  # the checkpoint's images are the archive's, in order
    np.testing.assert_array_equal(starts.image_ids, dataset.image_ids[rows])
    np.testing.assert_array_equal(starts.images, dataset.images[rows])
    columns = [int(np.flatnonzero(dataset.unit_ids == u)[0]) for u in checkpoint.unit_ids]
    np.testing.assert_allclose(starts.measured_hz, dataset.mean_rates[rows][:, columns], rtol=1e-6)


def test_a_model_whose_session_moved_needs_data_for_natural_starts(tmp_path, capsys):
    from closedloop.fitting.session import FitSettings, fit_session
    from closedloop.model.model_config import ModelConfig
    from closedloop.sim.archive import ArchiveSpec, make_archive

    archive = tmp_path / "moved.h5"
    make_archive(archive, ArchiveSpec(layout="session", seed=3, n_units=3, n_images=30, n_repeats=3))
    config = ModelConfig.from_dict(dict(TINY_CONFIG, ensemble_size=1, max_epochs=2))
    fit_session(archive, tmp_path / "fit", "s", FitSettings(config=config, device="cpu", seed=0))
    kept = archive.rename(tmp_path / "kept.h5")  # the session moved after the fit
    model_path = tmp_path / "fit" / "s" / "model.pt"

    assert synth(model_path, tmp_path / "a", "--start", "natural") == 2
    error = capsys.readouterr().err
    assert "moved.h5: no such file" in error and "--data FILE" in error and "Traceback" not in error
    assert not (tmp_path / "a" / "library.h5").exists()
    assert synth(model_path, tmp_path / "b", "--start", "natural", "--data", str(kept)) in (0, 1)
    assert (read_library(tmp_path / "b" / "library.h5").start_image_id >= 0).any()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--start", "natural", "--data", "{tmp}/none.h5"], "none.h5: no such file"),
        (["--start", "natural", "--data", "{tmp}/other.h5"], "not in the data"),
        (["--data", "{archive}"], "--data is read for --start natural only"),
    ],
)
def test_bad_data_for_the_starts_is_one_clear_line(tiny_checkpoint, tmp_path, capsys, extra, message):
    from closedloop.sim.archive import ArchiveSpec, make_archive

    model_path, archive = tiny_checkpoint
    make_archive(tmp_path / "other.h5", ArchiveSpec(layout="session", seed=5, n_units=2, n_images=10, n_repeats=2))
    extra = [e.format(tmp=tmp_path, archive=archive) for e in extra]
    assert synth(model_path, tmp_path / "out", *extra) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not (tmp_path / "out" / "library.h5").exists()


def test_a_library_written_before_starts_were_recorded_reads_as_started_from_grey(tiny_checkpoint, tmp_path):
    model_path, _ = tiny_checkpoint
    synth(model_path, tmp_path, "--start", "natural")
    with h5py.File(tmp_path / "library.h5", "a") as file:
        del file["start_image_id"]
    assert (read_library(tmp_path / "library.h5").start_image_id == -1).all()


def test_natural_starts_work_for_a_pvc8_fit_of_every_unit(tmp_path):
    from closedloop.fitting.session import FitSettings, fit_session
    from closedloop.model.model_config import ModelConfig
    from closedloop.sim.archive import ArchiveSpec, make_archive

    archive = tmp_path / "s.mat"
    make_archive(archive, ArchiveSpec(layout="pvc8", seed=2, n_units=8, n_images=30, n_repeats=3))
    config = ModelConfig.from_dict(dict(TINY_CONFIG, ensemble_size=1, max_epochs=2))
    fit_session(archive, tmp_path / "fit", "s", FitSettings(config=config, device="cpu", seed=0, units="all"))
    checkpoint = load_checkpoint(tmp_path / "fit" / "s" / "model.pt", "cpu")
    every = load_dataset(archive, preprocessing=Preprocessing(**checkpoint.preprocessing), units="all")
    centred = load_dataset(archive, preprocessing=Preprocessing(**checkpoint.preprocessing))
    assert centred.n_units < every.n_units  # some units are not INDCENT: the fit kept them anyway
    starts = checkpoint_starts(checkpoint)
    assert starts.measured_hz.shape == (len(checkpoint.split.fit), len(checkpoint.unit_ids))
    assert set(checkpoint.unit_ids.tolist()) - set(centred.unit_ids.tolist())
