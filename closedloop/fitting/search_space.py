"""What a hyper-parameter search draws from, read from YAML, and the samplers that draw.

A search-space file lists the values of each searched setting (every key optional;
a left-out key keeps the default below)::

    layers: [1, 2, 3]              # conv layers
    filters: [8, 16, 32, 48]       # filters of each layer, drawn per layer
    kernels: [3, 5, 7, 9]          # one kernel side for every layer of a trial
    pooling: [[1, 1], [2, 2], [3, 2]]   # (kernel, stride) after each conv layer
    dense_units: [50, 100, 200, 300, 500]
    dropout_keep: [0.3, 0.9]       # range, uniform
    learning_rate: [1.0e-4, 1.0e-2]  # range, log-uniform

It is checked like every settings file: unknown keys, wrong types and bad ranges are
errors naming the file, line and key.

Samplers: ``random`` (Kindel et al. 2019's random search; trial k's configuration
depends only on the seed and k, so a resumed search draws the same ones) and ``tpe``
(Optuna's Tree-structured Parzen Estimator, which draws where earlier trials scored
well; needs the ``optuna`` package).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.config.schema import ConfigSource, Where, build
from closedloop.config.yaml_loader import load_yaml, read_text
from closedloop.errors import ClosedLoopError
from closedloop.fitting.options import SAMPLERS
from closedloop.model.model_config import ModelConfig

OPTUNA_PIN = "optuna==5.0.0"


@dataclass(frozen=True)
class SearchSpace:
    """Values each trial draws from (uniformly; learning rate log-uniformly).

    Every conv layer of a trial has the same kernel and the filters listed for its
    depth; pooling is (kernel, stride) after each conv layer.
    """

    layers: tuple[int, ...] = (1, 2, 3)
    filters: tuple[int, ...] = (8, 16, 32, 48)
    kernels: tuple[int, ...] = (3, 5, 7, 9)
    pooling: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (3, 2))
    dense_units: tuple[int, ...] = (50, 100, 200, 300, 500)
    dropout_keep: tuple[float, float] = (0.3, 0.9)
    learning_rate: tuple[float, float] = (1e-4, 1e-2)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _listed(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def check(self, where: Where) -> None:
        """Called by the settings builder: every list non-empty, every value in range."""
        for name in ("layers", "filters", "kernels", "pooling", "dense_units"):
            if not getattr(self, name):
                raise where.error(name, "must list at least one value")
        for name in ("layers", "filters", "kernels", "dense_units"):
            for index, value in enumerate(getattr(self, name)):
                if value < 1:
                    raise where.error(f"{name}[{index}]", f"must be >= 1, got {value}")
        for index, (kernel, stride) in enumerate(self.pooling):
            if kernel < 1 or stride < 1:
                raise where.error(f"pooling[{index}]", f"kernel and stride must be >= 1, got [{kernel}, {stride}]")
        low, high = self.dropout_keep
        if not 0 < low <= high <= 1:
            raise where.error("dropout_keep", f"must be [low, high] with 0 < low <= high <= 1, got [{low}, {high}]")
        low, high = self.learning_rate
        if not 0 < low <= high:
            raise where.error("learning_rate", f"must be [low, high] with 0 < low <= high, got [{low}, {high}]")


def _listed(value: Any) -> Any:
    return [_listed(v) for v in value] if isinstance(value, tuple) else value


def load_search_space(path: str | Path) -> SearchSpace:
    """Read and check a search-space YAML (see the module docstring).

    Raises
    ------
    ConfigError
        Unreadable file, bad YAML, unknown key, wrong type or bad range (file:line: key).
    """
    text = read_text(path)
    source = ConfigSource(str(path), text, load_yaml(path, text))
    return build(SearchSpace, source.root, Where(source))


def _fits(config: ModelConfig, input_size: int) -> bool:
    # torch only to check a configuration's size, not to read a search space
    from closedloop.model.networks import build_network

    try:  # deep stacks of large kernels leave nothing of a 33×33 image with 'valid' padding
        build_network(config, 1, 1, input_size)
    except ValueError:
        return False
    return True


def config_from_params(base: ModelConfig, params: dict[str, Any]) -> ModelConfig:
    """A trial's configuration: ``base`` with the searched settings of ``params``.

    One network per trial: a base that blends two ensembles (``partner``) gives up its
    second, whose own settings would override the searched ones in half the model.
    """
    layers = int(params["layers"])
    pool_kernel, pool_stride = params["pooling"]
    return base.replace(
        partner=None,
        architecture="kindel2017",
        core_filters=tuple(int(params[f"filters_{k + 1}"]) for k in range(layers)),
        core_kernels=(int(params["kernel"]),) * layers,
        pool_kernel=int(pool_kernel),
        pool_stride=int(pool_stride),
        dense_units=int(params["dense_units"]),
        dropout_keep=float(params["dropout_keep"]),
        learning_rate=float(params["learning_rate"]),
        seed=None,
    )


def _random_params(space: SearchSpace, rng: np.random.Generator) -> dict[str, Any]:
    layers = int(rng.choice(space.layers))
    params: dict[str, Any] = {"layers": layers}
    for k in range(layers):
        params[f"filters_{k + 1}"] = int(rng.choice(space.filters))
    params["kernel"] = int(rng.choice(space.kernels))
    params["pooling"] = tuple(int(v) for v in space.pooling[int(rng.integers(len(space.pooling)))])
    low, high = np.log(space.learning_rate[0]), np.log(space.learning_rate[1])
    params["dense_units"] = int(rng.choice(space.dense_units))
    params["dropout_keep"] = float(rng.uniform(*space.dropout_keep))
    params["learning_rate"] = float(np.exp(rng.uniform(low, high)))
    return params


def sample_config(
    base: ModelConfig, space: SearchSpace, rng: np.random.Generator, input_size: int, max_tries: int = 100
) -> ModelConfig:
    """Draw a configuration from ``space`` (other fields from ``base``) that fits ``input_size`` images."""
    return sample_params(base, space, rng, input_size, max_tries)[1]


def sample_params(
    base: ModelConfig, space: SearchSpace, rng: np.random.Generator, input_size: int, max_tries: int = 100
) -> tuple[dict[str, Any], ModelConfig]:
    """(params, configuration) of one random draw that fits ``input_size`` images."""
    for _ in range(max_tries):
        params = _random_params(space, rng)
        config = config_from_params(base, params)
        if _fits(config, input_size):
            return params, config
    raise ClosedLoopError(
        f"no configuration in the search space fits {input_size}×{input_size} images "
        f"in {max_tries} draws; allow fewer layers or smaller kernels"
    )


class RandomSampler:
    """Trial k's configuration is the k-th draw of a generator seeded with the search seed."""

    name = "random"

    def __init__(self, base: ModelConfig, space: SearchSpace, seed: int, input_size: int):
        self.base, self.space, self.input_size = base, space, input_size
        self.rng = np.random.default_rng(seed)
        self.drawn = 0

    def next(self, index: int) -> tuple[dict[str, Any], ModelConfig]:
        """Configuration of trial ``index`` (1-based); trials are asked for in order."""
        while self.drawn < index:
            params, config = sample_params(self.base, self.space, self.rng, self.input_size)
            self.drawn += 1
        return params, config

    def tell(self, index: int, params: dict[str, Any], value: float | None) -> None:
        """Random search does not learn from results."""


class TPESampler:
    """Optuna's TPE over the same space; told every finished trial (resumed ones too)."""

    name = "tpe"

    def __init__(self, base: ModelConfig, space: SearchSpace, seed: int, input_size: int):
        optuna = import_optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.base, self.space, self.input_size = base, space, input_size
        self.study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        dist = optuna.distributions
        self.distributions = {
            "layers": dist.CategoricalDistribution(list(space.layers)),
            **{f"filters_{k + 1}": dist.CategoricalDistribution(list(space.filters)) for k in range(max(space.layers))},
            "kernel": dist.CategoricalDistribution(list(space.kernels)),
            "pooling": dist.CategoricalDistribution([f"{k}/{s}" for k, s in space.pooling]),
            "dense_units": dist.CategoricalDistribution(list(space.dense_units)),
            "dropout_keep": dist.FloatDistribution(*space.dropout_keep),
            "learning_rate": dist.FloatDistribution(*space.learning_rate, log=True),
        }
        self.asked: dict[int, Any] = {}

    def next(self, index: int) -> tuple[dict[str, Any], ModelConfig]:
        for _ in range(100):
            trial = self.study.ask(self.distributions)
            params = dict(trial.params)
            params["pooling"] = tuple(int(v) for v in str(params["pooling"]).split("/"))
            config = config_from_params(self.base, params)
            if _fits(config, self.input_size):
                self.asked[index] = trial
                return params, config
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
        raise ClosedLoopError(
            f"no configuration in the search space fits {self.input_size}×{self.input_size} "
            "images in 100 draws; allow fewer layers or smaller kernels"
        )

    def tell(self, index: int, params: dict[str, Any], value: float | None) -> None:
        """Report trial ``index``'s validation r (``None``: failed or pruned)."""
        state = self.optuna.trial.TrialState
        trial = self.asked.pop(index, None)
        if trial is not None:
            if value is None:
                self.study.tell(trial, state=state.PRUNED)
            else:
                self.study.tell(trial, value)
            return
        # A trial finished in an earlier run of this search: add it as history.
        stored = dict(params, pooling="/".join(str(v) for v in params["pooling"]))
        known = {key: self.distributions[key] for key in stored if key in self.distributions}
        self.study.add_trial(
            self.optuna.trial.create_trial(
                params={key: stored[key] for key in known},
                distributions=known,
                value=value,
                state=state.COMPLETE if value is not None else state.PRUNED,
            )
        )


def make_sampler(name: str, base: ModelConfig, space: SearchSpace, seed: int, input_size: int):
    """A `RandomSampler` or `TPESampler`."""
    if name == "random":
        return RandomSampler(base, space, seed, input_size)
    if name == "tpe":
        return TPESampler(base, space, seed, input_size)
    raise ClosedLoopError(f"--sampler {name!r}: choose one of {', '.join(SAMPLERS)}")


def import_optuna():
    """The ``optuna`` module, or a `ClosedLoopError` saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise ClosedLoopError(
            f"--sampler tpe and --pruner need Optuna, which is not installed: pip install '{OPTUNA_PIN}'"
        ) from None
    return optuna
