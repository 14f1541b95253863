"""The plugin family: a brain someone else wrote, recorded like any simulated population.

A scenario with ``population.family: plugin`` and ``population.brain:
"package.module:callable"`` names a brain that maps (n, H, W) images in [0, 1] to
(n, n_units) expected rates in Hz (a class is instantiated with no arguments),
as a rig's ``acquisition.brain`` does: each image's expected rate in the response window
(`PLUGIN_RATE_WINDOW_S`) of a 100 ms stimulus.  Its rates are taken as they are: no gain
calibration and no output nonlinearity of ours.  What stays ours is what a rate model
leaves out: the response time course, trial-to-trial variability, spiking, the units'
places on the array, and the stimuli.  So `closedloop sim make-archive` records a lab's
own simulator in either archive layout, and `closedloop fit` scores a model of it
against its exact rates (r/oracle), because the archive's recipe names the scenario and
the scenario names the brain.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from closedloop.errors import ClosedLoopError
from closedloop.sim.aperture import GREY, fit_to_grid
from closedloop.sim.archive_spec import RESPONSE_WINDOW_S
from closedloop.sim.brain import check_rates, load_brain

#: A brain's rate is its expected rate in this window after the onset of a stimulus this long
#: (a rig's ``module:callable`` brain's too); the sustained rate is scaled so the window mean is it.
PLUGIN_RATE_WINDOW_S = RESPONSE_WINDOW_S
PLUGIN_STIMULUS_S = 0.1
#: Batch size the brain is called with, to bound its memory.
CHUNK = 256


class PluginStage:
    """Drive stage of the plugin family: the brain's own rates (see module notes).

    Parameters
    ----------
    target
        ``"package.module:callable"``.
    n_units
        How many units the scenario says the brain has; it must give that many.
    size_px
        The population's grid: images are centre-cropped or grey-padded to it.

    Raises
    ------
    ClosedLoopError
        If the brain cannot be imported or fails its probe, or gives another number of units.
    """

    def __init__(self, target: str, n_units: int, size_px: int):
        self.target = target
        self.size_px = size_px
        self.brain: Callable[[np.ndarray], np.ndarray] = load_brain(target, probe_size_px=size_px)
        given = self.raw(np.full((1, size_px, size_px), GREY)).shape[1]
        if given != n_units:
            raise ClosedLoopError(
                f"brain {target!r} gives {given} units and the scenario asks for {n_units}; "
                f"set population.n_units: {given} (an archive's --units must match it too)"
            )
        self.localised = np.zeros(n_units, dtype=bool)

    def raw(self, images: np.ndarray) -> np.ndarray:
        """The brain's expected rates in Hz, (n, n_units), checked like its probe."""
        batch = np.asarray(images, dtype=np.float64)
        batch = fit_to_grid(batch[None] if batch.ndim == 2 else batch, self.size_px)
        parts = [self._call(batch[start : start + CHUNK]) for start in range(0, len(batch), CHUNK)]
        return np.concatenate(parts)

    def _call(self, batch: np.ndarray) -> np.ndarray:
        try:
            output = self.brain(batch)
        except Exception as error:  # the brain's own code: say whose it is
            raise ClosedLoopError(
                f"brain {self.target!r} failed on a batch of shape {batch.shape}: {type(error).__name__}: {error}"
            ) from error
        return check_rates(output, len(batch), self.target)

    def receptive_fields(self) -> np.ndarray:
        """Unknown for a brain we did not write: zeros, (n_units, size_px²)."""
        return np.zeros((len(self.localised), self.size_px * self.size_px))
