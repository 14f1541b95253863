"""Which clock each block's trial onsets are on, for the NWB export.

An NWB file has one time reference; ours is the acquisition clock.  A good block's
onsets are photodiode edges on that clock.  A flagged block (photodiode mismatch)
has onsets the runner estimated: flip times moved onto the acquisition clock with a
known clock offset or the first edge (kept, and said so), or, when nothing tied the
two clocks, the presenter's own flip times, which are on another clock and are left
out of the NWB trials (the reason is in the blocks table and the file's notes).

The runner's journal (``NAME.runner.jsonl`` beside the session) says how each block's
onsets were made.  Without it, a flagged block whose onsets fall outside the span of
everything acquisition recorded is taken to be on the presenter clock.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from closedloop.errors import ClosedLoopError
from closedloop.runner.journal import read_records

ACQUISITION, ESTIMATED, PRESENTER = "photodiode", "estimated", "presenter clock"
#: Onsets this far outside the recorded acquisition data cannot be on its clock.
SPAN_MARGIN_S = 10.0


def block_clocks(
    session_path: Path, journal_name: object, blocks: np.ndarray, trials: np.ndarray, data_times: np.ndarray
) -> list[str]:
    """For each block: how its onsets were made (``photodiode``, ``estimated: ...`` or ``presenter clock ...``).

    Parameters
    ----------
    session_path
        The session file (its journal is looked for beside it).
    journal_name
        ``metadata['runner']['journal']`` (None when the session was not written by the runner).
    blocks, trials
        The session's block and trial tables.
    data_times
        Every spike and sync time of the session (acquisition clock).
    """
    recorded = _journal_onsets(session_path, journal_name)
    lo, hi = (float(data_times.min()), float(data_times.max())) if data_times.size else (np.nan, np.nan)
    clocks = []
    for block in blocks:
        how = recorded.get(int(block["index"]), "")
        if not block["flagged"]:
            clocks.append(how or ACQUISITION)
        elif how:
            clocks.append(f"{PRESENTER}: {how}" if "no clock offset" in how else how)
        else:
            onsets = trials["onset_s"][int(block["trial_start"]) : int(block["trial_stop"])]
            outside = (
                onsets.size
                and data_times.size
                and (onsets.min() < lo - SPAN_MARGIN_S or onsets.max() > hi + SPAN_MARGIN_S)
            )
            clocks.append(
                f"{PRESENTER}: onsets outside the span of the recorded acquisition data"
                if outside
                else f"{ESTIMATED}: flagged block, onsets as stored"
            )
    return clocks


def on_acquisition_clock(clock: str) -> bool:
    """False for a block whose onsets are on the presenter's clock."""
    return not clock.startswith(PRESENTER)


def _journal_onsets(session_path: Path, journal_name: object) -> dict[int, str]:
    """{session block: how its onsets were made} from the runner's journal; {} when there is none."""
    if not isinstance(journal_name, str) or not journal_name or "/" in journal_name:
        return {}
    path = session_path.with_name(journal_name)
    if not path.is_file():
        return {}
    try:
        records = read_records(path)
    except (ClosedLoopError, OSError, ValueError):
        return {}
    # a resumed block's record comes after, and replaces, the one it was written over
    return {r.session_block: r.onsets for r in records if r.onsets}
