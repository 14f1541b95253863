"""A linear 'model' with known filters and a tiny fitted checkpoint of a simulated session."""

from __future__ import annotations

import pytest
import torch

from closedloop.model.linear import LinearPixelModel
from _synth_models import TINY_CONFIG, linear_filters


@pytest.fixture(scope="session")
def linear_model():
    """rate_u = bias_u + w_u · pixels with the `linear_filters` (×2 Hz per unit of pixel)."""
    filters = linear_filters()
    model = LinearPixelModel(33 * 33, 2)
    with torch.no_grad():
        model.weight[0] = torch.as_tensor(2.0 * filters.reshape(2, -1).T, dtype=torch.float32)
        model.bias[0] = torch.tensor([10.0, 10.0])
    return model.eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A 2-member tiny CNN fitted to a 6-unit simulated session; returns (model.pt, archive)."""
    from closedloop.fitting.session import FitSettings, fit_session
    from closedloop.model.model_config import ModelConfig
    from closedloop.sim.archive import ArchiveSpec, make_archive

    folder = tmp_path_factory.mktemp("synth-fit")
    archive = folder / "s.h5"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        make_archive(archive, ArchiveSpec(layout="session", seed=1, n_units=6, n_images=40, n_repeats=4))
        config = ModelConfig.from_dict(dict(TINY_CONFIG))
        fit_session(archive, folder / "fit", "s", FitSettings(config=config, device="cpu", seed=0))
    finally:
        torch.set_num_threads(threads)
    return folder / "fit" / "s" / "model.pt", archive


@pytest.fixture(autouse=True)
def one_thread():
    """Synthesis here works on tiny tensors, where extra threads only add overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
