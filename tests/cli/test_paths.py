"""Paths: a path in a rig file is taken from the rig file's folder, `validate` refuses a missing
one (file, line, field), the shipped rigs work from any folder and from an installed wheel without
the repository, and output names get their extension."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from closedloop.cli import main
from closedloop.config import load_rig
from closedloop.paths import REPOSITORY_ROOT, shipped_file

SIM_RIG = (REPOSITORY_ROOT / "rigs" / "sim.yaml").read_text()


def test_a_scenario_is_found_next_to_the_rig_file_whatever_the_working_folder(tmp_path, monkeypatch):
    (tmp_path / "lab" / "scenarios").mkdir(parents=True)
    shutil.copy(REPOSITORY_ROOT / "sim" / "simple_cells.yaml", tmp_path / "lab" / "scenarios" / "mine.yaml")
    rig = tmp_path / "lab" / "rig.yaml"
    rig.write_text(SIM_RIG.replace("scenario: sim/default.yaml", "scenario: scenarios/mine.yaml"))
    monkeypatch.chdir(tmp_path)  # the rig names its scenario relative to itself, not to here
    assert Path(load_rig(rig).acquisition.scenario) == tmp_path / "lab" / "scenarios" / "mine.yaml"
    # a shipped scenario's name works from a rig anywhere
    assert Path(load_rig(shipped_file("rigs/sim.yaml")).acquisition.scenario).is_file()


def test_validate_names_the_file_line_and_field_of_a_missing_file(tmp_path, capsys):
    rig = tmp_path / "rig.yaml"
    rig.write_text(SIM_RIG.replace("scenario: sim/default.yaml", "scenario: scenarios/gone.yaml"))
    assert main(["validate", str(rig)]) == 2
    error = capsys.readouterr().err
    line = 1 + SIM_RIG.splitlines().index(next(x for x in SIM_RIG.splitlines() if "scenario: sim/default" in x))
    assert f"rig.yaml:{line}: acquisition.scenario: {tmp_path / 'scenarios' / 'gone.yaml'}: not found" in error
    assert error.count("\n") == 1


def test_validate_and_the_demo_rig_work_from_another_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "rigs/sim.yaml", "protocols/demo.yaml"]) == 0
    assert "rig 'sim'" in capsys.readouterr().out


def test_make_archive_adds_the_extension_and_refuses_the_wrong_one(tmp_path, capsys):
    out = tmp_path / "arch" / "p2"
    assert (
        main(
            [
                "sim",
                "make-archive",
                "--layout",
                "pvc8",
                "--out",
                str(out),
                "--units",
                "2",
                "--images",
                "2",
                "--repeats",
                "2",
            ]
        )
        == 0
    )
    assert (tmp_path / "arch" / "p2.mat").is_file() and not out.exists()
    captured = capsys.readouterr()
    assert "spike trains of" in captured.err and "p2.mat" in captured.out  # progress on stderr, result on stdout
    assert main(["sim", "make-archive", "--layout", "pvc8", "--out", str(tmp_path / "p3.h5")]) == 2
    assert "a pvc8 archive is a .mat file" in capsys.readouterr().err


@pytest.mark.slow
def test_an_installed_wheel_validates_and_loads_the_shipped_rigs_without_the_repository(tmp_path):
    source = tmp_path / "src"
    for name in ("closedloop", "rigs", "protocols", "sim"):
        shutil.copytree(REPOSITORY_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE"):
        shutil.copy(REPOSITORY_ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "wheel"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    installed = tmp_path / "installed"
    zipfile.ZipFile(next((tmp_path / "wheel").glob("closedloop-*.whl"))).extractall(installed)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "closedloop.cli", "validate", "rigs/sim.yaml", "protocols/demo.yaml"],
        cwd=elsewhere,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    script = (
        "import closedloop.paths as p; from closedloop.config import load_rig;"
        "r = load_rig(p.shipped_file('rigs/sim.yaml')); print(p.shipped_root(), r.acquisition.scenario)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=environment, capture_output=True, text=True, timeout=120
    )
    root, scenario = done.stdout.split()
    assert Path(root) == installed / "closedloop" / "shipped" and Path(scenario).is_file()
    assert Path(scenario).is_relative_to(installed)


@pytest.mark.slow
def test_the_demo_runs_from_another_folder_with_the_shipped_rig(tmp_path, monkeypatch, capsys):
    from tests.runner.helpers import PROTOCOL

    monkeypatch.chdir(tmp_path)  # no sim/ here: the shipped rig's scenario is found all the same
    (tmp_path / "p.yaml").write_text(PROTOCOL.format(top_k=2, iterations=1))
    assert main(["demo", "--out", "d", "--protocol", "p.yaml", "--device", "cpu"]) == 0
    assert (tmp_path / "d" / "demo.h5").is_file() and "loop finished" in capsys.readouterr().out
