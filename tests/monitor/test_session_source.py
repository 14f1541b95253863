"""Opening a session file: finished, growing, and caught with a block half written."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.data.session import SessionReader, SessionWriter
from closedloop.data.session_format import append_rows
from closedloop.errors import DataFileError
from closedloop.monitor.session_source import SessionSource
from closedloop.monitor.state import MonitorState
from closedloop.sim.archive import ArchiveSpec, make_archive


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("session") / "sim.h5"
    make_archive(path, ArchiveSpec(layout="session", seed=2, n_units=8, n_images=6, n_repeats=2))
    return path


def test_a_finished_session_file_shows_its_data(archive):
    state = MonitorState(unit=3)
    source = SessionSource(archive, state)
    assert source.poll() == 4  # 2 natural + 2 grating blocks
    with SessionReader(archive) as reader:
        trials, responses, blocks = reader.trials, reader.responses, reader.blocks
        spikes, sync = reader.spikes, reader.sync
    source.stop()
    view = state.view()
    assert view.counts["trials"] == trials.size and list(view.unit_ids) == list(range(1, 9))
    np.testing.assert_allclose(view.trials["measured"], responses[:, 2])
    assert view.now.stimulus_id == trials["stimulus_id"][-1] and view.image is not None
    assert view.block_status.block == blocks["index"][-1] and view.block_status.state == "finished"
    # PSTH of unit 3 over every photodiode onset, against numpy
    onsets = sync["time_s"][(sync["state"] == 1) & (sync["line"] == 1)]
    mine = np.sort(spikes["time_s"][spikes["unit_id"] == 3])
    complete = onsets[(onsets - 0.1 >= mine[0]) & (onsets + 0.3 <= spikes["time_s"].max())]
    relative = np.concatenate([mine[(mine >= o - 0.1) & (mine < o + 0.3)] - o for o in complete])
    np.testing.assert_array_equal(view.spikes.counts, np.histogram(relative, bins=view.spikes.edges)[0])
    assert view.health["session"].line().startswith("session file:")


def _writer(path):
    return SessionWriter(
        path, session_id="live", unit_ids=[4, 5], channels=[0, 1], stimulus_shape=(8, 8), response_window_s=(0.05, 0.1)
    )


def test_a_growing_session_is_followed_block_by_block(tmp_path, rng):
    path = tmp_path / "live.h5"
    with _writer(path) as writer:
        ids = writer.add_stimuli(rng.uniform(0, 1, (3, 8, 8)), "natural")
        writer.append_block(
            "natural",
            stimulus_ids=ids,
            onsets_s=[1.0, 1.5, 2.0],
            responses_hz=[[1, 2], [3, 4], [5, 6]],
            dropped_frames=[0, 1, 0],
        )
        state = MonitorState()
        source = SessionSource(path, state)
        assert source.poll() == 1
        assert state.view().counts["trials"] == 3 and state.view().dropped_frames == 1
        assert source.poll() == 0
        synth = writer.add_stimuli(
            rng.uniform(0, 1, (2, 8, 8)),
            "synthesized",
            unit_id=[4, 5],
            target_hz=[10.0, 20.0],
            achieved_hz=[11.0, 19.0],
            model_version=1,
        )
        writer.append_block("synthesized", stimulus_ids=synth, onsets_s=[3.0, 3.5], responses_hz=[[12, 0], [0, 25]])
        assert source.poll() == 1
        source.stop()
    view = state.view()
    assert view.counts["trials"] == 5 and view.now.stimulus_id == synth[-1]
    np.testing.assert_array_equal(view.synthesized["stimulus_id"], synth)
    np.testing.assert_allclose(view.synthesized["measured_hz"], [12.0, 25.0])
    np.testing.assert_allclose(view.synthesized["target_hz"], [10.0, 20.0])


def _synthesized_session(path, rng):
    with _writer(path) as writer:
        synth = writer.add_stimuli(
            rng.uniform(0, 1, (3, 8, 8)),
            "synthesized",
            unit_id=[4, 5, 4],
            target_hz=[10.0, 20.0, 30.0],
            achieved_hz=[11.0, 19.0, 28.0],
            model_version=1,
            spread_hz=[2.0, np.nan, 3.5],  # NaN: a server that sent no spread for it
        )
        writer.append_block("synthesized", stimulus_ids=synth, onsets_s=[1.0, 1.5, 2.0], responses_hz=np.ones((3, 2)))


def _synthesized_view(path):
    state = MonitorState()
    source = SessionSource(path, state)
    source.poll()
    source.stop()
    return state.view().synthesized


def test_the_ensemble_spread_of_synthesized_images_is_read_from_the_file(tmp_path, rng):
    path = tmp_path / "spread.h5"
    _synthesized_session(path, rng)
    s = _synthesized_view(path)
    np.testing.assert_array_equal(s["spread_hz"], [2.0, np.nan, 3.5])
    np.testing.assert_allclose(s["achieved_hz"], [11.0, 19.0, 28.0])


def test_a_file_from_before_spread_hz_shows_no_spread(tmp_path, rng):
    import h5py

    path = tmp_path / "old.h5"
    _synthesized_session(path, rng)
    with h5py.File(path, "r+") as file:  # as a closedloop from before the column wrote it
        del file["stimuli/spread_hz"]
    s = _synthesized_view(path)
    assert s["unit_id"].size == 3 and np.all(np.isnan(s["spread_hz"]))
    np.testing.assert_allclose(s["measured_hz"], [1.0, 1.0, 1.0])


def test_a_block_still_being_written_is_not_shown(tmp_path, rng):
    path = tmp_path / "cut.h5"
    with _writer(path) as writer:
        ids = writer.add_stimuli(rng.uniform(0, 1, (3, 8, 8)), "natural")
        writer.append_block("natural", stimulus_ids=ids, onsets_s=[1.0, 1.5, 2.0], responses_hz=np.ones((3, 2)))
        # the writer is half way through the next block: rows written, the block not committed
        file = writer._file
        append_rows(file["trials/stimulus_id"], np.array([0, 1]))
        append_rows(file["responses"], np.full((2, 2), 99, dtype=np.float32))
        append_rows(file["blocks/index"], np.array([1]))
        append_rows(file["blocks/committed"], np.array([0], dtype=np.uint8))
        file.flush()
        state = MonitorState()
        source = SessionSource(path, state)
        assert source.poll() == 1 and source.poll() == 0
        source.stop()
    view = state.view()
    assert view.counts["trials"] == 3 and np.nanmax(view.trials["measured"]) == 1.0


def test_not_a_session_file_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not hdf5")
    with pytest.raises(DataFileError, match="notes.h5"):
        SessionSource(path, MonitorState())


def test_the_runner_journal_gives_model_versions_and_loop_iterations(archive, tmp_path):
    import shutil

    from closedloop.runner.journal import BlockRecord, Journal, journal_path

    session = tmp_path / "run.h5"
    shutil.copy(archive, session)
    journal = Journal(journal_path(session))
    journal.append(BlockRecord(0, 0, "blocks[0]", "natural", "finished", n_trials=12))
    journal.append(
        BlockRecord(
            1,
            1,
            "blocks[1]",
            "fit",
            "finished",
            model_version=1,
            metrics={"r_mean": 0.4, "r_median": 0.5},
            unit_ids=list(range(1, 9)),
            heldout_r=[0.1, None, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
        )
    )
    journal.append(BlockRecord(2, 2, "blocks[2].blocks[0]", "synthesize", "finished", iteration=1, model_version=1))
    journal.append(BlockRecord(3, 3, "blocks[2].blocks[1]", "present_synthesized", "finished", iteration=1))
    state = MonitorState(unit=3)
    source = SessionSource(session, state)
    source.poll()
    source.stop()
    view = state.view()
    assert state.model_version == 1 and state.model_metrics["r_median"] == 0.5
    assert len(view.model_history) == 1  # the synthesize block's version is not a second update
    assert view.iteration == 1 and view.block_status.kind == "present_synthesized"


def test_saved_model_versions_predict_the_stimuli_of_a_session_file(tmp_path):
    from closedloop.data.loader import load_dataset
    from closedloop.data.preprocess import preprocess
    from closedloop.model.checkpoint import save_checkpoint
    from closedloop.model.model_config import ModelConfig
    from closedloop.model.predict import predict
    from closedloop.model.train import fit_model
    from closedloop.runner.journal import BlockRecord, Journal, journal_path

    session = tmp_path / "run.h5"
    make_archive(session, ArchiveSpec(layout="session", seed=3, n_units=6, n_images=12, n_repeats=2))
    fitted = fit_model(
        load_dataset(session),
        ModelConfig(core_filters=(4,), core_kernels=(5,), dense_units=8, max_epochs=3, patience=5, seed=0),
        device="cpu",
    )
    (tmp_path / "models").mkdir()
    save_checkpoint(tmp_path / "models" / "model_v001.pt", fitted, model_version=1)
    Journal(journal_path(session)).append(
        BlockRecord(0, 0, "blocks[0]", "natural", "finished", model_version=1, metrics={"r_mean": 0.3})
    )
    unit = int(fitted.unit_ids[0])
    state = MonitorState(unit=unit)
    source = SessionSource(session, state)  # models/ next to the file is found by itself
    source.poll()
    source.stop()
    with SessionReader(session) as reader:
        shown = np.unique(reader.trials["stimulus_id"])
        expected = predict(fitted.model, preprocess(reader.read_pixels(shown)))[:, 0]
    assert source.model_predicted == 1
    points = state.view().unit_points
    by_stimulus = dict(zip(shown.tolist(), expected.tolist()))
    assert len(points["stimulus_id"]) == len(shown)
    np.testing.assert_allclose(points["predicted"], [by_stimulus[int(i)] for i in points["stimulus_id"]], rtol=1e-5)
    # the running correlation grows block by block, as it would live
    history = state.view().correlation_history
    assert len(history) == 4 and np.all(np.diff(history["trials"]) > 0)


def test_models_saved_elsewhere_are_looked_for_and_the_hint_names_models(archive, tmp_path):
    import shutil

    from closedloop.runner.journal import BlockRecord, Journal, journal_path

    session = tmp_path / "run.h5"
    shutil.copy(archive, session)
    Journal(journal_path(session)).append(BlockRecord(0, 0, "blocks[0]", "fit", "finished", model_version=2))
    state = MonitorState()
    source = SessionSource(session, state)
    source.poll()
    source.stop()
    expected = tmp_path / "models" / "model_v002.pt"
    assert str(expected) in source.models_missing and "--models DIR" in source.models_missing
    assert str(expected) in state.view().last_error
