"""A protocol's blocks as a flat list of steps, loops unrolled, with seeded trial orders.

Every block of the protocol, and every block of every loop iteration, becomes one
`PlannedStep` with a fixed index.  The index never depends on what happened at run
time, so it names a position in the protocol that survives a crash: the runner
records it with every block it writes and `--resume` continues after the last one.

A loop's ``stop_when_r_above`` is the only run-time decision: `Plan.next_step` skips
the rest of a loop when the newest fit's median held-out r is above the threshold at
the start of an iteration after the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from closedloop.config.blocks import (
    Block,
    FitBlock,
    GratingsBlock,
    LoopBlock,
    NaturalBlock,
    PresentSynthesizedBlock,
    SynthesizeBlock,
)
from closedloop.config.protocol import Protocol


@dataclass(frozen=True)
class PlannedStep:
    """One block to run.

    Attributes
    ----------
    index
        Position in the unrolled protocol (0, 1, …): names the step in logs and records.
    block
        The protocol's block (never a `LoopBlock`).
    where
        Its place in the protocol file, e.g. ``"blocks[2].blocks[0]"``.
    iteration
        Loop iteration (0 outside loops, 1, 2, … inside).
    loop
        Index of the enclosing top-level loop in ``protocol.blocks``, or ``None``.
    first_in_iteration
        True for the first block of a loop iteration (where the stop rule is checked).
    """

    index: int
    block: Block
    where: str
    iteration: int = 0
    loop: int | None = None
    first_in_iteration: bool = False

    @property
    def kind(self) -> str:
        return self.block.kind


class Plan:
    """The unrolled protocol and the stop rule of its loops.

    Parameters
    ----------
    protocol
        The protocol to run.
    """

    def __init__(self, protocol: Protocol):
        self.protocol = protocol
        self.steps: list[PlannedStep] = list(_unroll(protocol.blocks))

    def __len__(self) -> int:
        return len(self.steps)

    def next_step(self, after: int | None, r_median: float | None) -> tuple[PlannedStep | None, list[PlannedStep]]:
        """The step to run after step ``after`` (``None``: from the start), and loop steps skipped.

        ``r_median`` is the newest fit's median held-out r (``None`` before any fit):
        a loop whose ``stop_when_r_above`` it exceeds ends before its next iteration.
        """
        skipped: list[PlannedStep] = []
        index = 0 if after is None else after + 1
        while index < len(self.steps):
            step = self.steps[index]
            if step.first_in_iteration and step.iteration > 1 and self._stop_loop(step, r_median):
                rest = [s for s in self.steps[index:] if s.loop == step.loop]
                skipped += rest
                index += len(rest)
                continue
            return step, skipped
        return None, skipped

    def next_present_repeats(self, after: int) -> int:
        """Repeats of the first ``present_synthesized`` after step ``after`` in the same loop (else 1)."""
        current = self.steps[after]
        for step in self.steps[after + 1 :]:
            if step.loop != current.loop or step.iteration != current.iteration:
                break
            if isinstance(step.block, PresentSynthesizedBlock):
                return step.block.repeats
        return 1

    def _stop_loop(self, step: PlannedStep, r_median: float | None) -> bool:
        if step.loop is None:  # not in a loop: no stop rule
            return False
        loop = self.protocol.blocks[step.loop]
        threshold = getattr(loop, "stop_when_r_above", None)
        return threshold is not None and r_median is not None and np.isfinite(r_median) and r_median > threshold


def _unroll(blocks: Sequence[Block]):
    index = 0
    for top, block in enumerate(blocks):
        if isinstance(block, LoopBlock):
            for iteration in range(1, block.iterations + 1):
                for inner, child in enumerate(block.blocks):
                    yield PlannedStep(index, child, f"blocks[{top}].blocks[{inner}]", iteration, top, inner == 0)
                    index += 1
        else:
            yield PlannedStep(index, block, f"blocks[{top}]")
            index += 1


def trial_order(stimulus_ids: Sequence[int] | np.ndarray, repeats: int, seed: int, step_index: int) -> np.ndarray:
    """Every stimulus ``repeats`` times, shuffled with a seed from (protocol seed, step index).

    The order is a function of the protocol and the step alone, so a resumed session
    shows a block exactly as the interrupted one would have.
    """
    ids = np.repeat(np.asarray(stimulus_ids, dtype=np.int64), int(repeats))
    rng = np.random.default_rng([int(seed), int(step_index)])
    return ids[rng.permutation(ids.size)]


PRESENTATION_KINDS = (NaturalBlock, GratingsBlock, PresentSynthesizedBlock)
MODEL_KINDS = (FitBlock, SynthesizeBlock)
