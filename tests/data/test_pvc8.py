from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io

from closedloop.data.dataset import Preprocessing
from closedloop.data.preprocess import preprocess
from closedloop.data.pvc8 import (
    ORIENTATIONS_DEG,
    load_pvc8_dataset,
    read_pvc8,
    write_pvc8,
)
from closedloop.errors import DataFileError

N_UNITS, N_NATURAL, N_REPEATS, T, T_BLANK = 3, 8, 2, 106, 12
N_STIMULI = N_NATURAL + 416
ORIENTATION_START = N_NATURAL + 128


def small_recording(seed=0):
    """Arrays shaped like a real pvc-8 file, small enough to write in well under a second."""
    rng = np.random.default_rng(seed)
    resp_train = rng.binomial(1, 0.05, (N_UNITS, N_STIMULI, N_REPEATS, T)).astype(np.uint8)
    # orientation grating k (all phases, repeats) gets exactly k extra spikes in 50-100 ms
    resp_train[:, ORIENTATION_START : ORIENTATION_START + 64, :, 50:100] = 0
    for k in range(16):
        resp_train[:, ORIENTATION_START + 4 * k : ORIENTATION_START + 4 * k + 4, :, 50 : 50 + k] = 1
    blank = rng.binomial(1, 0.02, (N_UNITS, N_STIMULI, N_REPEATS, T_BLANK)).astype(np.uint8)
    # Mostly flat images compress to almost nothing; natural ones get a random centre.
    images = [np.full((320, 320), i % 256, dtype=np.uint8) for i in range(N_STIMULI)]
    for i in range(N_NATURAL):
        images[i][110:210, 110:210] = rng.integers(0, 256, (100, 100), dtype=np.uint8)
    return dict(resp_train=resp_train, resp_train_blk=blank, images=images, indcent=np.array([1, 0, 1]))


@pytest.fixture(scope="module")
def pvc8_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pvc8") / "01.mat"
    arrays = small_recording()
    write_pvc8(path, **arrays, extra={"P_HOMOG": np.zeros((N_UNITS, 1))})
    return path, arrays


def test_written_file_has_the_real_variables(pvc8_file):
    path, _ = pvc8_file
    listing = {name: (shape, cls) for name, shape, cls in scipy.io.whosmat(str(path))}
    assert listing["resp_train"] == ((N_UNITS, N_STIMULI, N_REPEATS, T), "uint8")
    assert listing["resp_train_blk"] == ((N_UNITS, N_STIMULI, N_REPEATS, T_BLANK), "uint8")
    assert listing["images"] == ((1, N_STIMULI), "cell")
    assert listing["INDCENT"][0] == (N_UNITS, 1)
    assert "P_HOMOG" in listing
    assert path.read_bytes().startswith(b"MATLAB 5.0 MAT-file")
    assert path.stat().st_size < 2_000_000


def test_round_trip_counts_and_layout(pvc8_file):
    path, arrays = pvc8_file
    recording = read_pvc8(path, load_blank=True)
    np.testing.assert_array_equal(recording.resp_train, arrays["resp_train"])
    np.testing.assert_array_equal(recording.resp_train_blk, arrays["resp_train_blk"])
    np.testing.assert_array_equal(
        recording.image_stack([0, 5, 423]), np.stack([arrays["images"][i] for i in (0, 5, 423)])
    )
    np.testing.assert_array_equal(recording.unit_ids, [1, 2, 3])
    np.testing.assert_array_equal(recording.centred_units, [0, 2])
    np.testing.assert_array_equal(recording.natural_small_indices, [0, 2, 4, 6])
    np.testing.assert_array_equal(recording.natural_large_indices, [1, 3, 5, 7])
    assert recording.orientation_grating_indices[0] == ORIENTATION_START
    assert recording.size_grating_indices[-1] == N_STIMULI - 1
    counts = recording.window_counts((0.05, 0.10))
    expected = arrays["resp_train"][..., 50:100].sum(axis=3).transpose(1, 2, 0)
    np.testing.assert_array_equal(counts, expected)
    rates = recording.trial_rates((0.02, 0.07), [3, 1], [2])
    np.testing.assert_allclose(rates[:, :, 0], arrays["resp_train"][2, [3, 1], :, 20:70].sum(axis=2) / 0.05)
    assert read_pvc8(path).resp_train_blk is None  # the large blank trains load only on request


def test_orientation_responses(pvc8_file):
    path, _ = pvc8_file
    gratings = read_pvc8(path).orientation_responses((0.05, 0.10))
    np.testing.assert_allclose(gratings.orientations_deg, ORIENTATIONS_DEG)
    assert gratings.orientations_deg[0] == 90.0 and gratings.orientations_deg[-1] == -78.75
    np.testing.assert_allclose(gratings.rates, np.repeat(np.arange(16)[:, None] / 0.05, N_UNITS, axis=1))


def test_load_dataset_keeps_centred_units_and_small_images(pvc8_file):
    path, arrays = pvc8_file
    dataset = load_pvc8_dataset(path)
    np.testing.assert_array_equal(dataset.unit_ids, [1, 3])
    np.testing.assert_array_equal(dataset.image_ids, [0, 2, 4, 6])
    assert dataset.images.shape == (4, 33, 33) and dataset.images.dtype == np.float32
    np.testing.assert_array_equal(dataset.images, preprocess(np.stack(arrays["images"][0:8:2]), Preprocessing()))
    assert dataset.trial_rates.shape == (4, N_REPEATS, 2)
    expected = arrays["resp_train"][[0, 2]][:, 0:8:2, :, 50:100].sum(axis=3).transpose(1, 2, 0) / 0.05
    np.testing.assert_allclose(dataset.trial_rates, expected)
    assert dataset.gratings.rates.shape == (16, 2)
    everyone = load_pvc8_dataset(path, Preprocessing(downsample=4, crop=20), window_s=(0.0, 0.1), units="all")
    assert everyone.n_units == 3 and everyone.images.shape == (4, 20, 20)
    assert everyone.window_s == (0.0, 0.1)


# ------------------------------------------------------------------ broken files
def _save(path, **variables):
    scipy.io.savemat(str(path), variables, do_compression=True)
    return path


def _valid_variables():
    arrays = small_recording()
    cell = np.empty((1, N_STIMULI), dtype=object)
    for i, image in enumerate(arrays["images"]):
        cell[0, i] = image
    return dict(resp_train=arrays["resp_train"], images=cell, INDCENT=np.ones((N_UNITS, 1)))


def test_missing_variable_lists_what_is_there(tmp_path):
    path = _save(tmp_path / "m.mat", resp_train=np.zeros((2, 424, 2, 5), np.uint8), other=np.ones(3))
    with pytest.raises(DataFileError, match=r"missing images, INDCENT; it holds resp_train .*other"):
        read_pvc8(path)


def test_truncated_and_corrupt_mat(tmp_path, pvc8_file):
    source, _ = pvc8_file
    data = source.read_bytes()
    cut = tmp_path / "cut.mat"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFileError, match="cut.mat: MATLAB file is truncated or corrupt"):
        read_pvc8(cut)
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(data[:128] + np.random.default_rng(0).bytes(5000))
    with pytest.raises(DataFileError, match="truncated or corrupt"):
        read_pvc8(garbage)
    scrambled = bytearray(data)  # tags intact, compressed payload damaged
    scrambled[300:2300] = np.random.default_rng(1).bytes(2000)
    damaged = tmp_path / "damaged.mat"
    damaged.write_bytes(bytes(scrambled))
    with pytest.raises(DataFileError, match="damaged.mat: MATLAB file is truncated or corrupt"):
        read_pvc8(damaged)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(resp_train=np.zeros((3, 424, 2), np.uint8)), "resp_train is uint8 with shape"),
        (dict(resp_train=np.zeros((3, 424, 2, 5), np.float64)), "resp_train is float64"),
        (dict(resp_train=np.zeros((3, 425, 2, 5), np.uint8)), "even, positive number of natural"),
        (dict(INDCENT=np.ones((2, 1))), "INDCENT is float64 .* expected 3 x 1"),
    ],
)
def test_wrong_shapes(tmp_path, change, message):
    variables = {**_valid_variables(), **change}
    if variables["resp_train"].ndim == 4 and variables["resp_train"].shape[1] == 425:
        variables["images"] = np.empty((1, 425), dtype=object)
        variables["images"][0, :] = [np.zeros((320, 320), np.uint8)] * 425
    path = _save(tmp_path / "bad.mat", **variables)
    with pytest.raises(DataFileError, match=message):
        read_pvc8(path)


def test_wrong_image_size(tmp_path):
    variables = _valid_variables()
    variables["images"][0, 3] = np.zeros((160, 160), np.uint8)
    path = _save(tmp_path / "bad.mat", **variables)
    with pytest.raises(DataFileError, match=r"images\{4\} is uint8 \(160, 160\)"):
        read_pvc8(path)


def test_v73_file_is_named(tmp_path):
    path = tmp_path / "01.mat"
    with h5py.File(path, "w", userblock_size=512) as file:
        file["resp_train"] = np.zeros((2, 2), np.uint8)
    with open(path, "r+b") as file:
        file.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")
    with pytest.raises(DataFileError, match="MATLAB v7.3 \\(HDF5\\).*pvc-8 files are MATLAB v5"):
        read_pvc8(path)


def test_not_a_mat_file(tmp_path):
    path = tmp_path / "x.mat"
    path.write_text("hello")
    with pytest.raises(DataFileError, match="not a MATLAB v5"):
        read_pvc8(path)
    with pytest.raises(DataFileError, match="does not exist"):
        read_pvc8(tmp_path / "missing.mat")
