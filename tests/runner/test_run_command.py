"""`closedloop run` as a user runs it: the real model server, the session file, crashes and resumes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from closedloop.cli import main
from closedloop.reports.summary import session_records as read_records
from closedloop.transport import free_tcp_ports

from .helpers import N_UNITS, PROTOCOL, RIG, SCENARIO, wait_for

CLOSEDLOOP = [sys.executable, "-m", "closedloop.cli"]
#: Presentation trials of the tiny protocol: 20 images × 2, then per iteration 2 units × 2 targets × 2.
NATURAL_TRIALS, SYNTHESIZED_TRIALS = 40, 8


def _files(tmp_path: Path, *, iterations: int = 1, tcp: bool = False, real_time: bool = False) -> tuple[Path, Path]:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO.format(n_units=N_UNITS))
    rig_text = RIG.format(scenario=scenario)
    if real_time:  # blocks take their real duration (a 300 ms trial takes 300 ms)
        rig_text = rig_text.replace("speed: 0", "speed: 1")
    if tcp:
        names = ("stimulus", "spikes", "model", "model_events", "responses", "blocks")
        ports = "\n".join(f"    {name}: {port}" for name, port in zip(names, free_tcp_ports(len(names))))
        rig_text += f"network:\n  host: 127.0.0.1\n  ports:\n{ports}\n"
    rig = tmp_path / "rig.yaml"
    rig.write_text(rig_text)
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(PROTOCOL.format(top_k=2, iterations=iterations))
    return rig, protocol


def _trials_by_kind(session: Path) -> dict[str, int]:
    records = read_records(session)
    totals: dict[str, int] = {}
    for record in records:
        totals[record.ran_as or record.kind] = totals.get(record.ran_as or record.kind, 0) + record.n_trials
    return totals


def _session_trials(session: Path) -> int:
    with h5py.File(session, "r", locking=False) as file:
        return int(file["trials"]["stimulus_id"].shape[0])


def test_run_finishes_a_protocol_with_the_real_model_server(tmp_path, capsys):
    rig, protocol = _files(tmp_path)
    session = tmp_path / "s.h5"
    status = main(
        [
            "run",
            str(protocol),
            "--rig",
            str(rig),
            "--session",
            str(session),
            "--inproc",
            "--model-out",
            str(tmp_path / "models"),
            "--json",
            str(tmp_path / "run.json"),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "model v1: held-out r" in out and "block 3 present_synthesized" in out
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["finished"] and summary["summary"]["by_state"] == {"finished": 5}
    assert _trials_by_kind(session) == {
        "natural": NATURAL_TRIALS,
        "fit": 0,
        "synthesize": 0,
        "present_synthesized": SYNTHESIZED_TRIALS,
    }
    assert _session_trials(session) == NATURAL_TRIALS + SYNTHESIZED_TRIALS
    assert summary["summary"]["model_version"] == 2 and len(list((tmp_path / "models").glob("*.pt"))) == 2


@pytest.mark.slow
def test_a_killed_run_resumes_with_nothing_lost_or_duplicated(tmp_path, capsys):
    rig, protocol = _files(tmp_path, iterations=2)
    session = tmp_path / "s.h5"
    process = subprocess.Popen(
        [*CLOSEDLOOP, "run", str(protocol), "--rig", str(rig), "--session", str(session), "--inproc"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:  # kill -9 once the first loop iteration has begun: no chance to write anything more
        assert wait_for(lambda: len(read_records(session)) >= 3, 120), "the run never got to its loop"
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        process.kill()
    committed_before = len(read_records(session))
    status = main(["run", str(protocol), "--rig", str(rig), "--resume", str(session), "--inproc"])
    assert status == 0, capsys.readouterr().out
    records = read_records(session)
    steps = [record.step for record in records if record.advances and record.step >= 0]
    assert sorted(steps) == list(range(8)) and len(set(steps)) == 8  # every protocol step exactly once
    assert len(records) >= committed_before - 1  # an uncommitted last record is the only thing dropped
    assert _trials_by_kind(session)["present_synthesized"] == 2 * SYNTHESIZED_TRIALS
    assert _session_trials(session) == sum(record.n_trials for record in records)


@pytest.mark.slow
def test_the_model_server_killed_mid_run_is_reconnected_and_gets_every_block(tmp_path):
    # Real time, so the run is still going when the server is back (each loop iteration ~2.5 s).
    rig, protocol = _files(tmp_path, iterations=5, tcp=True, real_time=True)
    session = tmp_path / "s.h5"
    serve = [*CLOSEDLOOP, "serve", "model", "--rig", str(rig), "--protocol", str(protocol)]
    server = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = subprocess.Popen(
        [
            *CLOSEDLOOP,
            "run",
            str(protocol),
            "--rig",
            str(rig),
            "--session",
            str(session),
            "--model",
            "remote",
            "--json",
            str(tmp_path / "run.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for(lambda: any(r.model_version for r in read_records(session)), 120), "no first fit"
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        # Without a server the synthesize block falls back to natural images.
        assert wait_for(
            lambda: any(r.ran_as == "natural" and r.kind == "synthesize" for r in read_records(session)), 120
        ), "no fallback"
        server = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out, _ = run.communicate(timeout=240)
        assert any(
            r.kind == "synthesize" and r.state == "finished" and r.iteration > 1 for r in read_records(session)
        ), f"no synthesis after the server came back:\n{out}"
    finally:
        for process in (run, server):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM if process is server else signal.SIGKILL)
                process.wait(10)
    assert run.returncode == 0, out
    records = read_records(session)
    final = max(records, key=lambda r: r.model_version)
    # The restarted server got every recorded block again: its last fit saw every trial.
    assert final.metrics["n_trials"] == sum(r.n_trials for r in records)
    assert json.loads((tmp_path / "run.json").read_text())["finished"]


def test_bad_arguments_are_one_clear_line(tmp_path, capsys, monkeypatch):
    rig, protocol = _files(tmp_path)
    cases = [
        (["--resume", str(tmp_path / "missing.h5")], "no such session file"),
        (["--units", "1-x"], "--units: '1-x'"),
        (["--presenter", "psychopy"], "no display"),
    ]
    monkeypatch.delenv("DISPLAY", raising=False)
    for extra, message in cases:
        assert main(["run", str(protocol), "--rig", str(rig), "--inproc", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("*.h5"))


@pytest.mark.slow
def test_every_component_as_its_own_process(tmp_path):
    # closedloop serve acquisition | presenter | model | runner, talking over the rig's TCP ports.
    rig, protocol = _files(tmp_path, tcp=True)
    session = tmp_path / "s.h5"
    serving = [
        subprocess.Popen(
            [*CLOSEDLOOP, "serve", component, "--rig", str(rig), "--protocol", str(protocol), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for component, extra in (("acquisition", []), ("presenter", ["--presenter", "headless"]), ("model", []))
    ]
    try:
        runner = subprocess.run(
            [*CLOSEDLOOP, "serve", "runner", "--rig", str(rig), "--protocol", str(protocol), "--session", str(session)],
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        for process in serving:
            process.send_signal(signal.SIGTERM)
        for process in serving:
            process.wait(20)
    assert runner.returncode == 0, runner.stdout + runner.stderr
    assert "model v2" in runner.stdout
    assert [process.returncode for process in serving] == [0, 0, 0]
    assert _trials_by_kind(session)["present_synthesized"] == SYNTHESIZED_TRIALS


def test_a_real_rig_whose_recording_system_is_silent_shows_nothing(tmp_path, capsys):
    # An Open Ephys rig with no GUI acquiring: the run stops before the first block, saying why.
    _, protocol = _files(tmp_path)
    rig_text = (Path(__file__).parents[2] / "rigs" / "example_openephys.yaml").read_text()
    rig = tmp_path / "openephys_rig.yaml"
    rig.write_text(rig_text.replace("tcp://127.0.0.1:5557", f"tcp://127.0.0.1:{free_tcp_ports(1)[0]}"))
    session = tmp_path / "s.h5"
    status = main(
        [
            "run",
            str(protocol),
            "--rig",
            str(rig),
            "--session",
            str(session),
            "--inproc",
            "--presenter",
            "headless",
            "--units",
            "1-4",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and "no spike or photodiode edge from acquisition" in err and "press play" in err
    assert not session.exists() and "--resume" not in err  # no empty session file to resume
