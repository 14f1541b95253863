"""How long the runner waits for what (where its sockets are: `closedloop.transport.Endpoints`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunnerSettings:
    """Waits and tolerances of the runner (all in seconds unless named otherwise).

    Attributes
    ----------
    request_timeout_s
        Reply to a FitRequest; longer and the model server counts as down.
    fit_timeout_s
        From a fit block's Accepted to its ModelUpdated (the block is flagged after).
    synth_timeout_s
        Reply to a SynthesizeRequest.
    presenter_timeout_s
        Waiting for a presenter to take a BlockRequest before the run stops.
    block_timeout_s
        Longest wait for a presentation block's reports and data; ``None``: twice the
        block's duration plus 10 s.
    settle_s
        After the last trial report, a heartbeat this much later says a quiet
        acquisition stream has delivered everything.
    startup_timeout_s
        Waiting for the first acquisition heartbeat before the first block.
    require_acquisition_data
        Also wait (``startup_timeout_s``) for the first spike or sync edge, and stop before
        any block if none comes: on a real rig a silent acquisition means the recording
        system is not acquiring, and a protocol shown to nobody is lost.
    photodiode_tolerance_frames
        Allowed disagreement between photodiode-edge and flip intervals, in frames.
    ping_interval_s
        While waiting for a refit, check this often that the server still answers.
    pixel_lead_s
        Pause between publishing a BlockRequest copy with new pixels and sending it to
        the presenter, so subscribers (the simulated array) have the pixels first.
    """

    request_timeout_s: float = 2.0
    fit_timeout_s: float = 600.0
    synth_timeout_s: float = 600.0
    presenter_timeout_s: float = 10.0
    block_timeout_s: float | None = None
    settle_s: float = 0.3
    startup_timeout_s: float = 10.0
    require_acquisition_data: bool = False
    photodiode_tolerance_frames: float = 1.0
    ping_interval_s: float = 5.0
    pixel_lead_s: float = 0.02
