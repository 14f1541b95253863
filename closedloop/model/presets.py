"""Named model configurations: the paper's network and the one fits use by default.

``"kindel2017"``
    Kindel et al. (2019), Table 1, exactly (`ModelConfig` defaults, one network).
``"recommended"``
    What closes most of the gap to the ceiling on simulated V1 (`RECOMMENDED_NOTES`):
    the same conv kernels with batch norm, max-pooling only after the first layer, the
    factorised readout of Klindt et al. (2017) with an L1 penalty, trained with the
    paper's Eq. 1 loss, and an ensemble whose members' predictions are averaged.

``DEFAULT_PRESET`` names the preset `closedloop fit` uses when no model is given.
"""

from __future__ import annotations

from closedloop.errors import ConfigError
from closedloop.model.model_config import ModelConfig

KINDEL2017 = ModelConfig()

RECOMMENDED = ModelConfig(
    architecture="factorised",
    core_filters=(16, 32),
    core_kernels=(7, 7),
    pool_layers=(1,),
    batch_norm=True,
    l1_readout=0.01,
    learning_rate=3e-3,
    ensemble_size=5,
)

PRESETS: dict[str, ModelConfig] = {"kindel2017": KINDEL2017, "recommended": RECOMMENDED}

DEFAULT_PRESET = "recommended"

#: Measured on simulated sessions (sim/default.yaml, 40 units, 270 images × 20 repeats, seeds 1–3, 54
#: held-out images), mean r/rmax over reliable units (mean ± sd over sessions); CPU fit times on 2 cores.
RECOMMENDED_NOTES = (
    "kindel2017: 0.745 ± 0.006 (~5 s); recommended: 0.832 ± 0.012 (5 members, ~20 s; one member 0.77); "
    "linear baseline: 0.328 ± 0.027; ground truth: 0.99"
)


def preset(name: str) -> ModelConfig:
    """The `ModelConfig` registered under ``name`` (see `PRESETS`).

    Raises
    ------
    ConfigError
        Unknown name; the message lists the known ones.
    """
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            "model presets", None, "preset", f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}"
        ) from None
