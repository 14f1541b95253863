"""`closedloop synth` end to end on a tiny fitted model, and synthesis from a checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from closedloop.cli import main
from closedloop.data.dataset import Preprocessing
from closedloop.data.preprocess import preprocess
from closedloop.errors import ClosedLoopError
from closedloop.model.checkpoint import load_checkpoint
from closedloop.model.predict import predict
from closedloop.synth.library import read_library
from closedloop.synth.optimise import SynthesisSettings
from closedloop.synth.plan import synthesize_from_checkpoint


def test_cli_writes_library_figure_and_table(tiny_checkpoint, tmp_path, capsys):
    model_path, _ = tiny_checkpoint
    out = tmp_path / "out"
    status = main(
        [
            "synth",
            str(model_path.parent),
            "--units",
            "top:2",
            "--targets",
            "p20,p80,max,500hz",
            "--steps",
            "60",
            "--seed",
            "3",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--min-r",
            "-1",
            "--json",
            str(tmp_path / "s.json"),
        ]
    )
    printed = capsys.readouterr().out
    assert status == 1  # 500 Hz is out of the tiny model's reach
    assert "achieved Hz" in printed and "500hz" in printed and "NO" in printed
    library = read_library(out / "library.h5")
    checkpoint = load_checkpoint(model_path, "cpu")
    assert len(library) == 8 and (out / "fig4.png").stat().st_size > 1000
    assert library.attrs["model_version"] == checkpoint.model_version
    assert library.attrs["run_seed"] == 3
    # The display images are what the presenter shows; the model sees exactly what was optimised.
    model_view = preprocess(library.images_display, Preprocessing(**checkpoint.preprocessing))
    np.testing.assert_array_equal(model_view, library.images_model)
    columns = [int(np.flatnonzero(checkpoint.unit_ids == u)[0]) for u in library.unit_id]
    predicted = predict(checkpoint, model_view)[np.arange(len(library)), columns]
    np.testing.assert_allclose(predicted, library.achieved_hz, rtol=1e-4, atol=1e-3)
    summary = json.loads((tmp_path / "s.json").read_text())
    unreached = [row for row in summary["images"] if row["target"] == "500hz"]
    assert all(row["gap_hz"] < -100 and not row["converged"] for row in unreached)
    assert summary["not_reached"] >= 2


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--units", "1,99"], "99 are not in the model"),
        (["--targets", "p20,nanhz"], "finite"),
        (["--targets", "p20,-4hz"], "0 Hz or more"),
        (["--targets", "p150"], "between p0 and p100"),
    ],
)
def test_cli_bad_input_is_one_clear_line(tiny_checkpoint, tmp_path, capsys, arguments, message):
    model_path, _ = tiny_checkpoint
    status = main(["synth", str(model_path), "--out", str(tmp_path), "--steps", "5", *arguments])
    error = capsys.readouterr().err
    assert status == 2 and message in error and "Traceback" not in error
    assert not (tmp_path / "library.h5").exists()


def test_cli_refuses_a_negative_held_out_member_count(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", str(tmp_path / "model.pt"), "--out", str(tmp_path), "--heldout-members", "-1"])
    assert exit_info.value.code == 2 and "--heldout-members: must be 0 or more" in capsys.readouterr().err


def test_cli_refuses_a_model_file_of_the_wrong_kind(tiny_checkpoint, tmp_path, capsys):
    _, archive = tiny_checkpoint
    assert main(["synth", str(archive), "--out", str(tmp_path)]) == 2
    assert "not a fitted model" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["synth", str(tmp_path / "junk.pt"), "--out", str(tmp_path)]) == 2
    assert "not a closedloop model checkpoint" in capsys.readouterr().err


def test_percentile_targets_come_from_the_checkpoint_statistics(tiny_checkpoint):
    model_path, _ = tiny_checkpoint
    checkpoint = load_checkpoint(model_path, "cpu")
    made = synthesize_from_checkpoint(
        checkpoint,
        [int(checkpoint.unit_ids[0])],
        "p20,p65",
        min_heldout_r=None,
        settings=SynthesisSettings(steps=5),
        hold_others=True,
    )
    percentiles = checkpoint.rate_statistics.percentiles
    np.testing.assert_allclose(made.result.target_hz, [percentiles[20, 0], percentiles[65, 0]])
    assert made.result.jobs[0].hold == ()  # the only selected unit is never held against itself
    with pytest.raises(ClosedLoopError, match="not in the model"):
        synthesize_from_checkpoint(checkpoint, [12345], "p20")
