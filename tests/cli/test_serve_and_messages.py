"""`closedloop serve` options (--device, --json, which components need --protocol) and message wording."""

from __future__ import annotations

import json

import pytest

from closedloop.cli import build_parser, main
from closedloop.config import load_rig
from closedloop.errors import ClosedLoopError
from closedloop.paths import shipped_file
from closedloop.wording import counted

SIM_RIG = str(shipped_file("rigs/sim.yaml"))
DEMO = str(shipped_file("protocols/demo.yaml"))


def test_the_help_says_which_components_need_a_protocol_and_the_presenter_refuses_without_one(capsys):
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    assert "required by model (its fit section), presenter (its timing)" in " ".join(serve.format_help().split())
    assert main(["serve", "presenter", "--rig", SIM_RIG]) == 2
    assert "'serve presenter' needs --protocol" in capsys.readouterr().err


def test_serve_model_takes_a_device_and_writes_json(tmp_path, capsys):
    assert main(["serve", "model", "--rig", SIM_RIG, "--protocol", DEMO, "--device", "gpu0"]) == 2
    assert "--device gpu0" in capsys.readouterr().err
    assert main(["serve", "acquisition", "--rig", SIM_RIG, "--device", "cpu"]) == 2
    out = tmp_path / "model.json"
    assert (
        main(
            [
                "serve",
                "model",
                "--rig",
                SIM_RIG,
                "--protocol",
                DEMO,
                "--device",
                "cpu",
                "--timeout",
                "0.5",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads(out.read_text())
    assert (summary["component"], summary["device"], summary["reason"], summary["ok"]) == (
        "model",
        "cpu",
        "timeout",
        True,
    )


def test_no_display_is_said_once(monkeypatch):
    from closedloop.commands.run import check_display

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    with pytest.raises(ClosedLoopError) as caught:
        check_display("psychopy", load_rig(SIM_RIG))
    assert str(caught.value).count("no display") == 1 and "--presenter headless" in str(caught.value)


def test_counts_are_singular_or_plural():
    assert (counted(1, "thread"), counted(4, "thread"), counted(0, "loop iteration")) == (
        "1 thread",
        "4 threads",
        "0 loop iterations",
    )
