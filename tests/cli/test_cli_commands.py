"""The command line as a user types it: exit codes, summaries, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from closedloop.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_validate_shipped_rig_and_protocol(capsys, tmp_path):
    summary_json = tmp_path / "summary.json"
    status = main(
        [
            "validate",
            str(ROOT / "rigs/example_openephys.yaml"),
            str(ROOT / "protocols/kindel2017.yaml"),
            "--json",
            str(summary_json),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "120 Hz" in out and "12 frames" in out and "6680 trials" in out
    assert json.loads(summary_json.read_text())["valid"] is True


def test_validate_bad_file_is_one_line_with_file_and_line(capsys):
    status = main(["validate", str(ROOT / "tests/configs/bad_tabs.yaml")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert "bad_tabs.yaml:9:" in err and "tab" in err
    assert "Traceback" not in err


def test_missing_file_is_a_clear_error(capsys, tmp_path):
    status = main(["validate", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err
    assert status == 2 and "nope.yaml" in err


@pytest.mark.parametrize(
    "arguments, fragment",
    [
        (["--units", "0"], "must be at least 1"),
        (["--repeats", "many"], "expected a whole number"),
        (["--layout", "nwb"], "invalid choice"),
        (["--image-seed", "-1"], "must be 0 or more"),
        (["--image-seed", "1.5"], "expected a whole number"),
    ],
)
def test_make_archive_rejects_bad_arguments(arguments, fragment, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["sim", "make-archive", "--out", str(tmp_path / "x.h5"), *arguments])
    assert exit_info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_make_archive_refuses_to_overwrite(capsys, tmp_path):
    out = tmp_path / "s.h5"
    out.write_bytes(b"precious")
    status = main(["sim", "make-archive", "--out", str(out), "--units", "3", "--images", "4", "--repeats", "2"])
    assert status == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"


def test_console_script_runs_from_another_directory(tmp_path):
    """The installed `closedloop` command finds the shipped scenario from any working directory."""
    script = Path(sys.executable).with_name("closedloop")
    out = tmp_path / "tiny.h5"
    result = subprocess.run(
        [
            str(script),
            "sim",
            "make-archive",
            "--out",
            str(out),
            "--units",
            "4",
            "--images",
            "6",
            "--repeats",
            "2",
            "--json",
            str(tmp_path / "s.json"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and out.exists()
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["n_units"] == 4 and summary["n_trials"] == (6 + 64) * 2
