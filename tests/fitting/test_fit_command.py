"""`closedloop fit` end to end on small archives of both layouts, and its bad-input paths."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from closedloop.cli import main
from closedloop.data.loader import load_dataset
from closedloop.fitting.model_files import load_config_yaml
from closedloop.model.checkpoint import check_compatible, load_checkpoint
from closedloop.model.predict import predict


def _outputs(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fits_both_layouts_in_worker_processes(archives, tiny_config_file, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(
        [
            "fit",
            str(archives["session"]),
            str(archives["pvc8"]),
            "--out",
            str(out),
            "--config",
            str(tiny_config_file),
            "--seed",
            "4",
            "--device",
            "cpu",
            "--workers",
            "2",
            "--json",
            str(tmp_path / "run.json"),
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0
    assert "s1" in printed and "01" in printed and "all (unit-weighted)" in printed and "r_linear" in printed
    assert "r/oracle" in printed  # simulated archives carry their simulator: the truth is scored too
    assert "r/rmax rel." in printed and "r/oracle rel." in printed and "ANOVA p < 0.001" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads((tmp_path / "run.json").read_text())
    assert summary["workers"] == 2 and summary["failed"] == []

    for name, path in (("s1", archives["session"]), ("01", archives["pvc8"])):
        folder = out / name
        assert _outputs(folder) == ["fig3.png", "metrics.json", "model.pt"]
        assert (folder / "fig3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        record = json.loads((folder / "metrics.json").read_text())
        assert record["seed"] == 4 and record["device"].startswith("cpu")
        assert record["config"]["core_filters"] == [4]
        n_units = len(record["metrics"]["unit_ids"])
        assert len(record["cells"]["circular_variance"]) == n_units  # both layouts carry gratings
        assert record["split"]["held_out"] == record["metrics"]["n_images"]
        units = record["metrics"]["units"]
        assert record["metrics"]["summary"]["n_reliable"] == sum(units["reliable"])
        assert set(record["times_s"]) >= {"load", "cnn_fit", "linear_fit", "total"}
        assert len(record["metrics"]["units"]["r_oracle"]) == n_units
        assert record["metrics"]["summary"]["mean_r_oracle"] > 0.5  # the truth predicts its own data
        assert record["image_statistics"]["rms_contrast_quantiles"]["0.95"] > 0
        assert record["heldout_error_over_spread"] is None  # one network: no ensemble spread to judge

        checkpoint = load_checkpoint(folder / "model.pt", device="cpu")
        dataset = load_dataset(path)
        columns = check_compatible(checkpoint, dataset)
        held_out = checkpoint.split.held_out
        predicted = predict(checkpoint, dataset.images[held_out])
        assert predicted.shape == (len(held_out), n_units) and np.all(np.isfinite(predicted))
        # The stored metrics are those of this model on these images.
        measured = dataset.mean_rates[held_out][:, columns]
        r0 = np.corrcoef(predicted[:, 0], measured[:, 0])[0, 1]
        assert r0 == pytest.approx(record["metrics"]["units"]["r"][0], abs=1e-4)


def test_failed_session_leaves_no_complete_looking_files(archives, tiny_config_file, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(
        [
            "fit",
            str(archives["session"]),
            str(archives["few"]),
            "--out",
            str(out),
            "--config",
            str(tiny_config_file),
            "--seed",
            "1",
            "--workers",
            "1",
            "--device",
            "cpu",
        ]
    )
    captured = capsys.readouterr()
    assert status == 1
    assert "FAILED few" in captured.err and "only 8 images" in captured.err
    assert _outputs(out) == ["s1", "summary.json"]  # no few/ and no hidden staging folder
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == ["few"]
    failed = [s for s in summary["sessions"] if s["name"] == "few"][0]
    assert failed["ok"] is False and "record more images" in failed["error"]


def test_bad_config_yaml_is_one_line_error(archives, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  core_filters: [8]\n  dense_units: lots\n")
    out = tmp_path / "out"
    status = main(["fit", str(archives["session"]), "--out", str(out), "--config", str(bad)])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.count("\n") == 0 and f"{bad}:3" in err and "dense_units" in err
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_clear_error_and_writes_nothing(archives, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["fit", str(archives["session"]), "--out", str(out), "--device", "cuda"])
    err = capsys.readouterr().err
    assert status == 2 and "no CUDA GPU is available" in err
    assert not out.exists()


def test_missing_archive_and_name_clash_fail_before_any_work(archives, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["fit", str(archives["session"]), str(tmp_path / "gone.mat"), "--out", str(out)]) == 2
    assert "gone.mat: does not exist" in capsys.readouterr().err
    assert main(["fit", str(archives["session"]), str(archives["session"]), "--out", str(out)]) == 2
    assert "given twice" in capsys.readouterr().err
    assert not out.exists()


def test_search_writes_table_and_best_yaml_that_fit_accepts(archives, tiny_config_file, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(
        [
            "fit",
            str(archives["session"]),
            "--out",
            str(out),
            "--config",
            str(tiny_config_file),
            "--search",
            "2",
            "--seed",
            "5",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0 and "val_r" in printed and "best is trial" in printed
    rows = (out / "search" / "results.csv").read_text().splitlines()
    assert rows[0].startswith("trial,val_r,val_loss") and len(rows) == 3
    best = load_config_yaml(out / "search" / "best.yaml")
    assert best.max_epochs == 10  # settings outside the space come from --config
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"] == best.to_dict() and summary["search"]["seed"] == 5

    again = tmp_path / "again"
    assert (
        main(
            [
                "fit",
                str(archives["session"]),
                "--out",
                str(again),
                "--config",
                str(out / "search" / "best.yaml"),
                "--seed",
                "5",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    record = json.loads((again / "s1" / "metrics.json").read_text())
    assert record["config"]["core_filters"] == list(best.core_filters)
