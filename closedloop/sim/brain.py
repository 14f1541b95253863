"""Pluggable brains: anything that maps images to expected rates.

A brain is named by a dotted path ``"package.module:attribute"`` (the attribute
may itself be dotted, ``"pkg.mod:obj.method"``).  If the attribute is a class it
is instantiated with no arguments, so ``"closedloop.sim:SimulatedV1"`` gives a
default simulated population.  `load_brain` checks the brain on probe images
before anyone relies on it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from collections.abc import Callable

import numpy as np

from closedloop.config.brain import CallableBrain, PopulationBrain, TwinBrain
from closedloop.errors import ClosedLoopError
from closedloop.sim.photographs import natural_images

if TYPE_CHECKING:
    from closedloop.acquisition.sim_array import BrainSpec
    from closedloop.config.rig import Rig

#: Highest rate a brain may give (a neuron's refractory period allows about this many spikes/s).
MAX_RATE_HZ = 1000.0


@runtime_checkable
class Brain(Protocol):
    """Maps (n, H, W) images in [0, 1] to (n, n_units) expected rates in Hz."""

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def spec_from_rig(rig: Rig, n_units: int | None = None) -> BrainSpec:
    """The brain a simulated rig's ``acquisition`` section names (``brain:``, else ``scenario:``).

    ``n_units`` (when given) overrides a population's unit count.
    """
    # a cycle (sim_array imports the sim package, so this module), and zmq: a brain loads without them
    from closedloop.acquisition.sim_array import BrainSpec

    acquisition, size = rig.acquisition, rig.stimulus.size_px
    brain = acquisition.brain
    if isinstance(brain, CallableBrain):
        return BrainSpec(
            kind="callable", target=brain.target, import_path=brain.import_path, seed=acquisition.seed, size_px=size
        )
    if isinstance(brain, TwinBrain):
        return BrainSpec(kind="twin", checkpoint=brain.checkpoint, archive=brain.archive, size_px=size)
    if isinstance(brain, PopulationBrain):
        seed = brain.seed if brain.seed is not None else acquisition.seed
        return BrainSpec(scenario=brain.scenario, seed=seed, n_units=n_units or brain.n_units, size_px=size)
    return BrainSpec(scenario=acquisition.scenario, seed=acquisition.seed, n_units=n_units, size_px=size)


def load_brain(
    target: str, *, probe_size_px: int = 66, import_path: Sequence[str] = ()
) -> Callable[[np.ndarray], np.ndarray]:
    """Import a brain by dotted path and check it on probe images.

    Parameters
    ----------
    target
        ``"package.module:callable"``.
    probe_size_px
        Side of the probe images (two seeded natural images) the brain is tried on.
    import_path
        Folders put at the front of ``sys.path`` (once each) before importing.

    Returns
    -------
    The callable (an instance, when the path names a class).

    Raises
    ------
    ClosedLoopError
        If the path is malformed, the module cannot be imported, the attribute is
        missing or not callable, calling it fails, or its output is not a finite,
        non-negative (n_images, n_units) array.
    """
    if not isinstance(target, str) or target.count(":") != 1 or not all(target.split(":")):
        raise ClosedLoopError(f"brain {target!r}: give it as 'package.module:callable'")
    module_name, attribute_path = target.split(":")
    for folder in reversed([str(f) for f in import_path]):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ClosedLoopError(
            f"brain {target!r}: cannot import module {module_name!r} ({error}); "
            "check the name and that the package is installed"
        ) from None
    except Exception as error:  # the module's own code failed while importing
        raise ClosedLoopError(
            f"brain {target!r}: importing {module_name!r} failed: {type(error).__name__}: {error}"
        ) from error
    brain = module
    for part in attribute_path.split("."):
        if not hasattr(brain, part):
            raise ClosedLoopError(f"brain {target!r}: {module_name!r} has no attribute {attribute_path!r}")
        brain = getattr(brain, part)
    if isinstance(brain, type):
        try:
            brain = brain()
        except Exception as error:
            raise ClosedLoopError(
                f"brain {target!r}: could not create an instance with no arguments: {type(error).__name__}: {error}"
            ) from error
    if not callable(brain):
        raise ClosedLoopError(f"brain {target!r}: {attribute_path!r} is a {type(brain).__name__}, not callable")
    check_brain(brain, name=target, probe_size_px=probe_size_px)
    return brain


def check_brain(brain: Callable[[np.ndarray], np.ndarray], *, name: str = "brain", probe_size_px: int = 66) -> int:
    """Call a brain on two probe images and check its output; return its number of units.

    Raises
    ------
    ClosedLoopError
        If the call fails or the output is not a finite, non-negative (2, n_units) array.
    """
    probe = natural_images(2, size_px=probe_size_px, aperture_diameter_px=min(60.0, probe_size_px), seed=0)
    try:
        output = brain(probe)
    except Exception as error:
        raise ClosedLoopError(
            f"brain {name!r} failed on a probe batch of shape {probe.shape}: {type(error).__name__}: {error}"
        ) from error
    return int(check_rates(output, len(probe), name).shape[1])


def check_rates(output: object, n_images: int, name: str = "brain") -> np.ndarray:
    """A brain's output for ``n_images`` images as a float64 array of rates, checked.

    Raises
    ------
    ClosedLoopError
        If it is not a finite (n_images, n_units) array of rates from 0 to `MAX_RATE_HZ`.
    """
    try:
        rates = np.asarray(output, dtype=np.float64)
    except (TypeError, ValueError):
        raise ClosedLoopError(f"brain {name!r} returned {type(output).__name__}, not an array of rates") from None
    if rates.ndim != 2 or rates.shape[0] != n_images or rates.shape[1] < 1:
        raise ClosedLoopError(
            f"brain {name!r} returned shape {rates.shape} for {n_images} images; "
            f"it must return (n_images, n_units) = ({n_images}, n_units)"
        )
    if not np.all(np.isfinite(rates)):
        raise ClosedLoopError(f"brain {name!r} returned NaN or infinite rates")
    if np.any(rates < 0):
        raise ClosedLoopError(f"brain {name!r} returned negative rates (min {rates.min():.3g} Hz)")
    if np.any(rates > MAX_RATE_HZ):  # spikes are drawn from these rates: bound what they may cost
        raise ClosedLoopError(
            f"brain {name!r} returned rates up to {rates.max():.3g} Hz; neurons fire at most {MAX_RATE_HZ:.0f} Hz, "
            "so check its units (Hz, not spikes per ms) and its gain"
        )
    return rates
