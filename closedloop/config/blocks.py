"""The blocks of a protocol: what is shown, fitted and synthesized, in order.

Each block kind is a small frozen dataclass told apart by its ``kind`` key.
`check_block_order` makes sure every block has what it needs before it runs (a fit
needs responses, a synthesis needs a fit, presenting synthesized images needs a
synthesis), and `count_trials` gives the number of presentations a list of blocks
asks for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from closedloop.config.schema import Where, setting

# Presentations in one repeat of each grating set: the pvc-8 layout (docs/methods.md, Outside formats),
# which the grating generator reproduces.  orientation: 16 orientations × 4 phases;
# sf: 8 spatial frequencies × 4 orientations × 4 phases; size: 7 radii × disc/annulus
# × 4 orientations × 4 phases.
GRATING_SET_SIZES = {"orientation": 64, "sf": 128, "size": 224}


@dataclass(frozen=True, kw_only=True)
class NaturalBlock:
    """Natural images (``images`` of them, or ``"all"`` of ``images.n``), each ``repeats`` times."""

    kind: Literal["natural"] = "natural"
    images: int | Literal["all"] = setting("all", ge=1, le=100_000)
    repeats: int = setting(ge=1, le=10_000)


@dataclass(frozen=True, kw_only=True)
class GratingsBlock:
    """A grating set (``orientation``, ``sf`` or ``size``), each grating ``repeats`` times."""

    kind: Literal["gratings"] = "gratings"
    set: Literal["orientation", "sf", "size"]
    repeats: int = setting(ge=1, le=10_000)


@dataclass(frozen=True, kw_only=True)
class FitBlock:
    """Refit the model on every response recorded so far, with the protocol's ``fit`` settings."""

    kind: Literal["fit"] = "fit"


@dataclass(frozen=True, kw_only=True)
class SynthesizeBlock:
    """Synthesize images for the protocol's ``synthesis`` units and targets from the newest model."""

    kind: Literal["synthesize"] = "synthesize"


@dataclass(frozen=True, kw_only=True)
class PresentSynthesizedBlock:
    """Show the images of the most recent synthesize block, each ``repeats`` times."""

    kind: Literal["present_synthesized"] = "present_synthesized"
    repeats: int = setting(ge=1, le=10_000)


@dataclass(frozen=True, kw_only=True)
class LoopBlock:
    """Run ``blocks`` up to ``iterations`` times.

    With ``stop_when_r_above`` set, the loop ends early once the median held-out
    Pearson r over units of the newest fit exceeds it.
    """

    kind: Literal["loop"] = "loop"
    iterations: int = setting(ge=1, le=1000)
    stop_when_r_above: float | None = setting(None, gt=-1, lt=1)
    blocks: tuple[Block, ...]

    def check(self, where: Where) -> None:
        if not self.blocks:
            raise where.error("blocks", "a loop needs at least one block")
        for index, block in enumerate(self.blocks):
            if isinstance(block, LoopBlock):
                raise where.error(f"blocks[{index}].kind", "loops cannot be nested; flatten the inner loop")
        if self.stop_when_r_above is not None and not any(isinstance(b, FitBlock) for b in self.blocks):
            raise where.error("stop_when_r_above", "needs a fit block inside the loop to update r")


Block = NaturalBlock | GratingsBlock | FitBlock | SynthesizeBlock | PresentSynthesizedBlock | LoopBlock


def check_block_order(blocks: tuple[Block, ...], where: Where, n_images: int) -> None:
    """Raise if a block comes before what it needs, or asks for more images than exist.

    A loop body is checked as its first iteration runs, so a ``present_synthesized``
    must follow a ``synthesize`` earlier in the loop or before the loop.
    """
    if not blocks:
        raise where.error("blocks", "the protocol has no blocks; add at least one")
    state = {"responses": False, "fit": False, "synthesized": False}
    _walk(blocks, where, "blocks", n_images, state)


def _walk(blocks: tuple[Block, ...], where: Where, prefix: str, n_images: int, state: dict[str, bool]) -> None:
    for index, block in enumerate(blocks):
        name = f"{prefix}[{index}]"
        if isinstance(block, NaturalBlock):
            if block.images != "all" and block.images > n_images:
                raise where.error(
                    f"{name}.images", f"asks for {block.images} images but images.n is {n_images}; lower it or raise n"
                )
            state["responses"] = True
        elif isinstance(block, PresentSynthesizedBlock):
            if not state["synthesized"]:
                raise where.error(
                    f"{name}.kind",
                    "present_synthesized needs synthesized images; put a synthesize block before it "
                    "(earlier in the same loop or before the loop)",
                )
            state["responses"] = True
        elif isinstance(block, FitBlock):
            if not state["responses"]:
                raise where.error(f"{name}.kind", "fit needs recorded responses; put a natural block before it")
            state["fit"] = True
        elif isinstance(block, SynthesizeBlock):
            if not state["fit"]:
                raise where.error(f"{name}.kind", "synthesize needs a fitted model; put a fit block before it")
            state["synthesized"] = True
        elif isinstance(block, LoopBlock):
            _walk(block.blocks, where, f"{name}.blocks", n_images, state)


def count_trials(blocks: tuple[Block, ...], n_images: int, n_synthesized: int) -> int:
    """Presentations asked for, counting every loop iteration (an early stop shows fewer).

    Parameters
    ----------
    blocks
        The blocks.
    n_images
        Natural images available (``images.n``), used for ``images: all``.
    n_synthesized
        Images one synthesize block produces.
    """
    total = 0
    for block in blocks:
        if isinstance(block, NaturalBlock):
            total += (n_images if block.images == "all" else block.images) * block.repeats
        elif isinstance(block, GratingsBlock):
            total += GRATING_SET_SIZES[block.set] * block.repeats
        elif isinstance(block, PresentSynthesizedBlock):
            total += n_synthesized * block.repeats
        elif isinstance(block, LoopBlock):
            total += block.iterations * count_trials(block.blocks, n_images, n_synthesized)
    return total
