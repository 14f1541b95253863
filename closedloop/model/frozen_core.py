"""A core learned elsewhere, kept fixed while a new session's readouts are fitted on top of it.

A core fitted to many units (`closedloop.model.shared_core`: several sessions of one image
set) has learned features that a new session's few units could not learn alone.  A fit
"from a core" copies that core into every member (member k takes the core of the source's
member k, cycling when the new ensemble is larger) with its input statistics and trains
only what is per unit: readouts, output nonlinearities.  The core's batch normalisation
keeps the statistics it was trained with.
"""

from __future__ import annotations

import torch

from closedloop.errors import ClosedLoopError
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


def load_core(path: str, config: ModelConfig, input_size: int) -> CoreReadoutNetwork:
    """The network of the model file at ``path``, checked to hold a core ``config`` can use.

    Raises
    ------
    DataFileError
        Missing, damaged or foreign file.
    ClosedLoopError
        Not a CNN, or a core unlike ``config``'s (`check_core_source`).
    """
    from closedloop.model.checkpoint import load_checkpoint  # it imports the training code, which imports this

    model = load_checkpoint(path, "cpu").model  # a DataFileError names the file itself
    try:
        return check_core_source(model, config, input_size)
    except ClosedLoopError as error:
        raise ClosedLoopError(f"core_from {path}: {error}") from None


def core_state(source: CoreReadoutNetwork, members: list[int]) -> dict[str, torch.Tensor]:
    """The core's parameters and buffers (and input statistics) for ``members`` of a new network."""
    index = torch.as_tensor([member % source.n_members for member in members])
    state = source.state_dict()
    return {
        key: value.detach().index_select(0, index.to(value.device)).clone()
        for key, value in state.items()
        if key.startswith("core.") and value.dim() > 0 or key in _INPUT_STATISTICS
    }


def install_frozen_core(network: CoreReadoutNetwork, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` (`core_state`) into ``network`` and keep its core from training."""
    missing = [key for key in network.state_dict() if key.startswith("core.") and key not in state]
    if any(network.state_dict()[key].dim() > 0 for key in missing):
        raise ClosedLoopError("the core to start from lacks some of this network's core weights")
    network.load_state_dict(state, strict=False)
    network.core.requires_grad_(False)
    network.core_frozen = True
