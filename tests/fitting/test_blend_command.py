"""A model blending two ensembles (`partner` in a model YAML), fitted and synthesized from through the command line."""

from __future__ import annotations

import json

import numpy as np

from closedloop.cli import main
from closedloop.data.dataset import Preprocessing
from closedloop.data.preprocess import preprocess
from closedloop.model.blend import BlendedNetwork
from closedloop.model.checkpoint import load_checkpoint
from closedloop.model.predict import predict
from closedloop.sim.archive import ArchiveSpec, make_archive
from closedloop.synth.library import read_library

TINY_BLEND = """\
model:
  architecture: factorised
  core_filters: [4, 4]
  core_kernels: [5, 5]
  pool_layers: [1]
  batch_norm: true
  gabor_bank: true
  padding: same
  pool_stride: 3
  output_knots: 4
  output_tail: flat
  stop_sets: rotating
  stop_metric: correlation
  max_epochs: 8
  patience: 4
  stop_check_every: 2
  ensemble_size: 3
  partner: {padding: valid, pool_stride: 2}
"""


def test_fit_then_synthesize_from_a_blended_model(tmp_path, capsys):
    archive = tmp_path / "s.h5"
    make_archive(archive, ArchiveSpec(seed=1, n_units=5, n_images=60, n_repeats=3))
    config = tmp_path / "blend.yaml"
    config.write_text(TINY_BLEND)
    fitted = tmp_path / "fits"
    common = ["--device", "cpu", "--seed", "3"]
    assert main(["fit", str(archive), "--out", str(fitted), "--config", str(config), "--workers", "1", *common]) == 0
    checkpoint = load_checkpoint(fitted / "s" / "model.pt", "cpu")
    assert isinstance(checkpoint.model, BlendedNetwork) and checkpoint.model.n_members == 3
    assert dict(checkpoint.config.partner or ()) == {"padding": "valid", "pool_stride": 2}
    metrics = json.loads((fitted / "s" / "metrics.json").read_text())
    assert len(metrics["metrics"]["units"]["r"]) == checkpoint.model.n_units

    out = tmp_path / "synth"
    arguments = ["synth", str(fitted / "s" / "model.pt"), "--out", str(out), "--units", "top:2"]
    steps = ["--targets", "p50,max", "--steps", "20", "--min-r", "-1", "--heldout-members", "0"]
    status = main([*arguments, *steps, *common])
    assert status in (0, 1), capsys.readouterr().err
    library = read_library(out / "library.h5")
    assert len(library) == 4 and library.attrs["model_version"] == checkpoint.model_version
    # What synthesis reports is the blend's prediction of the images it made.
    model_view = preprocess(library.images_display, Preprocessing(**checkpoint.preprocessing))
    columns = [int(np.flatnonzero(checkpoint.unit_ids == u)[0]) for u in library.unit_id]
    predicted = predict(checkpoint, model_view)[np.arange(len(library)), columns]
    np.testing.assert_allclose(predicted, library.achieved_hz, rtol=1e-4, atol=1e-3)
