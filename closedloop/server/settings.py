"""What the model server needs to know, as one picklable object.

`ServerSettings.from_configs` reads it from a rig and a protocol: endpoints from the
rig's ports, the model from the protocol's ``fit`` section
(`closedloop.config.protocol.Fit.model_config`), the device from ``fit.device`` or the
rig's ``compute.device`` (`device_choice`: a command line's choice first), the synthesis
step default from the ``synthesis`` section.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from closedloop.config.protocol import START_MODES
from closedloop.data.dataset import Preprocessing
from closedloop.errors import ClosedLoopError
from closedloop.model.device import resolve_device
from closedloop.model.model_config import ModelConfig
from closedloop.synth.optimise import SynthesisSettings

#: Aperture of the simulated photographs and gratings (display px), capped by the array.
DEFAULT_APERTURE_PX = 60.0
#: Largest request the model server takes: 64 MiB is ~3,800 float32 images of 66 × 66 px.
MAX_REQUEST_BYTES = 64 * 1024 * 1024


def draw_seed() -> int:
    """A fresh server seed (recorded with everything it seeds)."""
    return secrets.randbelow(2**31)


def device_choice(chosen: str | None, protocol, rig) -> str:
    """The model device: ``chosen`` (a command line's ``--device``), else the protocol's
    ``fit.device``, else the rig's ``compute.device``."""
    fit_device = protocol.fit.device if protocol.fit is not None else None
    return chosen or fit_device or rig.compute.device


def resolved_device(chosen: str | None, protocol, rig) -> str:
    """`device_choice` as a concrete device (``auto`` → ``cuda``/``cpu``).

    Raises
    ------
    ClosedLoopError
        An explicit ``cuda`` device on a machine without one.
    """
    return str(resolve_device(device_choice(chosen, protocol, rig)))


@dataclass(frozen=True)
class ServerSettings:
    """How the model server fits, answers and where it listens.

    Attributes
    ----------
    request_endpoint
        Where the ROUTER for Fit/Predict/Synthesize requests binds (rig port ``model``).
    events_endpoint
        Where the PUB for ModelUpdated and copies of replies binds (``model_events``).
    model
        Architecture and training settings of every refit.
    preprocessing
        Stimulus (display) image → network input.
    stimulus_size_px
        Side of the images requests carry (the rig's ``stimulus.size_px``).
    holdout_fraction, stop_fraction
        Shares of the images held out for evaluation and used for early stopping.
    device
        ``auto | cpu | cuda | cuda:N`` (`closedloop.model.device.resolve_device`).
    seed
        Seeds the split, every refit and the rmax draws; drawn when not given (recorded).
    synthesis_steps
        Step cap of a SynthesizeRequest with ``steps`` 0.
    synthesis_heldout_members
        Ensemble members that judge synthesized images instead of optimising them
        (`closedloop.synth.optimise.SynthesisSettings.heldout_members`).
    synthesis_start
        Where rate targets start: ``"blank"`` (grey) or ``"natural"`` (a fit image close to
        the target by model and measurement, edited to reach it; `closedloop.synth.starts`).
    max_synthesize
        Most images one SynthesizeRequest may ask for (the server stays responsive).
    aperture_px, mean_luminance
        The display's circular aperture (display px; ``None``: 60 px or the whole
        array if smaller) and grey level, which synthesized images respect.
    window_s
        The protocol's response window, recorded with the data.
    out_dir
        Folder where every model version is saved as ``model_vNNN.pt``; ``None``: none.
    core_from
        A fitted model file whose core every refit starts from and trains on
        (`closedloop.model.given_core`); ``None``: cores start afresh.
    fixed_core
        With ``core_from``: every refit keeps that core as it is, fitting only readouts.
    session
        Session id carried in every message envelope; when set, only a runner with this
        session id may open the session (`closedloop.server.ownership`).
    first_version
        Version of the first model this server fits: a resumed session's server goes on
        from the last version the session recorded, so versions never repeat.
    request_hwm, max_request_bytes
        Requests queued per client, and the largest request taken (a bigger frame
        disconnects its sender).  Requests waiting in ZeroMQ take at most
        ``clients × (request_hwm + 1) × max_request_bytes``; see `memory_bound_bytes`.
    max_queued_predictions
        Predictions (with images) waiting or running at once; more are refused ``busy``.
    max_queued_syntheses
        Syntheses one client may have waiting; more are refused ``busy``.
    synthesis_budget_s
        Longest a synthesis of a client other than the session's runner may run.
    """

    request_endpoint: str
    events_endpoint: str
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    stimulus_size_px: int = 66
    holdout_fraction: float = 0.2
    stop_fraction: float = 0.14
    device: str = "auto"
    seed: int = field(default_factory=draw_seed)
    synthesis_steps: int = SynthesisSettings().steps
    synthesis_heldout_members: int = SynthesisSettings().heldout_members
    synthesis_start: str = START_MODES[0]
    max_synthesize: int = 1000
    aperture_px: float | None = None
    mean_luminance: float = 0.5
    window_s: tuple[float, float] = (0.05, 0.10)
    out_dir: str | None = None
    core_from: str | None = None
    fixed_core: bool = False
    session: str = ""
    first_version: int = 1
    request_hwm: int = 2  # at least 2: over CURVE a high-water mark of 1 delivers nothing (libzmq 4.3.5)
    max_request_bytes: int = MAX_REQUEST_BYTES
    max_queued_predictions: int = 2
    max_queued_syntheses: int = 4
    synthesis_budget_s: float = 30.0

    def __post_init__(self) -> None:
        if self.seed is None:  # an untyped caller's None draws one too
            object.__setattr__(self, "seed", draw_seed())
        aperture_px = self.aperture_px
        if aperture_px is None:
            aperture_px = min(DEFAULT_APERTURE_PX, float(self.stimulus_size_px))
            object.__setattr__(self, "aperture_px", aperture_px)
        if not (
            0 < self.holdout_fraction < 1
            and 0 < self.stop_fraction < 1
            and self.holdout_fraction + self.stop_fraction < 1
        ):
            raise ClosedLoopError(
                f"server: holdout_fraction {self.holdout_fraction} and stop_fraction "
                f"{self.stop_fraction} must be in (0, 1) and sum to less than 1"
            )
        needed = self.preprocessing.crop * self.preprocessing.downsample
        if needed > self.stimulus_size_px:
            raise ClosedLoopError(
                f"server: preprocessing needs {needed}-px images (crop × downsample) but "
                f"stimuli are {self.stimulus_size_px} px; lower the crop or raise size_px"
            )
        for name in (
            "synthesis_steps",
            "max_synthesize",
            "first_version",
            "request_hwm",
            "max_request_bytes",
            "max_queued_predictions",
            "max_queued_syntheses",
        ):
            if getattr(self, name) < 1:
                raise ClosedLoopError(f"server: {name} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.synthesis_budget_s) and self.synthesis_budget_s > 0):
            raise ClosedLoopError(
                f"server: synthesis_budget_s must be a positive number of seconds, got {self.synthesis_budget_s}"
            )
        if not (math.isfinite(aperture_px) and aperture_px > 0):
            raise ClosedLoopError(f"server: aperture_px must be a positive number, got {aperture_px}")
        if self.synthesis_start not in START_MODES:
            raise ClosedLoopError(
                f"server: synthesis_start must be one of {', '.join(START_MODES)}, got {self.synthesis_start!r}"
            )

    def memory_bound_bytes(self, clients: int) -> int:
        """Most bytes that requests can hold in the server at once, ``clients`` connected.

        Each client's queue in ZeroMQ (``request_hwm`` messages, plus the one being
        read) and the predictions taken for work (``max_queued_predictions`` + the one
        the loop holds), each at most ``max_request_bytes``.  The model, the session's
        data and syntheses (small requests) come on top.
        """
        return (clients * (self.request_hwm + 1) + self.max_queued_predictions + 1) * self.max_request_bytes

    @classmethod
    def from_configs(
        cls,
        rig,
        protocol,
        *,
        out_dir: str | Path | None = None,
        request_endpoint: str | None = None,
        events_endpoint: str | None = None,
        session: str = "",
        device: str | None = None,
        seed: int | None = None,
        stimulus_size_px: int | None = None,
        first_version: int = 1,
    ) -> ServerSettings:
        """Settings for ``protocol`` on ``rig`` (endpoints default to the rig's ports).

        ``device`` (`device_choice`), ``seed`` and ``stimulus_size_px`` replace the configs'
        values when given: a command line's ``--device``/``--seed``, a replayed archive's
        image size.  ``first_version``: a resumed session's next model version.

        Raises
        ------
        ConfigError
            The protocol has no ``fit`` section.
        """
        fit = protocol.fit
        if fit is None:
            raise protocol.error("fit", "the model server needs a 'fit:' section in the protocol")
        synthesis = protocol.synthesis
        steps = synthesis.steps if synthesis is not None else SynthesisSettings().steps
        heldout = synthesis.heldout_members if synthesis is not None else SynthesisSettings().heldout_members
        start = synthesis.start if synthesis is not None else START_MODES[0]
        return cls(
            request_endpoint=request_endpoint or rig.network.endpoint("model"),
            events_endpoint=events_endpoint or rig.network.endpoint("model_events"),
            model=fit.model_config(),
            preprocessing=fit.preprocessing,
            stimulus_size_px=rig.stimulus.size_px if stimulus_size_px is None else int(stimulus_size_px),
            holdout_fraction=fit.holdout_fraction,
            stop_fraction=fit.stop_fraction,
            device=device_choice(device, protocol, rig),
            seed=_chosen_seed(seed, protocol.seed),
            synthesis_steps=steps,
            synthesis_heldout_members=heldout,
            synthesis_start=start,
            mean_luminance=rig.display.mean_luminance,
            window_s=protocol.response.window_s,
            out_dir=None if out_dir is None else str(out_dir),
            core_from=fit.core_from,
            fixed_core=fit.fixed_core,
            session=session,
            first_version=int(first_version),
        )


def _chosen_seed(chosen: int | None, protocol_seed: int | None) -> int:
    """``chosen`` (a command line's ``--seed``), else the protocol's seed, else a fresh draw."""
    if chosen is not None:
        return int(chosen)
    return draw_seed() if protocol_seed is None else protocol_seed
