"""The model server fitting only readouts on a core fitted before (``fit.core_from``)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, settings

from closedloop.data.dataset import Preprocessing
from closedloop.errors import ClosedLoopError
from closedloop.messages.types import Error, ModelUpdated
from closedloop.model.checkpoint import save_checkpoint
from closedloop.model.train import fit_model
from closedloop.server.component import ModelServer
from closedloop.server.store import ResponseStore

sys.path.insert(0, str(Path(__file__).parents[1] / "config"))
from config_helpers import ROOT, write_variant  # noqa: E402


@pytest.fixture(scope="module")
def core_file(recording, tmp_path_factory):
    """A model fitted on the first 60 images, saved as `closedloop fit` saves one."""
    store = ResponseStore(
        stimulus_size_px=66, preprocessing=Preprocessing(), holdout_fraction=0.2, stop_fraction=0.14, seed=1
    )
    store.add(recording.request(block=1, index=slice(0, 60)))
    dataset, split = store.snapshot()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fitted = fit_model(dataset, TINY.replace(max_epochs=10), device="cpu", seed=3, split=split)
    return save_checkpoint(tmp_path_factory.mktemp("core") / "model.pt", fitted), fitted.model


def _core(model) -> dict[str, np.ndarray]:
    return {k: v.cpu().numpy() for k, v in model.state_dict().items() if k.startswith("core.") and v.dim() > 0}


def test_every_refit_keeps_a_fixed_core_and_fits_the_readouts(run_server, recording, core_file):
    path, source = core_file
    running = run_server(core_from=str(path), fixed_core=True)
    for block, index in ((1, slice(60, 70)), (2, slice(70, 80))):
        running.ask(recording.request(block=block, index=index))
        update = running.next_event((ModelUpdated, Error))
        assert isinstance(update, ModelUpdated), update
        served = running.server.model
        assert served is not None and served.version == block
        for key, value in _core(served.result.model).items():
            assert np.array_equal(value, _core(source)[key]), key
        assert not np.allclose(
            served.result.model.state_dict()["readout.output_weight"].cpu().numpy(),
            source.state_dict()["readout.output_weight"].cpu().numpy(),
        )


def test_by_default_the_first_refit_starts_from_the_given_core_and_trains_it(run_server, recording, core_file):
    path, source = core_file
    running = run_server(core_from=str(path), model=TINY.replace(learning_rate=1e-9, max_epochs=2, patience=1))
    running.ask(recording.request(block=1, index=slice(60, 80)))
    assert isinstance(running.next_event((ModelUpdated, Error)), ModelUpdated)
    served = running.server.model
    assert served is not None
    for key, value in _core(served.result.model).items():  # a step of 1e-9 leaves it where it started
        if "running" not in key:
            assert np.allclose(value, _core(source)[key], atol=1e-6), key
    assert all(p.requires_grad for p in served.result.model.core.parameters())


def test_a_missing_or_mismatched_core_stops_the_server_at_start(recording, core_file, tmp_path):
    with pytest.raises(ClosedLoopError, match="no such checkpoint"):
        ModelServer("model", settings(core_from=str(tmp_path / "absent.pt"))).setup()
    wider = settings(core_from=str(core_file[0]), model=TINY.replace(core_filters=(8,)))
    with pytest.raises(ClosedLoopError, match="core_from .*core_filters"):
        ModelServer("model", wider).setup()


def test_the_protocols_core_from_reaches_the_server_and_is_checked(tmp_path, core_file):
    from closedloop.config import load_protocol, load_rig
    from closedloop.server.settings import ServerSettings

    rig = load_rig(ROOT / "rigs/sim.yaml")
    protocol = load_protocol(write_variant(tmp_path, "protocols/demo.yaml", {"fit.core_from": str(core_file[0])}))
    assert ServerSettings.from_configs(rig, protocol).core_from == str(core_file[0])
    changes = {"fit.core_from": str(core_file[0]), "fit.fixed_core": True}
    assert ServerSettings.from_configs(
        rig, load_protocol(write_variant(tmp_path, "protocols/demo.yaml", changes, "t.yaml"))
    ).fixed_core
    with pytest.raises(ClosedLoopError, match="fit.fixed_core"):
        load_protocol(write_variant(tmp_path, "protocols/demo.yaml", {"fit.fixed_core": True}, "n.yaml"))
    with pytest.raises(ClosedLoopError, match="fit.core_from"):
        load_protocol(write_variant(tmp_path, "protocols/demo.yaml", {"fit.core_from": "absent.pt"}, "a.yaml"))
