"""Deterministic session content, and a writer process for the crash/SWMR tests.

Run as a script: ``python session_child.py MODE PATH``.

- ``blocks``  : write blocks forever (one every ~20 ms), printing each committed index.
- ``partial`` : write N_FULL blocks, then half a block (flushed, not committed),
                print "partial" and SIGKILL itself.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

UNIT_IDS = np.array([11, 12, 13, 20], dtype=np.int64)
CHANNELS = np.array([1, 1, 2, 5])
SHAPE = (24, 24)
WINDOW = (0.05, 0.10)
N_STIMULI = 6
N_FULL = 3


def session_kwargs() -> dict:
    return dict(
        session_id="crash-test",
        unit_ids=UNIT_IDS,
        channels=CHANNELS,
        stimulus_shape=SHAPE,
        response_window_s=WINDOW,
        rig_yaml="rig:\n  name: test\n",
        protocol_yaml="blocks: 3\n",
        seeds={"session": 7},
    )


def stimulus_pixels() -> np.ndarray:
    return np.random.default_rng(1).random((N_STIMULI, *SHAPE)).astype(np.float32)


def block_content(index: int) -> dict:
    """The append_block arguments of block ``index`` (the same in every process)."""
    rng = np.random.default_rng(100 + index)
    stimulus_ids = rng.permutation(N_STIMULI)
    onsets = index * 10.0 + 0.5 * np.arange(N_STIMULI)
    n_spikes = 400
    return dict(
        stimulus_ids=stimulus_ids,
        onsets_s=onsets,
        flip_s=onsets - 0.013,
        n_frames=np.full(N_STIMULI, 6),
        dropped_frames=rng.integers(0, 2, N_STIMULI),
        spike_unit_ids=rng.choice(UNIT_IDS, n_spikes),
        spike_times_s=np.sort(rng.uniform(index * 10.0, index * 10.0 + 3.5, n_spikes)),
        sync_times_s=onsets,
        sync_lines=np.ones(N_STIMULI, dtype=np.int32),
        sync_states=np.ones(N_STIMULI, dtype=np.int8),
    )


def main(mode: str, path: str) -> None:
    from closedloop.data.session import SessionWriter
    from closedloop.data.session_format import append_rows

    writer = SessionWriter(path, **session_kwargs())
    writer.add_stimuli(stimulus_pixels(), "natural")
    if mode == "blocks":
        index = 0
        while True:
            writer.append_block("natural", **block_content(index))
            print(index, flush=True)
            index += 1
            time.sleep(0.02)
    for index in range(N_FULL):
        writer.append_block("natural", **block_content(index))
    # Half of the next block: trials and spikes on disk, the block never committed.
    content = block_content(N_FULL)
    file = writer._file
    append_rows(file["trials/stimulus_id"], content["stimulus_ids"])
    append_rows(file["trials/onset_s"], content["onsets_s"])
    append_rows(file["spikes/unit_id"], content["spike_unit_ids"])
    append_rows(file["spikes/time_s"], content["spike_times_s"])
    file.flush()
    print("partial", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
