"""`closedloop monitor` from the command line, offscreen with --screenshot."""

from __future__ import annotations

import json
import re

import pytest

from closedloop.cli import main
from closedloop.monitor.synthetic import SyntheticPublisher, SyntheticSession
from closedloop.paths import shipped_file
from closedloop.sim.archive import ArchiveSpec, make_archive
from closedloop.transport import free_tcp_ports

pytest.importorskip("pyqtgraph")


def png_ok(path) -> bool:
    return path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_a_session_file(tmp_path, capsys):
    archive = tmp_path / "sim.h5"
    make_archive(archive, ArchiveSpec(layout="session", seed=1, n_units=6, n_images=4, n_repeats=2))
    out, summary = tmp_path / "shot.png", tmp_path / "summary.json"
    assert (
        main(
            [
                "monitor",
                str(archive),
                "--unit",
                "2",
                "--screenshot",
                str(out),
                "--duration",
                "1.5",
                "--json",
                str(summary),
            ]
        )
        == 0
    )
    assert png_ok(out)
    result = json.loads(summary.read_text())
    assert result["trials"] == 4 * 2 + 64 * 2 and result["units"] == 6
    assert "session file:" in capsys.readouterr().out


def test_live_streams_from_a_rig_file(tmp_path):
    names = ("stimulus", "spikes", "model", "model_events", "responses", "blocks")
    ports = dict(zip(names, free_tcp_ports(len(names))))
    text = shipped_file("rigs/sim.yaml").read_text()
    for name, port in ports.items():
        text = re.sub(rf"(\n    {name}: )\d+", rf"\g<1>{port}", text)
    rig = tmp_path / "rig.yaml"
    rig.write_text(text)
    session = SyntheticSession(n_units=8, n_images=6, repeats=2, iterations=1, synth_units=1, seed=4, n_candidates=20)
    endpoints = {name: f"tcp://127.0.0.1:{ports[name]}" for name in ("responses", "model_events", "stimulus", "spikes")}
    publisher = SyntheticPublisher(endpoints, session, trials_per_s=100).start(delay_s=1.0)
    out, summary = tmp_path / "live.png", tmp_path / "live.json"
    try:
        assert (
            main(["monitor", "--rig", str(rig), "--screenshot", str(out), "--duration", "3", "--json", str(summary)])
            == 0
        )
    finally:
        publisher.stop()
    result = json.loads(summary.read_text())
    assert png_ok(out)
    assert result["streams"]["responses"]["messages"] > 0 and result["streams"]["spikes"]["messages"] > 0
    assert result["trials"] > 0 and result["model_version"] >= 1


@pytest.mark.parametrize(
    "argv, wording",
    [
        (["--connect", "rig-pc:5600"], "host only"),
        (["--connect", "tcp://"], "host name"),
        (["missing.h5"], "does not exist"),
        (["x.h5", "--demo"], "not both"),
        (["--demo", "--screenshot", "out.jpg"], "must end in .png"),
    ],
)
def test_bad_arguments_are_one_clear_line(argv, wording, capsys):
    assert main(["monitor", *argv]) == 2
    assert wording in capsys.readouterr().err
