"""How large a protocol's session file will grow, and refusing a run the disk cannot hold.

The estimate is an upper bound built from the protocol's plan: every natural, grating and
synthesized image stored once; every trial with its responses; spikes at
`ASSUMED_RATE_HZ` per unit for the presentation time plus half again (blanks between
blocks, fits and syntheses, during which spikes keep arriving); two photodiode edges per
trial.  `closedloop validate RIG PROTOCOL` prints it and `closedloop run` refuses to
start when the session's filesystem has less free space.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from closedloop.config.blocks import GratingsBlock, SynthesizeBlock
from closedloop.config.protocol import Protocol
from closedloop.config.rig import Rig
from closedloop.data.session_space import format_bytes, free_bytes, session_bytes
from closedloop.errors import ClosedLoopError
from closedloop.runner.journal import journal_path
from closedloop.runner.plan import Plan
from closedloop.runner.stimuli import grating_set

#: Mean spike rate per unit the estimate assumes: above what V1 units fire on average under
#: natural images, so a session rarely outgrows it.
ASSUMED_RATE_HZ = 50.0
#: Units assumed when a real rig's units are not known yet (a Utah array).
DEFAULT_UNITS = 96
_EXTRA_TIME = 1.5  # recording time / presentation time
_SYNC_PER_TRIAL = 2  # photodiode on and off


@dataclass(frozen=True)
class SessionEstimate:
    """The expected size of one session.

    Attributes
    ----------
    bytes
        Upper estimate of the session file plus its runner journal.
    n_units, n_stimuli, n_trials, n_spikes
        What it was computed from.
    """

    bytes: int
    n_units: int
    n_stimuli: int
    n_trials: int
    n_spikes: int

    def text(self) -> str:
        return (
            f"session file about {format_bytes(self.bytes)} at most ({self.n_units} units at "
            f"{ASSUMED_RATE_HZ:g} spikes/s, {self.n_stimuli} images, {self.n_trials} trials)"
        )


def rig_units(rig: Rig) -> int:
    """Units a new session on ``rig`` records when none are given: the simulated population's size,
    else `DEFAULT_UNITS`."""
    if rig.acquisition.kind == "sim":
        # only a simulated rig needs the simulator
        from closedloop.sim.scenario import load_scenario

        return int(load_scenario(rig.acquisition.scenario).n_units)
    return DEFAULT_UNITS


def estimate_session(rig: Rig, protocol: Protocol, n_units: int | None = None) -> SessionEstimate:
    """Upper estimate of the size of ``protocol``'s session on ``rig`` with ``n_units`` units."""
    n_units = rig_units(rig) if n_units is None else int(n_units)
    steps = Plan(protocol).steps
    n_stimuli = protocol.images.n
    for name in sorted({step.block.set for step in steps if isinstance(step.block, GratingsBlock)}):
        n_stimuli += len(grating_set(name, rig)[0])
    if protocol.synthesis is not None:
        per_block = protocol.synthesis.images_per_block
        n_stimuli += per_block * sum(isinstance(step.block, SynthesizeBlock) for step in steps)
    n_trials = protocol.total_trials
    seconds = n_trials * protocol.frames(rig).trial_ms / 1000.0 * _EXTRA_TIME
    n_spikes = int(n_units * ASSUMED_RATE_HZ * seconds)
    size = rig.stimulus.size_px
    text = sum(len(source.text.encode()) for source in (rig.source, protocol.source) if source is not None)
    total = session_bytes(
        n_units=n_units,
        stimulus_shape=(size, size),
        n_stimuli=n_stimuli,
        n_trials=n_trials,
        n_spikes=n_spikes,
        n_sync=_SYNC_PER_TRIAL * n_trials,
        n_blocks=len(steps) + 2,
        text_bytes=text,
    )
    return SessionEstimate(total, n_units, n_stimuli, n_trials, n_spikes)


def check_free_space(session_path: str | Path, estimate: SessionEstimate, already: int = 0) -> None:
    """Refuse to start when the session's filesystem has less room than the session needs.

    Parameters
    ----------
    session_path
        The session file to be written (its folder must exist).
    estimate
        From `estimate_session`.
    already
        Bytes of the session that exist already (a resumed session).

    Raises
    ------
    ClosedLoopError
        Naming the folder, the free space and the estimate.
    """
    folder = Path(session_path).resolve().parent
    free = free_bytes(folder)
    needed = max(0, estimate.bytes - int(already))
    if free is not None and free < needed:
        raise ClosedLoopError(
            f"{folder}: only {format_bytes(free)} free, but this session needs up to {format_bytes(needed)} "
            f"({estimate.text()}); make room there or write the session elsewhere (--session PATH)"
        )


def check_room_for_run(
    session_path: str | Path, rig: Rig, protocol: Protocol, n_units: int | None = None, resume: bool = False
) -> SessionEstimate:
    """`check_free_space` for a new (or resumed) run of ``protocol`` on ``rig``; returns the estimate."""
    estimate = estimate_session(rig, protocol, n_units)
    already = 0
    if resume:
        already = sum(path.stat().st_size for path in (Path(session_path), journal_path(session_path)) if path.exists())
    check_free_space(session_path, estimate, already)
    return estimate
