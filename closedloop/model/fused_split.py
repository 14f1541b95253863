"""A fused training split back into the fits it stands for (sessions or search trials).

A fused network holds several fits' members side by side (`closedloop.model.multi_session`,
`closedloop.model.multi_trial`).  Each fit gets its own network (its members, its own
units), its history cut where its own training would have stopped, and the `FitResult`
that `fit_model` would have returned for it.
"""

from __future__ import annotations

import numpy as np
import torch

from closedloop.model.model_config import ModelConfig
from closedloop.model.networks import build_network
from closedloop.model.train import FitResult, PreparedFit


def member_block_result(
    prep: PreparedFit,
    fused: torch.nn.Module,
    members: slice,
    history: dict[str, np.ndarray],
    best_epoch: np.ndarray,
    seconds: float,
    device: torch.device,
    described: str,
) -> FitResult:
    """The result of the fit ``prep`` whose members are ``members`` of the trained ``fused`` network.

    Parameters
    ----------
    prep
        The fit's preparation (its own configuration, units and seeds).
    fused
        The trained fused network (best weights restored).
    members
        Where the fit's members sit in ``fused``.
    history
        The fused training's histories, (epochs, all members).
    best_epoch
        (all members,) kept epochs.
    seconds, device, described
        The fused training's wall time, device and `describe_device` text.
    """
    config = prep.config
    single = build_network(config, len(prep.kept), config.ensemble_size, prep.images.shape[1])
    single.load_state_dict(extract_members(fused.state_dict(), single.state_dict(), members))
    single.to(device)
    kept_epochs = best_epoch[members]
    epochs_run = epochs_alone(kept_epochs, config)
    own = {key: history[key][:epochs_run, members] for key in ("train_loss", "stop_loss")}
    if "refit_loss" in history:
        own["refit_loss"] = history["refit_loss"][: int(kept_epochs.max()) + 1, members]
    return prep.result(single, own, kept_epochs, epochs_run, seconds, described)


def extract_members(fused: dict[str, torch.Tensor], like: dict[str, torch.Tensor], members: slice) -> dict:
    """One fit's state out of the fused state: its members, its own units (``like``'s shapes)."""
    return {key: fused[key][members][tuple(slice(0, n) for n in value.shape)].clone() for key, value in like.items()}


def epochs_alone(best_epoch: np.ndarray, config: ModelConfig) -> int:
    """Epochs the fit's own training would have run: to the first stopping check after all its
    members' patience ran out (`Trainer.run`), or every epoch."""
    last_needed = int(np.max(best_epoch)) + config.patience  # 0-based epoch at which the last member is done
    for index in range(last_needed, config.max_epochs):
        if (index + 1) % config.stop_check_every == 0 or index == config.max_epochs - 1:
            return index + 1
    return config.max_epochs
