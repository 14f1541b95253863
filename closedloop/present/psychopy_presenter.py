"""The PsychoPy presenter: a pyglet window at the rig's geometry, frame-counted trials.

Each image is resampled, cut to the circular aperture and gamma encoded on the CPU
before the block (`closedloop.present.geometry`), then drawn one texel per screen
pixel, so what reaches the screen is exactly `geometry.expected_screen`.  Onset and
offset times come from ``win.callOnFlip``; PsychoPy's ``recordFrameIntervals`` gives
the interval before every flip and counts those above ``refreshThreshold``.

On a monitor the flip waits for the vertical blank.  Xvfb's does not, so by default
the presenter measures a few flips when it opens and, if they come much faster than
the rig's refresh, paces flips itself on a software refresh grid
(`closedloop.present.pacing.FrameGrid`).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from closedloop.config.rig import Rig
from closedloop.present.base import Presenter, PresenterError, TrialTiming
from closedloop.present.display import INSTALL_HINT, display_problem, no_display_message
from closedloop.present.geometry import (
    aperture_box,
    background_value,
    photodiode_box,
    stimulus_texture,
    to_psychopy,
)
from closedloop.present.pacing import FrameGrid

Pacing = Literal["auto", "vsync", "software"]
# Flips timed when the window opens to decide whether the display waits for vblank.
_WARMUP_FLIPS = 5
_PROBE_FLIPS = 12


class PsychoPyPresenter(Presenter):
    """Shows stimuli in a PsychoPy (pyglet) window.

    Parameters
    ----------
    fullscreen
        Full screen or a window; ``None`` follows the rig's ``display.fullscreen``.
    pacing
        ``"vsync"``: trust the flip to wait for the vertical blank (a real monitor);
        ``"software"``: wait for each frame slot ourselves (Xvfb, vsync off);
        ``"auto"``: decide from a few flips timed when the window opens.
    refresh_threshold_frames
        An interval longer than this many frame periods counts as a dropped frame
        (1.5: a frame that misses its vertical blank shows for two periods).
    """

    name = "PsychoPy presenter"

    def __init__(
        self, *, fullscreen: bool | None = None, pacing: Pacing = "auto", refresh_threshold_frames: float = 1.5
    ):
        super().__init__()
        if pacing not in ("auto", "vsync", "software"):
            raise ValueError(f"pacing must be 'auto', 'vsync' or 'software', got {pacing!r}")
        if not 1.0 < refresh_threshold_frames < 3.0:
            raise ValueError(f"refresh_threshold_frames must be between 1 and 3, got {refresh_threshold_frames}")
        self.fullscreen = fullscreen
        self.requested_pacing: Pacing = pacing
        self.pacing: Literal["vsync", "software"] | None = None
        self.refresh_threshold_frames = refresh_threshold_frames
        self.renderer: str | None = None
        self._win: Any = None
        self._grid: FrameGrid | None = None
        self._textures: dict[int, np.ndarray] = {}
        self._stamp: float | None = None

    @property
    def window(self) -> Any:
        """The PsychoPy window (``None`` when closed), e.g. to read back a buffer in tests."""
        return self._win

    # --- Presenter hooks ------------------------------------------------------------

    def _open(self, rig: Rig) -> None:
        display = rig.display
        problem = display_problem(display.width_px, display.height_px)
        if problem:
            raise PresenterError(f"{self.name}: {problem}")
        visual, monitors = _import_psychopy(display.width_px, display.height_px)
        fullscreen = display.fullscreen if self.fullscreen is None else self.fullscreen
        monitor = monitors.Monitor(
            "closedloop-rig", width=display.width_cm, distance=display.distance_cm, autoLog=False
        )
        monitor.setSizePix([display.width_px, display.height_px])
        try:
            win = visual.Window(
                size=(display.width_px, display.height_px),
                fullscr=fullscreen,
                screen=display.screen,
                units="pix",
                color=_rgb(background_value(rig)),
                colorSpace="rgb",
                allowGUI=False,
                winType="pyglet",
                monitor=monitor,
                checkTiming=False,
                waitBlanking=True,
                autoLog=False,
            )
        except Exception as error:  # pyglet/GL raise many types; all mean "no usable display"
            raise PresenterError(
                f"{self.name}: "
                + no_display_message(
                    f"opening the window failed with DISPLAY={os.environ.get('DISPLAY', '')!r} "
                    f"({type(error).__name__}: {error})",
                    display.width_px,
                    display.height_px,
                )
            ) from error
        self._win = win
        try:
            self._check_size(rig)
            self._build_stimuli(rig, visual)
            win.refreshThreshold = self.refresh_threshold_frames / display.refresh_hz
            self.renderer = _renderer()
            self.pacing = self._decide_pacing(display.refresh_hz)
            self._grid = FrameGrid(display.refresh_hz) if self.pacing == "software" else None
            from pyglet import gl

            self._gl = gl
        except BaseException:
            self._close()
            raise

    def _begin_block(self, images: Mapping[int, np.ndarray]) -> None:
        rig = self._require_open()[0]
        self._textures = {i: to_psychopy(stimulus_texture(image, rig)) for i, image in images.items()}
        win = self._win
        # Restart interval recording so the idle time since the last block is not an
        # "interval"; the lead-in flip below then sets the reference for trial 0.
        win.recordFrameIntervals = False
        win.frameIntervals = []
        win.recordFrameIntervals = True
        self._flip(show_image=False, photodiode_on=False)

    def _show_trial(self, stimulus_id: int, frames_on: int, frames_off: int) -> TrialTiming:
        win = self._win
        first_interval, dropped_before = len(win.frameIntervals), win.nDroppedFrames
        self._image.image = self._textures[stimulus_id]
        onset = self._flip(show_image=True, photodiode_on=True, stamp=True)
        for _ in range(frames_on - 1):
            self._flip(show_image=True, photodiode_on=True)
        offset = self._flip(show_image=False, photodiode_on=False, stamp=True)
        for _ in range(frames_off - 1):
            self._flip(show_image=False, photodiode_on=False)
        intervals = np.asarray(win.frameIntervals[first_interval:], dtype=np.float64)
        if onset is None or offset is None:  # stamped flips: callOnFlip noted their times
            raise PresenterError(f"{self.name}: a time-stamped flip was not stamped")
        return TrialTiming(onset, offset, win.nDroppedFrames - dropped_before, intervals)

    def _close(self) -> None:
        if self._win is not None:
            win, self._win = self._win, None
            win.close()
        self._textures = {}

    # --- drawing --------------------------------------------------------------------------

    def _flip(self, *, show_image: bool, photodiode_on: bool, stamp: bool = False) -> float | None:
        """Draw one frame and flip; with ``stamp``, return the ``callOnFlip`` time."""
        if show_image:
            self._image.draw()
        patch = self._white_patch if photodiode_on else self._black_patch
        if patch is not None:
            patch.draw()
        if stamp:
            self._stamp = None
            self._win.callOnFlip(self._note_flip)
        if self._grid is not None:
            # Render now, so the slot is spent only on the buffer swap (Mesa's software
            # renderer otherwise rasterises inside flip, adding its time as jitter).
            self._gl.glFinish()
            self._grid.wait_for_next()
        self._win.flip()
        return self._stamp if stamp else None

    def _note_flip(self) -> None:
        self._stamp = time.monotonic()

    def _build_stimuli(self, rig: Rig, visual: Any) -> None:
        display, box = rig.display, aperture_box(rig)
        grey = np.full((box.size, box.size), background_value(rig))
        self._image = visual.ImageStim(
            self._win,
            image=to_psychopy(grey),
            size=(box.size, box.size),
            units="pix",
            pos=box.psychopy_centre(display.width_px, display.height_px),
            interpolate=False,
            colorSpace="rgb",
            autoLog=False,
        )
        self._white_patch = self._black_patch = None
        patch = photodiode_box(rig)
        if patch is not None:
            centre = patch.psychopy_centre(display.width_px, display.height_px)
            self._white_patch, self._black_patch = (
                visual.Rect(
                    self._win,
                    width=patch.size,
                    height=patch.size,
                    pos=centre,
                    units="pix",
                    fillColor=color,
                    lineColor=None,
                    lineWidth=0,
                    colorSpace="rgb",
                    autoLog=False,
                )
                for color in ((1.0, 1.0, 1.0), (-1.0, -1.0, -1.0))
            )

    def _check_size(self, rig: Rig) -> None:
        display = rig.display
        width, height = (int(v) for v in self._win.size)
        if (width, height) != (display.width_px, display.height_px):
            raise PresenterError(
                f"{self.name}: the window is {width}×{height} px but the rig says {display.width_px}×"
                f"{display.height_px} px (display.width_px/height_px); set the screen to that resolution "
                f"(under Xvfb: -screen 0 {display.width_px}x{display.height_px}x24) or correct the rig file"
            )

    def _decide_pacing(self, refresh_hz: float) -> Literal["vsync", "software"]:
        if self.requested_pacing != "auto":
            return self.requested_pacing
        for _ in range(_WARMUP_FLIPS):  # the first flips of a new window are slow (shaders, buffers)
            self._win.flip()
        times = []
        for _ in range(_PROBE_FLIPS):
            self._win.flip()
            times.append(time.monotonic())
        typical = float(np.median(np.diff(times)))
        # A display that waits for vblank flips once per period, never twice and not much slower;
        # anything else (Xvfb returns at once, a loaded software renderer is slow) is paced by us.
        return "vsync" if 0.75 / refresh_hz < typical < 1.25 / refresh_hz else "software"


def _rgb(value: float) -> tuple[float, float, float]:
    grey = 2.0 * value - 1.0
    return (grey, grey, grey)


def _renderer() -> str | None:
    try:
        from pyglet import gl

        return f"{gl.gl_info.get_renderer()} (OpenGL {gl.gl_info.get_version()})"
    except Exception:  # noqa: BLE001 - a description only
        return None


def _import_psychopy(width_px: int, height_px: int) -> tuple[Any, Any]:
    """``psychopy.visual`` and ``psychopy.monitors``, or a `PresenterError` saying how to install them."""
    try:
        with warnings.catch_warnings():  # PsychoPy's own deprecated calls (locale) are not ours to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            from psychopy import logging as psychopy_logging
            from psychopy import monitors, visual
    except ImportError as error:
        raise PresenterError(
            f"PsychoPy presenter: PsychoPy cannot be imported ({error}); install it with `make setup` "
            "(pip install --no-deps psychopy==2026.2.5 plus the [present] extra); for GL libraries: " + INSTALL_HINT
        ) from error
    except Exception as error:  # pyglet raises at import time when libGL is missing
        reason = (
            f"importing PsychoPy failed with DISPLAY={os.environ.get('DISPLAY', '')!r} "
            f"({type(error).__name__}: {error})"
        )
        raise PresenterError("PsychoPy presenter: " + no_display_message(reason, width_px, height_px)) from error
    # PsychoPy's console warnings (e.g. each dropped frame) would flood a long session;
    # we count dropped frames ourselves.
    psychopy_logging.console.setLevel(psychopy_logging.ERROR)
    return visual, monitors
