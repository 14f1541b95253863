"""Assembling a whole loop: the only place components are constructed.

- `closedloop.loop.components`: each component (acquisition adapter, presenter, model
  server, runner) built from a rig and a protocol;
- `closedloop.loop.local`: a simulated rig's components and `run_until_done`, which runs
  components as threads of this process;
- `closedloop.loop.assemble`: `build_loop`, everything ``closedloop run``/``demo`` run here;
- `closedloop.loop.progress`: `ProgressPrinter`, one line per block and model version.

Names are imported on first use (`closedloop.lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from closedloop.lazy import lazy_exports

if TYPE_CHECKING:  # the names as mypy reads them; at run time each is imported on first use
    from closedloop.loop.assemble import build_loop as build_loop, presenter_for as presenter_for
    from closedloop.loop.components import brain_units as brain_units, simulated_brain as simulated_brain
    from closedloop.loop.local import (
        LocalLoop as LocalLoop,
        run_until_done as run_until_done,
        simulated_components as simulated_components,
    )
    from closedloop.loop.progress import ProgressPrinter as ProgressPrinter


_EXPORTS = {
    "LocalLoop": "closedloop.loop.local",
    "run_until_done": "closedloop.loop.local",
    "simulated_components": "closedloop.loop.local",
    "brain_units": "closedloop.loop.components",
    "simulated_brain": "closedloop.loop.components",
    "build_loop": "closedloop.loop.assemble",
    "presenter_for": "closedloop.loop.assemble",
    "ProgressPrinter": "closedloop.loop.progress",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
