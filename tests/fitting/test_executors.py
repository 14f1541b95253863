"""`fit --executor ray`: the same numbers as local processes; clear errors when Ray is not there."""

from __future__ import annotations

import csv
import json
import socket
import sys

import pytest
import torch

from closedloop.cli import main


def _run(archives, out, config, space, *extra):
    return main(
        [
            "fit",
            str(archives["session"]),
            str(archives["pvc8"]),
            "--out",
            str(out),
            "--config",
            str(config),
            "--seed",
            "4",
            "--device",
            "cpu",
            "--search",
            "4",
            "--space",
            str(space),
            "--no-progress",
            *extra,
        ]
    )


def _trial_rows(out):
    with open(out / "search" / "results.csv", newline="") as handle:
        return [{key: value for key, value in row.items() if key != "seconds"} for row in csv.DictReader(handle)]


def test_ray_fits_and_searches_exactly_as_local_processes(
    archives, tiny_config_file, tiny_space_file, ray_cluster, tmp_path, capsys
):
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert _run(archives, local, tiny_config_file, tiny_space_file, "--workers", "2") == 0
    assert _run(archives, on_ray, tiny_config_file, tiny_space_file, "--executor", "ray", "--address", ray_cluster) == 0
    captured = capsys.readouterr()
    assert "4 at a time on ray" in captured.out or "2 at a time on ray" in captured.out
    rows = _trial_rows(local)
    assert len(rows) == 4 and rows == _trial_rows(on_ray)  # same trials, same scores, same ranking
    for name in ("s1", "01"):
        a = json.loads((local / name / "metrics.json").read_text())
        b = json.loads((on_ray / name / "metrics.json").read_text())
        assert a["metrics"] == b["metrics"] and a["config"] == b["config"] and a["seed"] == b["seed"] == 4
        state_a = torch.load(local / name / "model.pt", weights_only=False)["state_dict"]
        state_b = torch.load(on_ray / name / "model.pt", weights_only=False)["state_dict"]
        assert all(torch.equal(state_a[key], state_b[key]) for key in state_a)
    summary = json.loads((on_ray / "summary.json").read_text())
    assert summary["search"]["executor"] == "ray" and not summary["failed"]
    for trial in range(1, 5):  # every trial's checkpoint and record
        folder = on_ray / "search" / "trials" / f"{trial:04d}"
        assert (folder / "trial.json").exists() and (folder / "model.pt").exists()


def test_without_ray_installed_one_line_and_exit_2_and_local_still_works(
    archives, tiny_config_file, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    status = main(
        [
            "fit",
            str(archives["session"]),
            "--out",
            str(tmp_path / "r"),
            "--config",
            str(tiny_config_file),
            "--executor",
            "ray",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "needs Ray, which is not installed: pip install" in err[0]
    assert not (tmp_path / "r").exists()
    assert (
        main(
            [
                "fit",
                str(archives["session"]),
                "--out",
                str(tmp_path / "l"),
                "--config",
                str(tiny_config_file),
                "--device",
                "cpu",
                "--seed",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )


def test_unreachable_cluster_is_one_line_and_exit_2(archives, tiny_config_file, tmp_path, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    status = main(
        [
            "fit",
            str(archives["session"]),
            "--out",
            str(tmp_path / "r"),
            "--config",
            str(tiny_config_file),
            "--executor",
            "ray",
            "--address",
            f"127.0.0.1:{port}",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert f"no Ray cluster reachable at 127.0.0.1:{port}" in err[0] and "ray start --head" in err[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--address", "auto"], "--address only makes sense with --executor ray"),
        (["--sampler", "tpe"], "--sampler only makes sense with --search N"),
        (["--executor", "ray", "--address", "nohost"], "expected HOST:PORT"),
    ],
)
def test_option_mistakes_are_one_line(archives, tmp_path, capsys, argv, message):
    assert main(["fit", str(archives["session"]), "--out", str(tmp_path / "o"), *argv]) == 2
    assert message in capsys.readouterr().err
