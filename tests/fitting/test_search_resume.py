"""A search writes each trial as it finishes, resumes after a kill, reads its space from YAML, prunes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from closedloop.cli import main
from closedloop.data.loader import load_dataset
from closedloop.errors import ConfigError
from closedloop.fitting.search import PruningPlan, fit_images_only, run_trial
from closedloop.fitting.search_space import load_search_space
from closedloop.model.checkpoint import load_checkpoint
from closedloop.model.model_config import ModelConfig


def _search_argv(archives, out, config, space, n_trials):
    return [
        "fit",
        str(archives["session"]),
        "--out",
        str(out),
        "--config",
        str(config),
        "--search",
        str(n_trials),
        "--space",
        str(space),
        "--seed",
        "7",
        "--workers",
        "1",
        "--device",
        "cpu",
    ]


def _finished(out):
    return sorted(p.parent.name for p in (out / "search" / "trials").glob("*/trial.json"))


def test_killed_search_keeps_finished_trials_and_resumes_with_the_rest(
    archives, tiny_config_file, tiny_space_file, tmp_path, capsys
):
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "closedloop.cli", *_search_argv(archives, out, tiny_config_file, tiny_space_file, 3)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not _finished(out) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # as a scheduler's time limit or a power cut would
    process.wait()
    kept = _finished(out)
    assert kept and len(kept) < 3, process.stderr.read().decode()[-2000:]
    record = json.loads((out / "search" / "trials" / kept[0] / "trial.json").read_text())
    assert record["status"] == "ok" and np.isfinite(record["val_r"])
    assert load_checkpoint(out / "search" / "trials" / kept[0] / "model.pt", device="cpu").config.core_filters
    # (results.csv and best.yaml follow each trial; the kill may fall between, and the resume rewrites them.)
    stamps = {name: (out / "search" / "trials" / name / "trial.json").stat().st_mtime_ns for name in kept}

    argv = _search_argv(archives, out, tiny_config_file, tiny_space_file, 3)
    argv.remove("--seed"), argv.remove("7")  # the seed comes from the search's own record
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"{len(kept)} of 3 trials already finished, {3 - len(kept)} to run" in err
    ran = [line.split()[1] for line in err.splitlines() if line.startswith("  trial ")]
    assert sorted(ran) == sorted(f"{int(name)}/3" for name in ["0001", "0002", "0003"] if name not in kept)
    assert _finished(out) == ["0001", "0002", "0003"]
    assert all((out / "search" / "trials" / n / "trial.json").stat().st_mtime_ns == stamps[n] for n in kept)
    assert len((out / "search" / "results.csv").read_text().splitlines()) == 4
    assert (out / "search" / "best.yaml").exists()
    assert json.loads((out / "summary.json").read_text())["search"]["seed"] == 7


def test_resuming_with_other_settings_is_refused(archives, tiny_config_file, tiny_space_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_search_argv(archives, out, tiny_config_file, tiny_space_file, 1) + ["--no-progress"]) == 0
    argv = _search_argv(archives, out, tiny_config_file, tiny_space_file, 2)
    argv[argv.index("7")] = "8"
    assert main(argv) == 2
    assert "holds a search with other settings (seed differ" in capsys.readouterr().err


def test_space_yaml_is_checked_with_file_line_and_key(tmp_path, archives, capsys):
    bad = tmp_path / "space.yaml"
    bad.write_text("layers: [1, 2]\nlearning_rate: [0.01, 0.001]\n")
    with pytest.raises(ConfigError, match=r"space.yaml:2: learning_rate: must be \[low, high\]"):
        load_search_space(bad)
    bad.write_text("layers: [1, 2]\nfliters: [4]\n")
    assert (
        main(["fit", str(archives["session"]), "--out", str(tmp_path / "o"), "--search", "2", "--space", str(bad)]) == 2
    )
    err = capsys.readouterr().err
    assert "space.yaml:2: fliters" in err and "filters" in err and not (tmp_path / "o").exists()
    good = tmp_path / "good.yaml"
    good.write_text("pooling: [[2, 2]]\ndropout_keep: [0.5, 0.5]\n")
    space = load_search_space(good)
    assert space.pooling == ((2, 2),) and space.dropout_keep == (0.5, 0.5) and space.layers == (1, 2, 3)


@pytest.mark.parametrize("pruner", ["median", "asha"])
def test_pruner_stops_a_trial_that_is_behind_the_finished_ones(archives, pruner):
    tuning = fit_images_only(load_dataset(archives["session"]), seed=3)
    config = ModelConfig(
        core_filters=(4,), core_kernels=(5,), dense_units=8, max_epochs=20, patience=20, stop_check_every=5
    )
    # Three finished trials that reached a stopping loss no real fit gets near at epoch 5.
    plan = PruningPlan(pruner, curves=({5: 1e-6, 10: 1e-6},) * 3)
    trial, fitted = run_trial(tuning, 1, config, 3, "cpu", pruning=plan)
    assert trial.status == "pruned" and fitted is None and trial.epochs == 5 and list(trial.curve) == [5]
    # Finished trials that did worse: it runs to its end.
    trial, fitted = run_trial(tuning, 2, config, 3, "cpu", pruning=PruningPlan(pruner, ({5: 1e6, 10: 1e6},) * 3))
    assert trial.status == "ok" and fitted is not None and trial.epochs == 20 and np.isfinite(trial.val_r)


def test_tpe_search_with_pruner_runs_and_ranks(archives, tiny_config_file, tiny_space_file, tmp_path, capsys):
    out = tmp_path / "out"
    argv = _search_argv(archives, out, tiny_config_file, tiny_space_file, 4) + ["--sampler", "tpe", "--pruner", "asha"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())["search"]
    assert summary["sampler"] == "tpe" and summary["finished"] + summary["pruned"] + summary["failed"] == 4
    assert summary["finished"] >= 1
    records = [json.loads(p.read_text()) for p in sorted((out / "search" / "trials").glob("*/trial.json"))]
    assert [r["index"] for r in records] == [1, 2, 3, 4] and all(r["params"]["layers"] in (1, 2) for r in records)


def test_progress_lines_when_not_on_a_terminal(archives, tiny_config_file, tmp_path, capsys, monkeypatch):
    from closedloop.fitting import batch

    monkeypatch.setattr(batch, "LOG_EVERY_S", 0.0)
    assert (
        main(
            [
                "fit",
                str(archives["session"]),
                "--out",
                str(tmp_path / "o"),
                "--config",
                str(tiny_config_file),
                "--device",
                "cpu",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fit s1: ")]
    assert any("CNN epoch 5 (stop loss" in line for line in lines) and "done, mean r" in lines[-1]
