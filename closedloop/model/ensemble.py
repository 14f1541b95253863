"""Ensembles: several networks whose mean prediction is the model (docs/methods.md, Synthesis).

An ensemble is represented as *one* network with ``n_members > 1``: every parameter
and buffer has the member on its leading axis, and a forward pass evaluates all
members in grouped convolutions and batched matrix products, so N members cost about
the kernel launches of one.  ``forward`` returns the members' mean.

Members can be trained together in that fused form, or independently and then stacked
(`stack_members`); either way member ``k`` is initialised from seed ``k`` of
`closedloop.model.networks.member_seeds`, so a fused and an independent fit start from
identical weights.
"""

from __future__ import annotations

import torch

from closedloop.model.model_config import ModelConfig
from closedloop.model.networks import Network, build_network


def rebuild_network(spec: dict) -> Network:
    """An untrained network with the structure recorded in ``model.build_spec``."""
    return build_network(ModelConfig.from_dict(spec["config"]), spec["n_units"], spec["n_members"], spec["input_size"])


def stack_members(models: list[Network]) -> Network:
    """One fused network holding every member of ``models`` (in order).

    All models must have been built by `build_network` with the same configuration,
    unit count and input size (member counts may differ).  The result lives on the
    first model's device.
    """
    if not models:
        raise ValueError("stack_members needs at least one model")
    specs = [model.build_spec for model in models]
    first = specs[0]
    for spec in specs[1:]:
        if member_structure(spec) != member_structure(first):
            raise ValueError("cannot stack networks of different architectures, unit counts or input sizes")
    fused_spec = dict(first, n_members=sum(spec["n_members"] for spec in specs))
    fused = rebuild_network(fused_spec)
    states = [model.state_dict() for model in models]
    stacked = {key: torch.cat([state[key].detach() for state in states], dim=0) for key in states[0]}
    fused.load_state_dict(stacked)
    device = next(iter(states[0].values())).device
    return fused.to(device).train(models[0].training)


def member_structure(spec: dict) -> tuple:
    """What must agree for members to be stacked (``build_spec``); seeds and training settings may differ."""
    config = ModelConfig.from_dict(spec["config"])
    shape = (
        config.architecture,
        config.core_filters,
        config.core_kernels,
        config.pool_kernel,
        config.pool_stride,
        config.padding,
        config.pool_layers,
        config.batch_norm,
        config.core_normalisation,
        config.gabor_bank,
        config.gabor_wavelengths,
        config.dense_units,
        config.output_nonlinearity,
        config.output_knots,
        config.output_tail,
        config.contrast_gain,
        config.partner,
    )
    return shape, spec["n_units"], spec["input_size"]


def unstack_members(model: Network) -> list[Network]:
    """Each member of a fused network as a network of its own (copies of the weights)."""
    spec = model.build_spec
    state = model.state_dict()
    members = []
    for member in range(spec["n_members"]):
        single = rebuild_network(dict(spec, n_members=1))
        single.load_state_dict({key: value[member : member + 1].clone() for key, value in state.items()})
        members.append(single.to(next(iter(state.values())).device).train(model.training))
    return members
