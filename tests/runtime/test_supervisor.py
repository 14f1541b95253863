"""The supervisor: start order, heartbeats, failures, ordered shutdown, threads and processes."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import pytest
from runtime_test_components import Crasher, Recorder, Stuck

from closedloop.runtime import Component, Supervisor


def lines(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1]


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_runs_until_timeout_with_heartbeats_and_stops_in_reverse_order(mode: str, tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    components = [Recorder(n, str(log)) for n in ("acquisition", "runner", "monitor")]
    report = Supervisor(components, mode=mode).run(timeout_s=0.6)
    assert report.reason == "timeout" and report.ok
    assert report.start_order == ["acquisition", "runner", "monitor"]
    assert report.finish_order == ["monitor", "runner", "acquisition"]
    assert lines(log) == [
        "setup acquisition",
        "setup runner",
        "setup monitor",
        "teardown monitor",
        "teardown runner",
        "teardown acquisition",
    ]
    for state in report.components.values():
        assert state.state == "stopped" and state.heartbeats >= 2 and state.steps > 5


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_failure_in_step_is_logged_with_name_and_stops_the_rest_in_order(
    mode: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "log.txt"
    # the last one fails (so all three are surely running when it does)
    components = [
        Recorder("acquisition", str(log)),
        Recorder("runner", str(log)),
        Recorder("monitor", str(log), fail_after=5),
    ]
    with caplog.at_level(logging.ERROR):
        report = Supervisor(components, mode=mode).run(timeout_s=30)
    assert report.reason == "failed" and not report.ok
    assert report.components["monitor"].state == "failed"
    assert "ValueError: bad spike batch in monitor" in report.components["monitor"].errors[0]
    assert "component 'monitor' failed in step" in caplog.text and "Traceback" in caplog.text
    # the failed one tears itself down first, then the others in reverse start order
    assert lines(log)[3:] == ["teardown monitor", "teardown runner", "teardown acquisition"]
    assert report.components["runner"].state == report.components["acquisition"].state == "stopped"


def test_setup_failure_stops_the_components_already_started(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "log.txt"
    components = [Recorder("a", str(log)), Recorder("b", str(log), fail_in="setup"), Recorder("c", str(log))]
    with caplog.at_level(logging.ERROR):
        report = Supervisor(components).run(timeout_s=30)
    assert report.reason == "setup_failed"
    assert report.components["c"].state == "pending"
    assert lines(log) == ["setup a", "setup b", "teardown b", "teardown a"]
    assert "component 'b' failed in setup" in caplog.text


def test_failure_in_the_middle_stops_both_neighbours(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    # b's slow teardown: its neighbours must still wait for it, not race it
    failing = Recorder("b", str(log), fail_after=20, teardown_s=0.3)
    components = [Recorder("a", str(log)), failing, Recorder("c", str(log))]
    report = Supervisor(components).run(timeout_s=30)
    assert report.reason == "failed"
    assert lines(log)[3:] == ["teardown b", "teardown c", "teardown a"]


def test_all_done_ends_the_run(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    report = Supervisor([Recorder("a", str(log), done_after=3), Recorder("b", str(log), done_after=6)]).run(
        timeout_s=30
    )
    assert report.reason == "all_done" and report.ok
    assert [s.state for s in report.components.values()] == ["done", "done"]
    assert report.components["b"].steps == 6


def test_process_that_dies_silently_is_a_failure(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "log.txt"
    with caplog.at_level(logging.ERROR):
        report = Supervisor([Recorder("a", str(log)), Crasher("crasher")], mode="process").run(timeout_s=30)
    assert report.reason == "failed"
    assert "exited with code 3" in report.components["crasher"].errors[0]
    assert lines(log) == ["setup a", "teardown a"]


def test_blocked_step_is_reported_stale(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        report = Supervisor([Stuck("slow", block_s=1.5)], heartbeat_timeout_s=0.3).run(timeout_s=10)
    assert report.reason == "all_done"
    assert "component 'slow': no heartbeat" in caplog.text


def test_sigterm_shuts_down_in_order(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    previous = signal.getsignal(signal.SIGTERM)
    report = Supervisor([Recorder("a", str(log)), Recorder("b", str(log))]).run(timeout_s=20)
    timer.join()
    assert report.reason == "signal"
    assert lines(log)[2:] == ["teardown b", "teardown a"]
    assert signal.getsignal(signal.SIGTERM) is previous


def test_component_and_supervisor_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        Component("")
    with pytest.raises(ValueError):
        Component("x", heartbeat_interval_s=0)
    with pytest.raises(ValueError):
        Supervisor([Component("x"), Component("x")])
    with pytest.raises(ValueError):
        Supervisor([Component("x")], mode="fiber")  # type: ignore[arg-type]
