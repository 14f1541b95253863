"""The stimulus library file: round trip, session provenance and refusing bad files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from closedloop.data.session_format import StimulusKind
from closedloop.errors import DataFileError
from closedloop.synth.canvas import Canvas
from closedloop.synth.figure import library_figure
from closedloop.synth.library import read_library, write_library
from closedloop.synth.optimise import SynthesisSettings, synthesize
from closedloop.synth.targets import build_jobs, parse_targets


@pytest.fixture(scope="module")
def result(linear_model):
    percentiles = np.tile(np.linspace(4.0, 40.0, 101)[:, None], (1, 2))
    jobs = build_jobs(
        np.array([0, 1]), parse_targets("p20,max,30hz"), percentiles, hold=[0, 1], baseline_hz=np.array([10.0, 22.0])
    )
    return synthesize(
        linear_model,
        jobs,
        canvas=Canvas(),
        scale_hz=np.array([30.0, 30.0]),
        settings=SynthesisSettings(steps=20),
        seed=4,
    )


def test_round_trip_keeps_images_and_provenance(tmp_path, result):
    path = write_library(
        tmp_path / "lib" / "library.h5",
        result,
        unit_ids=np.array([11, 42]),
        model_path="m.pt",
        model_version=7,
        model_created="2026-01-01",
        run_seed=4,
    )
    assert list(tmp_path.joinpath("lib").iterdir()) == [path]  # no temporary file left behind
    library = read_library(path)
    assert len(library) == 6
    np.testing.assert_array_equal(library.images_model, result.images)
    np.testing.assert_array_equal(library.images_display, Canvas().to_display(result.images))
    assert library.unit_id.tolist() == [11, 11, 11, 42, 42, 42]
    assert library.target_label.tolist() == ["p20", "max", "30hz"] * 2
    assert library.target_kind.tolist() == ["percentile", "max", "rate"] * 2
    np.testing.assert_array_equal(library.achieved_hz, result.achieved_hz)
    np.testing.assert_array_equal(library.seed, result.seeds)
    assert np.isnan(library.target_hz[1]) and library.target_hz[2] == 30.0
    assert library.held[0].tolist() == [False, True] and library.hold_hz[0, 1] == 22.0
    assert library.model_unit_ids.tolist() == [11, 42]
    assert library.attrs["model_version"] == 7 and library.attrs["run_seed"] == 4
    assert library.attrs["model_path"] == "m.pt"
    assert (library.model_version == 7).all()
    np.testing.assert_allclose(library.gap_hz[[0, 2]], result.gap_hz[[0, 2]])


def test_library_images_go_into_a_session_with_provenance(tmp_path, result):
    from closedloop.data.session import SessionReader, SessionWriter

    library = read_library(
        write_library(tmp_path / "library.h5", result, unit_ids=np.array([11, 42]), model_path="m.pt", model_version=3)
    )
    with SessionWriter(
        tmp_path / "session.h5",
        session_id="t",
        unit_ids=[11, 42],
        channels=[0, 1],
        stimulus_shape=(66, 66),
        response_window_s=(0.05, 0.1),
    ) as writer:
        ids = writer.add_stimuli(library.images_display, "synthesized", **library.session_provenance())
    with SessionReader(tmp_path / "session.h5") as reader:
        rows = reader.stimuli[ids]
        assert (rows["kind"] == StimulusKind.SYNTHESIZED).all()
        assert rows["unit_id"].tolist() == library.unit_id.tolist()
        np.testing.assert_allclose(rows["achieved_hz"], library.achieved_hz, rtol=1e-6)
        np.testing.assert_allclose(reader.read_pixels(ids), library.images_display, atol=1e-6)


def test_figure_is_written(tmp_path, result):
    library = read_library(
        write_library(tmp_path / "library.h5", result, unit_ids=np.array([11, 42]), model_path="m.pt", model_version=1)
    )
    path = library_figure(library, tmp_path / "fig4.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_library_files_are_clear_errors(tmp_path, result):
    with pytest.raises(DataFileError, match="no such"):
        read_library(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(DataFileError, match="not an HDF5"):
        read_library(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as file:
        file.attrs["format"] = "something-else"
    with pytest.raises(DataFileError, match="not a closedloop stimulus library"):
        read_library(tmp_path / "other.h5")
    path = write_library(tmp_path / "cut.h5", result, unit_ids=np.array([1, 2]), model_path="m", model_version=1)
    with h5py.File(path, "a") as file:
        del file["achieved_hz"]
    with pytest.raises(DataFileError, match="missing achieved_hz"):
        read_library(path)
    path = write_library(tmp_path / "v9.h5", result, unit_ids=np.array([1, 2]), model_path="m", model_version=1)
    with h5py.File(path, "a") as file:
        file.attrs["format_version"] = 9
    with pytest.raises(DataFileError, match="version 9"):
        read_library(path)
