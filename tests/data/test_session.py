from __future__ import annotations

import h5py
import numpy as np
import pytest

from closedloop.data.dataset import Preprocessing
from closedloop.data.session import BlockFlag, SessionReader, SessionWriter, StimulusKind
from closedloop.data.session_repair import repair_session
from closedloop.errors import DataFileError

from .session_child import UNIT_IDS, WINDOW, block_content, session_kwargs, stimulus_pixels

RIG = "rig:\n  name: bench-2  # ünïcode\n  display: {refresh_hz: 120}\n"


def write_session(path, n_blocks=3, **overrides):
    kwargs = {**session_kwargs(), "rig_yaml": RIG, **overrides}
    with SessionWriter(path, **kwargs) as writer:
        writer.add_stimuli(stimulus_pixels(), "natural", source_index=np.arange(6) * 2)
        for index in range(n_blocks):
            writer.append_block("natural", **block_content(index))
    return path


def test_round_trip(tmp_path):
    path = write_session(tmp_path / "s.h5")
    with SessionReader(path) as reader:
        assert reader.n_blocks == 3 and reader.n_trials == 18 and reader.n_stimuli == 6
        assert reader.rig_yaml == RIG
        assert reader.protocol_yaml == "blocks: 3\n"
        assert reader.seeds == {"session": 7}
        assert reader.session_id == "crash-test"
        assert reader.stimulus_shape == (24, 24)
        assert reader.response_window_s == WINDOW
        np.testing.assert_array_equal(reader.unit_ids, UNIT_IDS)
        assert reader.unit_ids.dtype == np.int64
        np.testing.assert_array_equal(reader.stimulus_pixels, stimulus_pixels())
        np.testing.assert_array_equal(reader.read_pixels([4, 1, 4]), stimulus_pixels()[[4, 1, 4]])
        stimuli = reader.stimuli
        np.testing.assert_array_equal(stimuli["id"], np.arange(6))
        np.testing.assert_array_equal(stimuli["source_index"], np.arange(6) * 2)
        assert np.all(stimuli["kind"] == StimulusKind.NATURAL)
        assert np.all(np.isnan(stimuli["target_hz"])) and np.all(stimuli["unit_id"] == -1)
        blocks = [block_content(i) for i in range(3)]
        trials, spikes, sync = reader.trials, reader.spikes, reader.sync
        for name, column in [
            ("stimulus_ids", "stimulus_id"),
            ("onsets_s", "onset_s"),
            ("flip_s", "flip_s"),
            ("n_frames", "n_frames"),
            ("dropped_frames", "dropped_frames"),
        ]:
            np.testing.assert_array_equal(trials[column], np.concatenate([b[name] for b in blocks]))
        np.testing.assert_array_equal(trials["block"], np.repeat([0, 1, 2], 6))
        np.testing.assert_array_equal(trials["repeat"], np.repeat([0, 1, 2], 6))
        np.testing.assert_array_equal(spikes["unit_id"], np.concatenate([b["spike_unit_ids"] for b in blocks]))
        np.testing.assert_array_equal(spikes["time_s"], np.concatenate([b["spike_times_s"] for b in blocks]))
        np.testing.assert_array_equal(sync["time_s"], np.concatenate([b["sync_times_s"] for b in blocks]))
        np.testing.assert_array_equal(sync["state"], 1)
        table = reader.blocks
        np.testing.assert_array_equal(table["trial_stop"], [6, 12, 18])
        np.testing.assert_array_equal(table["spike_stop"], [400, 800, 1200])
        assert not table["flagged"].any()


def test_default_responses_are_counted_from_the_block_spikes(tmp_path):
    path = tmp_path / "s.h5"
    with SessionWriter(path, **session_kwargs()) as writer:
        writer.add_stimuli(stimulus_pixels()[:2], "natural")
        writer.append_block(
            "natural",
            stimulus_ids=[0, 1],
            onsets_s=[1.0, 2.0],
            spike_unit_ids=[11, 11, 20, 12, 11],
            spike_times_s=[1.05, 1.0999, 1.07, 1.10, 2.06],
        )
    with SessionReader(path) as reader:
        np.testing.assert_allclose(reader.responses, [[40, 0, 0, 20], [20, 0, 0, 0]])
        assert reader.responses.dtype == np.float32


def test_existing_file_is_not_overwritten(tmp_path):
    path = write_session(tmp_path / "s.h5", n_blocks=1)
    with pytest.raises(DataFileError, match="already exists"):
        SessionWriter(path, **session_kwargs())
    write_session(path, n_blocks=2, overwrite=True)
    with SessionReader(path) as reader:
        assert reader.n_blocks == 2


def test_resume_after_close_continues(tmp_path):
    path = write_session(tmp_path / "s.h5", n_blocks=2)
    with SessionWriter.resume(path) as writer:
        assert writer.n_blocks == 2 and writer.n_stimuli == 6
        new = writer.add_stimuli(
            np.full((1, 24, 24), 0.5),
            "synthesized",
            unit_id=12,
            target_hz=30.0,
            model_version=4,
            seed=9,
            achieved_hz=28.5,
        )
        assert new.tolist() == [6]
        assert writer.append_block("mixed", **block_content(2)) == 2
    with SessionReader(path) as reader:
        assert reader.n_blocks == 3
        np.testing.assert_array_equal(reader.trials["repeat"], np.repeat([0, 1, 2], 6))
        row = reader.stimuli[6]
        assert row["kind"] == StimulusKind.SYNTHESIZED and row["unit_id"] == 12
        assert row["target_hz"] == 30.0 and row["model_version"] == 4 and row["achieved_hz"] == 28.5


def _synthesized(writer, spread_hz):
    return writer.add_stimuli(
        np.full((2, 24, 24), 0.5), "synthesized", unit_id=12, achieved_hz=[20.0, 31.0], spread_hz=spread_hz
    )


def test_a_file_from_before_spread_hz_reads_as_nan_resumes_and_repairs(tmp_path):
    path = write_session(tmp_path / "old.h5", n_blocks=1)
    with SessionWriter.resume(path) as writer:
        _synthesized(writer, [2.5, 4.0])
    with SessionReader(path) as reader:
        np.testing.assert_array_equal(reader.stimuli["spread_hz"][6:], [2.5, 4.0])
    with h5py.File(path, "r+") as file:  # as a closedloop from before the column wrote it
        del file["stimuli/spread_hz"]
    with SessionReader(path) as reader:
        assert reader.n_stimuli == 8 and np.all(np.isnan(reader.stimuli["spread_hz"]))
        np.testing.assert_array_equal(reader.stimuli["achieved_hz"][6:], [20.0, 31.0])
    repaired = repair_session(path, tmp_path / "repaired.h5")
    assert repaired.integrity.good_stimuli == 8
    with SessionReader(tmp_path / "repaired.h5") as reader:
        assert reader.n_stimuli == 8 and np.all(np.isnan(reader.stimuli["spread_hz"]))
    with SessionWriter.resume(path) as writer:  # the resumed file gains the column
        _synthesized(writer, [1.0, 1.5])
    with SessionReader(path) as reader:
        spread = reader.stimuli["spread_hz"]
    assert spread.size == 10 and np.all(np.isnan(spread[:8])) and spread[8:].tolist() == [1.0, 1.5]


def test_second_writer_is_refused_while_one_is_live(tmp_path):
    path = tmp_path / "s.h5"
    with SessionWriter(path, **session_kwargs()):
        with pytest.raises(DataFileError, match="being written by another process"):
            SessionWriter.resume(path)


def test_bad_block_arguments(tmp_path):
    with SessionWriter(tmp_path / "s.h5", **session_kwargs()) as writer:
        writer.add_stimuli(stimulus_pixels()[:2], "natural")
        with pytest.raises(ValueError, match="stimulus ids"):
            writer.append_block("natural", stimulus_ids=[0, 2], onsets_s=[0.0, 1.0])
        with pytest.raises(ValueError, match="responses_hz"):
            writer.append_block("natural", stimulus_ids=[0], onsets_s=[0.0], responses_hz=np.zeros((1, 2)))
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            writer.add_stimuli(np.full((24, 24), 1.5), "natural")
        with pytest.raises(ValueError, match="unknown stimulus kind"):
            writer.add_stimuli(np.zeros((24, 24)), "photo")
        with pytest.raises(TypeError, match="provenance"):
            writer.add_stimuli(np.zeros((24, 24)), "natural", colour=3)
        assert writer.n_blocks == 0 and writer.n_stimuli == 2


def _dataset_session(path):
    """Natural images shown unequal numbers of times, gratings, and one flagged block."""
    kwargs = {**session_kwargs(), "stimulus_shape": (40, 40)}
    with SessionWriter(path, **kwargs) as writer:
        rng = np.random.default_rng(5)
        natural = writer.add_stimuli(rng.random((3, 40, 40)), "natural")
        orientations = np.repeat([0.0, 45.0, 90.0, 135.0], 2)
        gratings = writer.add_stimuli(
            np.full((8, 40, 40), 0.5), "grating", orientation_deg=orientations, phase_deg=np.tile([0.0, 180.0], 4)
        )
        n_units = UNIT_IDS.size
        ids = np.array([natural[0], natural[1], natural[0], natural[2], natural[0], natural[1]])
        rates = np.arange(6 * n_units, dtype=np.float32).reshape(6, n_units)
        writer.append_block("natural", stimulus_ids=ids, onsets_s=np.arange(6.0), responses_hz=rates)
        grating_rates = np.repeat(orientations[:, None], n_units, axis=1) + np.tile([0.0, 2.0], 4)[:, None]
        writer.append_block("grating", stimulus_ids=gratings, onsets_s=10 + np.arange(8.0), responses_hz=grating_rates)
        writer.append_block(
            "natural",
            stimulus_ids=[natural[2]],
            onsets_s=[20.0],
            responses_hz=np.full((1, n_units), 999.0),
            flag=BlockFlag.PHOTODIODE_MISMATCH,
        )
    return rates


def test_to_dataset_groups_and_pads(tmp_path):
    path = tmp_path / "s.h5"
    rates = _dataset_session(path)
    with SessionReader(path) as reader:
        assert reader.blocks["flag_code"][2] == BlockFlag.PHOTODIODE_MISMATCH
        dataset = reader.to_dataset(Preprocessing(downsample=2, crop=16))
        pixels = reader.read_pixels([0, 1, 2])
    assert dataset.images.shape == (3, 16, 16)
    np.testing.assert_allclose(
        dataset.images, pixels.reshape(3, 20, 2, 20, 2).mean(axis=(2, 4))[:, 2:18, 2:18], rtol=1e-5
    )
    np.testing.assert_array_equal(dataset.image_ids, [0, 1, 2])
    assert dataset.trial_rates.shape == (3, 3, 4)
    np.testing.assert_array_equal(dataset.trial_rates[0], rates[[0, 2, 4]])
    np.testing.assert_array_equal(dataset.trial_rates[1, :2], rates[[1, 5]])
    assert np.all(np.isnan(dataset.trial_rates[1, 2]))
    np.testing.assert_array_equal(dataset.trial_rates[2, 0], rates[3])  # the flagged 999 is left out
    assert np.all(np.isnan(dataset.trial_rates[2, 1:]))
    np.testing.assert_array_equal(dataset.repeat_counts[:, 0], [3, 2, 1])
    np.testing.assert_array_equal(dataset.gratings.orientations_deg, [0, 45, 90, 135])
    np.testing.assert_allclose(dataset.gratings.rates[:, 0], [1, 46, 91, 136])  # mean over phases
    with SessionReader(path) as reader:
        flagged = reader.to_dataset(Preprocessing(downsample=2, crop=16), include_flagged=True)
    assert flagged.trial_rates[2, 1, 0] == 999.0


def test_to_dataset_recounts_other_windows_from_spikes(tmp_path):
    path = write_session(tmp_path / "s.h5")
    with SessionReader(path) as reader:
        stored = reader.to_dataset(Preprocessing(downsample=1, crop=20))
        same = reader.to_dataset(Preprocessing(downsample=1, crop=20), window_s=WINDOW)
        wide = reader.to_dataset(Preprocessing(downsample=1, crop=20), window_s=(0.0, 0.3))
        spikes, trials = reader.spikes, reader.trials
    np.testing.assert_array_equal(stored.trial_rates, same.trial_rates)
    assert wide.window_s == (0.0, 0.3) and wide.trial_rates.shape == (6, 3, 4)
    # image 0, repeat 1, unit 13 by hand
    onset = trials["onset_s"][(trials["stimulus_id"] == 0)][1]
    hand = np.sum((spikes["unit_id"] == 13) & (spikes["time_s"] >= onset) & (spikes["time_s"] < onset + 0.3))
    assert wide.trial_rates[0, 1, 2] == pytest.approx(hand / 0.3)


# ------------------------------------------------------------------ broken files
def test_missing_file(tmp_path):
    with pytest.raises(DataFileError, match="does not exist"):
        SessionReader(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("this is not a session\n")
    with pytest.raises(DataFileError, match="not an HDF5 file"):
        SessionReader(path)


def test_truncated_session(tmp_path):
    path = write_session(tmp_path / "s.h5")
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFileError, match="cut.h5"):
        SessionReader(cut).to_dataset(Preprocessing(downsample=1, crop=20))


def test_hdf5_that_is_not_a_session(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as file:
        file["x"] = np.arange(3)
    with pytest.raises(DataFileError, match="not a closedloop session"):
        SessionReader(path)


def test_wrong_format_version(tmp_path):
    path = write_session(tmp_path / "s.h5", n_blocks=1)
    with h5py.File(path, "r+") as file:
        file.attrs["format_version"] = 99
    with pytest.raises(DataFileError, match="version 99"):
        SessionReader(path)


def test_missing_dataset(tmp_path):
    path = write_session(tmp_path / "s.h5", n_blocks=1)
    with h5py.File(path, "r+") as file:
        del file["sync/line"]
    with pytest.raises(DataFileError, match="missing sync/line"):
        SessionReader(path)
    with pytest.raises(DataFileError, match="missing sync/line"):
        SessionWriter.resume(path)


def test_reader_in_the_writers_own_process_sees_new_blocks(tmp_path):
    path = tmp_path / "s.h5"
    with SessionWriter(path, **session_kwargs()) as writer:  # components run as threads
        writer.add_stimuli(stimulus_pixels(), "natural")
        writer.append_block("natural", **block_content(0))
        with SessionReader(path) as reader:
            assert reader.n_blocks == 1
            writer.append_block("natural", **block_content(1))
            reader.refresh()
            assert reader.n_blocks == 2 and reader.n_trials == 12
        writer.append_block("natural", **block_content(2))  # closing the reader left the writer alone
    with SessionReader(path) as reader:
        assert reader.n_blocks == 3
