"""When no window can open, the presenter says why and how to fix it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from closedloop.present import PresenterError, display_problem, xvfb_command
from closedloop.present.psychopy_presenter import PsychoPyPresenter

ROOT = Path(__file__).resolve().parents[2]


def _assert_says_how_to_fix(text: str) -> None:
    assert "no display" in text
    assert "xvfb-run -a" in text and "set DISPLAY" in text
    assert "apt-get install -y xvfb libgl1" in text


def test_no_display_variable(monkeypatch, test_rig, timing) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    if not sys.platform.startswith("linux"):
        pytest.skip("the DISPLAY check is for Linux")
    presenter = PsychoPyPresenter()
    with pytest.raises(PresenterError) as caught:
        presenter.open(test_rig, timing)
    text = str(caught.value)
    _assert_says_how_to_fix(text)
    assert "DISPLAY environment variable is not set" in text
    assert "800x600x24" in text  # the Xvfb screen the rig needs
    assert not presenter.is_open and display_problem() is not None


def test_display_that_is_not_there(tmp_path) -> None:
    """DISPLAY names no X server: the failure inside pyglet becomes the same clear error."""
    script = tmp_path / "open.py"
    script.write_text(
        textwrap.dedent("""
        from closedloop.config import load_rig
        from closedloop.config.protocol import FrameTiming
        from closedloop.present import PresenterError
        from closedloop.present.psychopy_presenter import PsychoPyPresenter
        try:
            PsychoPyPresenter().open(load_rig("rigs/sim.yaml"), FrameTiming(3, 3, 60.0))
        except PresenterError as error:
            print(error)
    """)
    )
    env = {**os.environ, "DISPLAY": ":987654"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    _assert_says_how_to_fix(result.stdout)
    assert "DISPLAY=':987654'" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_xvfb_command_has_the_rig_resolution() -> None:
    assert xvfb_command(1280, 1024) == 'xvfb-run -a -s "-screen 0 1280x1024x24 +extension GLX +extension RANDR"'
