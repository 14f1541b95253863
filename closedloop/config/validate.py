"""Check a protocol against the rig it will run on, and summarise both.

Each file is checked on its own when it loads; what is left are the rules that need
both: durations in whole frames at the rig's refresh rate, the response window
inside the trial as actually shown, and a stimulus array large enough for the
model's preprocessing.
"""

from __future__ import annotations

from closedloop.config.protocol import Protocol
from closedloop.config.rig import Rig

#: Most memory the natural-image pool may take (images.n × size_px² float32).
MAX_POOL_BYTES = 4 * 1024**3


def validate(rig: Rig, protocol: Protocol | None = None) -> str:
    """Check that ``protocol`` can run on ``rig`` and describe the pair.

    Parameters
    ----------
    rig
        A loaded rig (`closedloop.config.load_rig`).
    protocol
        A loaded protocol, or ``None`` to describe the rig alone.

    Returns
    -------
    str
        A short human summary: rig name, pixels per degree, frames per stimulus,
        total trials and estimated presentation time.

    Raises
    ------
    ConfigError
        Naming the protocol's file, line and field, when a duration cannot be shown
        in whole frames, the response window ends after the trial as shown, or the
        rig's stimulus array is too small for the fit's preprocessing.
    """
    # zmq (the transport) only when validating: the CLI's parser loads the config package
    from closedloop.transport.security import check_rig_keys

    check_rig_keys(rig)  # CURVE on (a non-loopback host, or security: curve) needs the rig's keys
    display, stimulus = rig.display, rig.stimulus
    x, y = stimulus.centre_deg
    lines = [
        f"rig '{rig.name}': {display.width_px}×{display.height_px} px at {display.refresh_hz:g} Hz, "
        f"{display.distance_cm:g} cm, {display.pixels_per_degree:.1f} px/deg; aperture "
        f"{stimulus.aperture_diameter_deg:g}° at ({x:g}, {y:g})°; acquisition {rig.acquisition.kind}; "
        f"device {rig.compute.device}"
    ]
    if protocol is None:
        return lines[0]

    frames = protocol.frames(rig)
    stop = protocol.response.window_ms[1]
    if stop > frames.trial_ms:
        raise protocol.error(
            "response.window_ms",
            f"response window outside the presentation period: it ends at {stop:g} ms but a trial lasts "
            f"{frames.trial_ms:.1f} ms in whole frames at {display.refresh_hz:g} Hz",
        )
    pool_bytes = protocol.images.n * stimulus.size_px**2 * 4
    if pool_bytes > MAX_POOL_BYTES:
        most = MAX_POOL_BYTES // (stimulus.size_px**2 * 4)
        raise protocol.error(
            "images.n",
            f"{protocol.images.n} images of {stimulus.size_px}×{stimulus.size_px} px take "
            f"{pool_bytes / 1024**3:.1f} GiB; at most {most} fit in {MAX_POOL_BYTES // 1024**3} GiB, lower n",
        )
    if protocol.fit is not None:
        needed = protocol.fit.preprocessing.crop * protocol.fit.preprocessing.downsample
        if needed > stimulus.size_px:
            raise protocol.error(
                "fit.preprocessing.crop",
                f"crop {protocol.fit.preprocessing.crop} × downsample {protocol.fit.preprocessing.downsample} "
                f"= {needed} px, but the rig's stimulus.size_px is {stimulus.size_px} ({rig.path}); "
                "lower the crop or raise size_px",
            )

    trials = protocol.total_trials
    seconds = trials * frames.trial_ms / 1000.0
    lines.append(
        f"protocol '{protocol.name}': stimulus {frames.stimulus_frames} frames ({frames.stimulus_ms:.1f} ms), "
        f"blank {frames.blank_frames} frames ({frames.blank_ms:.1f} ms); {trials} trials, about "
        f"{_duration(seconds)} of presentation (fitting and synthesis not included)"
    )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
