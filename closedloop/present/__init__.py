"""Stimulus presentation (docs/architecture.md; docs/architecture.md, Clocks): a PsychoPy presenter and a headless twin.

    presenter = make_presenter("psychopy")          # or "headless" for simulation
    presenter.open(rig, protocol.frames(rig))
    records = presenter.show_block(images_by_id, order)
    presenter.close()

`PresenterComponent` runs either one in the loop: `BlockRequest` in, `StimulusShown`
out.  PsychoPy is imported only when a PsychoPy presenter is made.
"""

from __future__ import annotations

from closedloop.present.base import Presenter, PresenterError, TrialRecord
from closedloop.present.component import PresenterComponent, make_presenter
from closedloop.present.display import display_problem, xvfb_command
from closedloop.present.headless import HeadlessPresenter

__all__ = [
    "HeadlessPresenter",
    "Presenter",
    "PresenterComponent",
    "PresenterError",
    "TrialRecord",
    "display_problem",
    "make_presenter",
    "xvfb_command",
]
