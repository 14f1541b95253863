"""Training settings that differ between the members of one fused network.

A fused network (`closedloop.model.trainer`) trains all its members in one batched
step.  When the members come from different search trials of one network shape
(`closedloop.model.multi_trial`), their hyper-parameters differ, and each must act on
its own members only: the Adam step size and coupled L2 decay (`Trainer`), the
dropout keep probability (`DenseReadout`), the L1 strength (`FactorisedReadout`), and
when a member stops (its own patience and epoch limit).  Everything else fixes the
network's shape or the shared data, and must be equal (`fusion_key`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from closedloop.model.model_config import ModelConfig
from closedloop.model.readouts import DenseReadout, FactorisedReadout

#: `ModelConfig` fields that may differ between trials trained as one fused network.
PER_MEMBER_FIELDS = ("learning_rate", "weight_decay", "l1_readout", "dropout_keep", "max_epochs", "patience", "seed")


def fusion_key(config: ModelConfig) -> tuple | None:
    """What trials must share to train as one fused network; ``None`` when ``config`` cannot fuse.

    Every field but `PER_MEMBER_FIELDS`, so a setting added to `ModelConfig` later
    separates trials until it is made per member.  Not fused: the linear model (closed
    form), z-scored inputs (every member of a fused network sees one input scaling) and
    blends of two ensembles (`ModelConfig.partner`).
    """
    if config.architecture == "linear" or config.input_normalisation == "zscore" or config.partner is not None:
        return None
    fields = config.to_dict()
    return tuple(
        (name, tuple(value) if isinstance(value, list) else value)
        for name, value in sorted(fields.items())
        if name not in PER_MEMBER_FIELDS
    )


@dataclass(frozen=True)
class MemberSettings:
    """Per-member values, each (n_members,), members in the fused network's order."""

    learning_rate: np.ndarray
    weight_decay: np.ndarray
    l1_readout: np.ndarray
    dropout_keep: np.ndarray
    max_epochs: np.ndarray
    patience: np.ndarray

    @classmethod
    def of_configs(cls, configs: list[ModelConfig], members_each: int) -> MemberSettings:
        """Settings of ``members_each`` consecutive members per configuration."""

        def column(name: str, dtype: type) -> np.ndarray:
            return np.repeat(np.array([getattr(c, name) for c in configs], dtype=dtype), members_each)

        return cls(
            learning_rate=column("learning_rate", np.float64),
            weight_decay=column("weight_decay", np.float64),
            l1_readout=column("l1_readout", np.float64),
            dropout_keep=column("dropout_keep", np.float64),
            max_epochs=column("max_epochs", np.int64),
            patience=column("patience", np.int64),
        )

    def tensors(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The trainer's settings on ``device`` (float32 rates, int64 epoch counts)."""
        return {
            "learning_rate": torch.as_tensor(self.learning_rate, dtype=torch.float32, device=device),
            "weight_decay": torch.as_tensor(self.weight_decay, dtype=torch.float32, device=device),
            "max_epochs": torch.as_tensor(self.max_epochs, dtype=torch.long, device=device),
            "patience": torch.as_tensor(self.patience, dtype=torch.long, device=device),
        }

    def apply_to(self, network: nn.Module, device: torch.device) -> None:
        """Give ``network``'s readout its per-member dropout or L1 (after it moved to ``device``)."""
        readout = getattr(network, "readout", None)
        if isinstance(readout, DenseReadout):
            readout.member_keep = torch.as_tensor(self.dropout_keep, dtype=torch.float32, device=device)
        elif isinstance(readout, FactorisedReadout):
            readout.member_l1 = torch.as_tensor(self.l1_readout, dtype=torch.float32, device=device)
