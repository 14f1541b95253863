"""Tiny model configurations the fitting tests share (imported as a plain module, like conftest)."""

from __future__ import annotations

from closedloop.model.model_config import ModelConfig

# The recommended preset's ingredients, tiny: batch norm, factorised readout with L1, output
# nonlinearity, rotating stop sets, 2 members; no dropout (a fused batch draws it differently).
TINY_RECOMMENDED = ModelConfig(
    architecture="factorised",
    core_filters=(4, 4),
    core_kernels=(5, 5),
    pool_layers=(1,),
    batch_norm=True,
    output_knots=4,
    l1_readout=0.01,
    learning_rate=3e-3,
    max_epochs=12,
    patience=4,
    stop_check_every=3,
    stop_sets="rotating",
    ensemble_size=2,
)
