"""`closedloop replay`: the summary, --json and --out; bad input is one clear line and exit 2."""

from __future__ import annotations

import json

import pytest

from closedloop.cli import main
from closedloop.sim.archive import ArchiveSpec, make_archive

from .conftest import LINEAR_FIT, write_protocol


def test_replay_command_prints_blocks_and_the_comparison_and_writes_json(archives, tmp_path, capsys):
    protocol = write_protocol(tmp_path, fit=LINEAR_FIT)
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    code = main(
        [
            "replay",
            str(archives["session"]),
            "--protocol",
            str(protocol),
            "--device",
            "cpu",
            "--blocks",
            "4",
            "--fit-every",
            "2",
            "--out",
            str(out),
            "--json",
            str(summary),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "replaying" in printed and "4 block(s), 160 trials" in printed
    assert "final online model v3 vs offline batch fit" in printed
    assert "identical to load_dataset's (bit for bit)" in printed
    data = json.loads(summary.read_text())
    assert data["format"] == "closedloop-replay" and data["layout"] == "session"
    # block 0 fits at once (first fit), then every 2nd block; the last block's data get a final refit
    assert [b["version"] for b in data["blocks"]] == [1, 0, 2, 0, 3]
    assert [b["state"] for b in data["blocks"]] == ["fitted", "added", "fitted", "added", "fitted"]
    assert data["blocks"][4]["label"] == "final refit on all data"
    assert data["final"]["version"] == 3 and data["inputs"]["ok"] is True
    assert data["comparison"]["online"]["r_mean"] == pytest.approx(data["comparison"]["offline"]["r_mean"], abs=1e-6)
    assert json.loads((out / "replay.json").read_text())["blocks"] == data["blocks"]
    assert (out / "replay.png").stat().st_size > 10_000


def _fails_with(argv, capsys, *words):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("closedloop replay: error:"), err
    for word in words:
        assert word in err[0]


def test_bad_inputs_are_one_clear_line(archives, tmp_path, capsys):
    protocol = str(write_protocol(tmp_path, fit=LINEAR_FIT))
    _fails_with(["replay", str(tmp_path / "none.h5"), "--protocol", protocol], capsys, "does not exist")
    text = tmp_path / "notes.txt"
    text.write_text("not a recording\n")
    _fails_with(["replay", str(text), "--protocol", protocol], capsys, "neither a closedloop session")
    late = str(write_protocol(tmp_path, fit=LINEAR_FIT, window_ms=(50, 120), name="late.yaml"))
    _fails_with(
        ["replay", str(archives["pvc8"]), "--protocol", late, "--units", "all"],
        capsys,
        "response.window_ms",
        "pvc-8 records 106 ms",
    )
    _fails_with(
        [
            "replay",
            str(archives["session"]),
            "--protocol",
            str(write_protocol(tmp_path, fit=LINEAR_FIT, window_ms=(50, 400), blank_ms=400, name="long.yaml")),
        ],
        capsys,
        "start every 300 ms",
    )
    big_crop = LINEAR_FIT + "  preprocessing: {downsample: 2, crop: 40}\n"
    _fails_with(
        [
            "replay",
            str(archives["session"]),
            "--protocol",
            str(write_protocol(tmp_path, fit=big_crop, name="crop.yaml")),
        ],
        capsys,
        "fit.preprocessing",
        "needs 80-px images",
    )
    no_fit = str(write_protocol(tmp_path, fit="", name="nofit.yaml"))
    _fails_with(["replay", str(archives["session"]), "--protocol", no_fit], capsys, "needs a 'fit:' section")


def test_too_few_images_says_how_many_blocks_are_needed(tmp_path, capsys):
    path = tmp_path / "few.h5"
    make_archive(path, ArchiveSpec(layout="session", seed=1, n_units=3, n_images=8, n_repeats=2))
    protocol = str(write_protocol(tmp_path, fit=LINEAR_FIT))
    _fails_with(["replay", str(path), "--protocol", protocol], capsys, "only 8 image(s)", "at least 10")
