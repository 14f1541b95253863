from __future__ import annotations


import h5py
import numpy as np
import pytest

from closedloop.data.dataset import Preprocessing
from closedloop.data.loader import detect_format, load_dataset
from closedloop.data.pvc8 import write_pvc8
from closedloop.data.session import SessionWriter
from closedloop.errors import DataFileError

from .session_child import session_kwargs
from .test_pvc8 import small_recording


def _session(path):
    with SessionWriter(path, **{**session_kwargs(), "stimulus_shape": (36, 36)}) as writer:
        ids = writer.add_stimuli(np.random.default_rng(0).random((3, 36, 36)), "natural")
        writer.add_stimuli(np.full((36, 36), 0.5), "synthesized", unit_id=11, target_hz=20.0)
        rates = np.arange(20, dtype=np.float32).reshape(5, 4)
        writer.append_block(
            "natural", stimulus_ids=[ids[0], ids[1], ids[0], ids[2], 3], onsets_s=np.arange(5.0), responses_hz=rates
        )
    return rates


def test_session_detected_by_content_not_extension(tmp_path):
    path = tmp_path / "looks_like.mat"
    rates = _session(path)
    assert detect_format(path) == "session"
    dataset = load_dataset(path, preprocessing=Preprocessing(downsample=2, crop=15))
    assert dataset.images.shape == (4, 15, 15)
    np.testing.assert_array_equal(dataset.image_ids, [0, 1, 2, 3])  # natural + synthesized
    assert dataset.trial_rates.shape == (4, 2, 4)
    np.testing.assert_array_equal(dataset.trial_rates[0], rates[[0, 2]])
    assert np.isnan(dataset.trial_rates[1:, 1]).all()  # shown once: NaN-padded
    assert dataset.window_s == (0.05, 0.10) and dataset.gratings is None


def test_pvc8_detected_by_content_not_extension(tmp_path):
    path = tmp_path / "recording.h5"
    write_pvc8(path, **small_recording())
    assert detect_format(path) == "pvc8"
    dataset = load_dataset(path, units="all", preprocessing=Preprocessing(downsample=2, crop=33))
    assert dataset.n_units == 3 and dataset.images.shape == (4, 33, 33)
    assert dataset.window_s == (0.05, 0.10)


def test_other_files_are_clear_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("MATLAB 4 or something else entirely")
    with pytest.raises(DataFileError, match="neither a closedloop session"):
        load_dataset(text)
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(DataFileError, match="neither"):
        load_dataset(empty)
    with pytest.raises(DataFileError, match="does not exist"):
        load_dataset(tmp_path / "missing.h5")
    v73 = tmp_path / "v73.mat"
    with h5py.File(v73, "w", userblock_size=512) as file:
        file["x"] = 1
    with open(v73, "r+b") as file:
        file.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64")
    with pytest.raises(DataFileError, match="v7.3"):
        load_dataset(v73)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as file:
        file["x"] = 1
    with pytest.raises(DataFileError, match="not a closedloop session"):
        load_dataset(other)
