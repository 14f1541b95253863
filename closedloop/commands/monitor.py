"""Live view of a session: predicted vs measured rates, raster/PSTH, the image on screen,
the model and the loop, from the running components' streams (read-only) or a session file.

  closedloop monitor                       # this machine, the rig's default ports
  closedloop monitor --rig rigs/example_openephys.yaml   # endpoints from a rig file
  closedloop monitor --connect HOST        # default ports on another machine
  closedloop monitor SESSION.h5            # a finished session, or one still being written
  closedloop monitor --demo                # a simulated closed-loop session, on this machine

--screenshot OUT.png renders the window offscreen after --duration seconds and exits.
"""

# Work modules are imported inside run() and its helpers: cli.py imports every command module to
# build its parser, so each must load fast.
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from closedloop.commands.common import add_json_option, non_negative_int, write_json
from closedloop.config import load_rig
from closedloop.config.rig import PHOTODIODE_LINE
from closedloop.errors import ClosedLoopError
from closedloop.paths import shipped_file

DEFAULT_SCREENSHOT_WAIT_S = 3.0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the examples' lines
    parser.add_argument(
        "session",
        type=Path,
        nargs="?",
        metavar="SESSION.h5",
        help="show a session file (finished or still being written) instead of live streams",
    )
    parser.add_argument(
        "--models",
        type=Path,
        metavar="DIR",
        help="with a session file: its saved model versions, to show predictions (default: models/ next to the file)",
    )
    parser.add_argument("--rig", type=Path, metavar="RIG.yaml", help="take the stream endpoints from this rig file")
    parser.add_argument(
        "--connect",
        metavar="HOST",
        help="the machine the loop runs on (HOST or tcp://HOST; ports from --rig or the defaults)",
    )
    parser.add_argument("--demo", action="store_true", help="watch a simulated closed-loop session (no rig needed)")
    parser.add_argument("--unit", type=int, metavar="ID", help="unit to show first (default: the first one seen)")
    parser.add_argument(
        "--photodiode-line",
        type=non_negative_int,
        metavar="N",
        help="sync line of the photodiode (default: the rig's, else 1)",
    )
    parser.add_argument(
        "--screenshot",
        type=Path,
        metavar="OUT.png",
        help="render the window offscreen to OUT.png after --duration seconds, then exit",
    )
    parser.add_argument("--duration", type=_seconds, metavar="S", help="close after S seconds")
    add_json_option(parser)


def _host(text: str) -> str:
    host = text[len("tcp://") :] if text.startswith("tcp://") else text
    if not host or "://" in host or "/" in host or any(c.isspace() for c in host):
        raise ClosedLoopError(f"--connect {text!r}: give a host name or IP address, e.g. 192.168.1.20 or tcp://rig-pc")
    if ":" in host:
        raise ClosedLoopError(
            f"--connect {text!r}: give the host only; the monitor listens on four ports, "
            "taken from --rig RIG.yaml (network.ports) or the defaults"
        )
    return host


def _check_arguments(args: argparse.Namespace) -> None:
    if args.session is not None and (args.rig or args.connect or args.demo):
        raise ClosedLoopError("give either a session file or --rig/--connect/--demo, not both")
    if args.demo and (args.rig or args.connect):
        raise ClosedLoopError("--demo publishes its own simulated session; leave out --rig and --connect")
    if args.screenshot is not None and args.screenshot.suffix.lower() != ".png":
        raise ClosedLoopError(f"--screenshot {args.screenshot}: the file name must end in .png")


def _prepare_qt(offscreen: bool) -> None:
    """Pick the Qt platform before Qt is imported; fail clearly without a display."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return
    if offscreen:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    elif sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ClosedLoopError(
            "no display (DISPLAY is not set): run the monitor on a desktop, over ssh -X, "
            "or use --screenshot OUT.png to render it offscreen"
        )


def run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    _prepare_qt(offscreen=args.screenshot is not None)
    try:
        import pyqtgraph as pg
        from pyqtgraph.Qt import QtCore
    except ImportError as error:
        raise ClosedLoopError(
            f"the monitor needs pyqtgraph and PySide6 ({error}); install them with pip install 'closedloop[monitor]'"
        ) from None
    from closedloop.monitor.screenshot import save_screenshot
    from closedloop.monitor.state import MonitorState
    from closedloop.monitor.window import MonitorWindow
    from closedloop.transport import use_rig_security

    rig = _load_rig(args.rig)
    if rig is not None:
        use_rig_security(rig, "monitor")
    line = args.photodiode_line
    if line is None:
        line = rig.acquisition.onset_line if rig is not None else PHOTODIODE_LINE
    state = MonitorState(photodiode_line=line, unit=args.unit)
    app = pg.mkQApp("closedloop monitor")
    sources, title = _start_sources(args, rig, state)
    try:
        window = MonitorWindow(state, title=f"closedloop monitor — {title}")
        window.resize(1500, 1000)
        wait_s = args.duration or (DEFAULT_SCREENSHOT_WAIT_S if args.screenshot else None)
        if wait_s is not None:
            QtCore.QTimer.singleShot(int(wait_s * 1000), app.quit)
        window.show()
        started = time.monotonic()
        app.exec()
        if args.screenshot is not None:
            save_screenshot(window, args.screenshot)
        view = state.view()
        window.close()
        _release_qt(app, window)
        del window
    finally:
        for source in reversed(sources):
            source.stop()
    summary = {
        "source": title,
        "seconds": round(time.monotonic() - started, 1),
        "trials": view.counts.get("trials", 0),
        "units": view.counts.get("units", 0),
        "model_version": view.model_version,
        "population_r": view.population_r,
        "dropped_frames": view.dropped_frames,
        "streams": {
            name: {"messages": sum(h.by_type.values()), **h.transport, "ignored": sum(h.ignored.values())}
            for name, h in view.health.items()
        },
        "screenshot": str(args.screenshot) if args.screenshot else None,
    }
    print(
        f"monitor: {title}: {summary['trials']} trials, {summary['units']} units, model v{view.model_version}"
        + (f"; screenshot {args.screenshot}" if args.screenshot else "")
    )
    for health in view.health.values():
        print("  " + health.line())
    missing = [source.models_missing for source in sources if getattr(source, "models_missing", "")]
    for note in missing:
        print(f"  note: {note}")
    summary["notes"] = missing
    write_json(args.json, summary)
    return 0


def _release_qt(app, window) -> None:
    """Delete the window's Qt objects now, while the application still exists.

    Left to Python's exit, the C++ side of pyqtgraph's items can be destroyed after the
    QApplication (or from the garbage collector in any order), which crashed the
    process on exit now and then (SIGSEGV after the output was written).
    """
    import gc

    window.deleteLater()
    app.sendPostedEvents(None, 0)  # 0 = QEvent.DeferredDelete: runs the deleteLater now
    app.processEvents()
    gc.collect()


def _load_rig(path: Path | None):
    if path is None:
        return None
    return load_rig(shipped_file(path))


def _start_sources(args: argparse.Namespace, rig, state) -> tuple[list, str]:
    """Start what feeds the state; returns (things to stop, newest last) and a title."""
    from closedloop.monitor.session_source import SessionSource
    from closedloop.monitor.stream import StreamReceiver, host_endpoints, rig_endpoints

    if args.session is not None:
        return [SessionSource(args.session, state, models_dir=args.models).start()], str(args.session)
    if args.demo:
        return _start_demo(state, fast=args.screenshot is not None)
    if args.connect:
        host = _host(args.connect)
        endpoints = host_endpoints(host, rig.network.ports.named() if rig else None)
        title = host
    elif rig is not None:
        endpoints, title = rig_endpoints(rig.network), str(args.rig)
    else:
        endpoints, title = host_endpoints("127.0.0.1"), "127.0.0.1 (default ports)"
    try:
        return [StreamReceiver(endpoints, state).start()], title
    except (OSError, ValueError) as error:
        raise ClosedLoopError(f"cannot listen to the loop's streams: {error}") from None


def _start_demo(state, *, fast: bool) -> tuple[list, str]:
    from closedloop.monitor.stream import StreamReceiver
    from closedloop.monitor.synthetic import SyntheticPublisher, SyntheticSession
    from closedloop.transport import inproc_endpoint

    endpoints = {
        name: inproc_endpoint(f"monitor-demo-{name}") for name in ("responses", "model_events", "stimulus", "spikes")
    }
    session = SyntheticSession(n_units=60, n_images=40, repeats=4, iterations=3, seed=0)
    publisher = SyntheticPublisher(endpoints, session, trials_per_s=0 if fast else 20)
    receiver = StreamReceiver(publisher.endpoints, state).start()
    publisher.start()
    return [receiver, publisher], "simulated session (--demo)"
