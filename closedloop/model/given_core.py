"""A core learned elsewhere that a new session's fit starts from: trained on, or kept fixed.

A core fitted to many images and units (`closedloop.model.shared_core`: several earlier
sessions) has learned features that a new session's few images could not teach it alone.
A fit "from a core" copies that core into every member (member k takes the core of the
source's member k, cycling when the new ensemble is larger) with its input statistics.
By default the core then trains on with the rest (a warm start of the core alone: on
simulated sessions this was never worse than a session's own core and better with few
images, benchmarks/shared_core.py).  Fixed, it trains only what is per unit — readouts,
output nonlinearities — and the core's batch normalisation keeps its statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from closedloop.errors import ClosedLoopError
from closedloop.model.blend import BlendedNetwork
from closedloop.model.model_config import ModelConfig
from closedloop.model.networks import CoreReadoutNetwork

#: `ModelConfig` fields that fix a core's weights' shapes and meaning.
CORE_FIELDS = (
    "architecture",
    "core_filters",
    "core_kernels",
    "pool_kernel",
    "pool_stride",
    "padding",
    "pool_layers",
    "batch_norm",
    "input_normalisation",
    "core_normalisation",
    "gabor_bank",
    "gabor_wavelengths",
)
#: State entries outside ``core.`` that belong with a core: how it scales its input pixels.
_INPUT_STATISTICS = ("input_shift", "input_scale")


def check_core_source(source: torch.nn.Module, config: ModelConfig, input_size: int) -> CoreReadoutNetwork:
    """``source`` as a network whose core fits ``config`` on ``input_size`` images, or a clear error.

    Raises
    ------
    ClosedLoopError
        ``source`` is not a CNN, or its core differs (the first differing field is named).
    """
    if isinstance(source, BlendedNetwork):
        raise ClosedLoopError(
            "the model to take a core from blends two networks with different cores; take it from a "
            "single-network fit (e.g. preset gabor-wide)"
        )
    if not isinstance(source, CoreReadoutNetwork):
        raise ClosedLoopError("the model to take a core from is not a CNN (the linear model has no core)")
    source_config = ModelConfig.from_dict(source.build_spec["config"])
    for name in CORE_FIELDS:
        if getattr(source_config, name) != getattr(config, name):
            raise ClosedLoopError(
                f"the core was fitted with {name} {getattr(source_config, name)!r}, this fit asks for "
                f"{getattr(config, name)!r}; fit with the core's own configuration"
            )
    if int(source.build_spec["input_size"]) != input_size:
        raise ClosedLoopError(
            f"the core was fitted on {source.build_spec['input_size']}-pixel images, these are {input_size} "
            "pixels; preprocess them the same way"
        )
    return source


@dataclass(frozen=True)
class StartingCore:
    """A core for some members of a new network: its weights, and whether they stay as they are."""

    state: dict[str, torch.Tensor]
    fixed: bool = True


def starting_core(source: CoreReadoutNetwork, members: list[int], fixed: bool = False) -> StartingCore:
    """The core's parameters and buffers (and input statistics) for ``members`` of a new network."""
    index = torch.as_tensor([member % source.n_members for member in members])
    state = source.state_dict()
    return StartingCore(
        {
            key: value.detach().index_select(0, index.to(value.device)).clone()
            for key, value in state.items()
            if key.startswith("core.") and value.dim() > 0 or key in _INPUT_STATISTICS
        },
        fixed=fixed,
    )


def install_core(network: CoreReadoutNetwork, core: StartingCore) -> None:
    """Load ``core`` into ``network``; a fixed one gets no gradient and stays in eval mode."""
    missing = [key for key in network.state_dict() if key.startswith("core.") and key not in core.state]
    if any(network.state_dict()[key].dim() > 0 for key in missing):
        raise ClosedLoopError("the core to start from lacks some of this network's core weights")
    network.load_state_dict(core.state, strict=False)
    if core.fixed:
        network.core.requires_grad_(False)
        network.core_frozen = True
