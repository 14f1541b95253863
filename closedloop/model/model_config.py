"""`ModelConfig`: everything that defines a model and how it is fitted.

It round-trips through plain dicts (`to_dict` / `from_dict`) so it can live in a YAML
file, a checkpoint or a message.  Bad values raise `ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from closedloop.errors import ConfigError

ARCHITECTURES = ("kindel2017", "factorised", "linear")
ENSEMBLE_MODES = ("auto", "fused", "independent")
STOP_SETS = ("shared", "rotating")
STOP_METRICS = ("loss", "correlation")
LOSS_WEIGHTS = ("none", "rate")
OUTPUT_NONLINEARITIES = ("softplus", "none")
OUTPUT_TAILS = ("learned", "identity", "flat")
PADDINGS = ("valid", "same")
INPUT_NORMALISATIONS = ("none", "zscore")
CORE_NORMALISATIONS = ("none", "divisive")
#: Noise this strong (times a pixel's spread over the images) would swamp the images themselves.
MAX_INPUT_NOISE = 2.0
#: The Gabor bank's wavelengths (input pixels) by default, and in models saved before they were a setting.
GABOR_WAVELENGTHS = (4.0, 6.0, 9.0, 13.5)
LEGACY_GABOR_WAVELENGTHS = (4.0, 6.0, 9.0)
#: Shortest and longest bank wavelength: two pixels is the finest grating a pixel grid carries; a
#: wavelength much above the 33-px input's side has no cycle to see.
GABOR_WAVELENGTH_RANGE = (2.0, 40.0)

_DEFAULT_RIDGE_ALPHAS = tuple(10.0**e for e in range(-4, 5))


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and training settings (defaults: Kindel et al. 2019, Table 1).

    Attributes
    ----------
    architecture
        ``"kindel2017"`` (conv core + dense readout), ``"factorised"`` (conv core +
        Klindt et al. 2017 readout) or ``"linear"`` (ridge regression on pixels, the
        paper's baseline).
    core_filters, core_kernels
        Filters and kernel side of each conv layer (same length).
    pool_kernel, pool_stride
        Max-pooling after every conv layer (1, 1 = none).
    padding
        ``"valid"`` (default, ~3× faster on CPU) or ``"same"`` (see `ConvCore`).
    pool_layers
        1-based core layers followed by max-pooling; ``None`` (default, Table 1) = all.
    batch_norm
        Batch normalisation after every conv layer (per member; running statistics are
        restored with the best epoch's weights).
    input_normalisation
        ``"none"`` (default, pixels in [0, 1] as the paper) or ``"zscore"`` (training
        images' pixel mean and std).
    core_normalisation
        ``"none"`` (default) or ``"divisive"``: the first conv layer's rectified,
        max-pooled channels are divided by a learned non-negative mix of all its channels' local mean
        activity (`closedloop.model.divisive`), so the core's output grows less than in
        proportion to contrast, as V1's does.
    gabor_bank
        False (default): the readout sees the learned core's channels only.  True: also a
        fixed bank of Gabor quadrature pairs (``gabor_wavelengths`` × 8 orientations; each
        pair's energy and four half-wave rectified phases, divisively normalised,
        `closedloop.model.gabor_bank`) sampled at the core's grid positions, so units that
        are well described as simple or complex cells need not wait for the core to learn
        such filters from a few hundred images.
    gabor_wavelengths
        The bank's carrier wavelengths in input pixels (default 4, 6, 9 and 13.5: 8–27
        display pixels, about 1.8–6 cycles/degree on the simulated rig).  Models saved
        before this setting existed had 4, 6 and 9 and load with them.
    dense_units, dropout_keep
        Dense readout hidden width and the probability of *keeping* a hidden unit.
    output_nonlinearity
        ``"softplus"`` (default, non-negative rates) or ``"none"`` (the paper's linear
        output).
    output_knots
        0 (default, Table 1): each unit's rate is an affine map of its readout value.
        N > 0: first a learned per-unit piecewise-linear function of the readout value
        with N hinges (`UnitNonlinearity`), starting as the identity; it lets a unit's
        rate grow faster than linearly with its drive (V1's expansive power law).
    output_tail
        Above the last hinge (3 standard deviations above the unit's mean drive, where
        few natural images reach): ``"learned"`` (default, as saved models before it)
        goes on with the slope learned at the hinge, so an expansive unit's rate keeps
        accelerating; ``"identity"`` adds no further bend (slope 1, the affine map's);
        ``"flat"`` stops there, or once fitted at the highest drive of the member's training
        images where that is lower: no drive beyond the data raises the rate, so a unit
        is never promised more than the data range supports (it under-promises units
        that truly keep rising).  Images synthesized to drive a unit as hard as possible
        land there, and a learned expansive tail promised them rates the units did not
        reach; so did the stretch between a saturating unit's data and the last hinge.
    contrast_gain
        False (default): a unit's readout sees local features only.  True: each unit's
        readout value also gets a learned gain and offset set by the whole image's contrast
        (`closedloop.model.contrast_gain`), so a unit whose response the image's overall
        contrast divides down (or raises) is modelled as such.
    learning_rate, max_epochs, patience
        Adam step size; epoch limit; epochs without improvement of the stopping-set
        loss before training stops (the best epoch's weights are restored).
    input_noise
        Augmentation: every epoch each training image gets fresh Gaussian pixel noise
        whose standard deviation at each pixel is this many times that pixel's standard
        deviation over the training images, so pixels the images never vary (outside the
        display's aperture) get none.  0 (default) turns it off.  Each noisy image keeps
        its recorded rate, so the network learns to ignore faint noise (a regulariser);
        the stopping and held-out images are never perturbed.  The noise reaches the
        core's learned layers; a Gabor bank (``gabor_bank``) sees the clean images.
    stop_check_every
        Epochs between host-side checks of the stopping rule (no effect on results:
        the best weights are tracked on the device every epoch).
    batch_size
        ``None`` for full-batch gradient steps (default: datasets are small).
    weight_decay
        L2 penalty on weights (not biases), Adam's coupled form.
    l1_readout
        L1 penalty on factorised-readout masks and feature weights.
    ridge_alphas
        Candidate ridge penalties for ``"linear"``, relative to the mean squared
        singular value of the centred training pixels; the stopping set picks one.
    ensemble_size, ensemble_mode
        Members, and whether they train together in one batched model (``"fused"``)
        or one after another (``"independent"``); ``"auto"`` (default) fuses on a GPU,
        where one model leaves the device mostly idle, and trains independently on
        the CPU, where grouped convolutions are slower than separate ones (5 members:
        73 s fused vs 59 s independent on 2 cores).  Prediction is the members' mean.
    stop_metric
        What the stopping images judge an epoch by: ``"loss"`` (default and ``kindel2017``:
        the paper's Eq. 1 loss) or ``"correlation"`` (``recommended``: the mean over units of
        Pearson r between prediction and rate, the quantity held-out r/rmax reports).  A small stopping
        set's per-unit means can differ from the training images' enough that its loss
        never falls while r climbs; stopping by loss then keeps nearly the starting
        weights.
    loss_weights
        ``"none"`` (default): every image's squared error counts alike in Eq. 1.
        ``"rate"``: each is weighted by the unit's mean rate over its training images
        divided by the larger of the prediction and that mean (`closedloop.model.trainer`):
        a Poisson count's variance grows with its rate, so images predicted above a
        unit's mean, whose measured rates are the noisiest, pull the fit less.  The
        weight follows the prediction, not the measurement, so an image measured high
        by chance does not lower its own weight.  Stopping by ``"loss"`` then judges the
        weighted loss too.
    stop_sets
        ``"shared"`` (default): every member stops on the split's stopping images.
        ``"rotating"``: member k stops on the k-th block of the fit (train + stop)
        images and trains on the rest (member 0 = the split's), so the ensemble as a
        whole learns from every fit image; members then train one after another.
    refit
        After early stopping, retrain each member from its initial weights on all fit
        images (train + stop) for the number of epochs early stopping chose, and keep
        those weights (about 1.5× the training time; the held-out images stay unseen).
    cuda_graphs
        On a GPU, capture one full-batch epoch as a CUDA graph and replay it (default;
        the same computation with one launch per epoch instead of hundreds).  No effect
        on the CPU or with mini-batches.
    partner
        ``None`` (default): one network (an ensemble of ``ensemble_size`` members).  A
        mapping of settings (e.g. ``{padding: valid, pool_stride: 2, l1_readout: 0.01}``):
        a second ensemble of ``ensemble_size`` members, this configuration with those
        settings changed, is fitted beside the first on the same split, and each unit's
        prediction is a weighted mean of the two, the weight chosen per unit on the fit
        images each member did not train on (`closedloop.model.blend`).  Member k of the
        model is the pair of both ensembles' members k.  Both share ``architecture`` (a
        CNN), ``ensemble_size``, ``stop_sets`` and ``seed``, which a partner may not change
        (nor nest a partner), and ``refit`` must be off.
    seed
        Seed of the split, initialisation and dropout; ``None`` until a fit draws one
        and records it.
    """

    architecture: str = "kindel2017"
    core_filters: tuple[int, ...] = (16, 32)
    core_kernels: tuple[int, ...] = (7, 7)
    pool_kernel: int = 3
    pool_stride: int = 2
    padding: str = "valid"
    pool_layers: tuple[int, ...] | None = None
    batch_norm: bool = False
    input_normalisation: str = "none"
    core_normalisation: str = "none"
    gabor_bank: bool = False
    gabor_wavelengths: tuple[float, ...] = GABOR_WAVELENGTHS
    dense_units: int = 300
    dropout_keep: float = 0.55
    output_nonlinearity: str = "softplus"
    output_knots: int = 0
    output_tail: str = "learned"
    contrast_gain: bool = False
    learning_rate: float = 1e-3
    max_epochs: int = 500
    patience: int = 50
    input_noise: float = 0.0
    stop_check_every: int = 10
    batch_size: int | None = None
    weight_decay: float = 0.0
    l1_readout: float = 0.0
    ridge_alphas: tuple[float, ...] = field(default=_DEFAULT_RIDGE_ALPHAS)
    ensemble_size: int = 1
    ensemble_mode: str = "auto"
    stop_metric: str = "loss"
    loss_weights: str = "none"
    stop_sets: str = "shared"
    refit: bool = False
    cuda_graphs: bool = True
    partner: tuple[tuple[str, Any], ...] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-safe dict (tuples become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "partner":
                value = None if value is None else {key: _plain(item) for key, item in value}
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "model config", prefix: str = "model") -> ModelConfig:
        """Build from a plain dict (e.g. parsed YAML); missing keys take defaults.

        Raises
        ------
        ConfigError
            Unknown key, wrong type or bad value; the field is named as
            ``"{prefix}.{field}"`` and ``source`` is given as the path.
        """
        if not isinstance(data, dict):
            raise ConfigError(source, None, prefix, f"must be a mapping of settings, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in data.items():
            if key not in known:
                raise ConfigError(
                    source, None, f"{prefix}.{key}", f"unknown setting; allowed: {', '.join(sorted(known))}"
                )
            kwargs[key] = _coerce(source, f"{prefix}.{key}", key, value)
        try:
            return cls(**kwargs)
        except ConfigError as error:
            raise ConfigError(source, None, f"{prefix}.{error.field}", error.message) from None

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @property
    def n_networks(self) -> int:
        """Member networks a fit trains: ``ensemble_size``, twice that with a `partner`."""
        return self.ensemble_size * (1 if self.partner is None else 2)

    def describe_members(self) -> str:
        """``"8-member "``, ``"2 × 4-member "`` with a `partner`, or ``""`` for one network."""
        if self.n_networks == 1:
            return ""
        return f"{self.ensemble_size}-member " if self.partner is None else f"2 × {self.ensemble_size}-member "

    def partner_config(self) -> ModelConfig | None:
        """The second ensemble's configuration (`partner`), or ``None`` for one network."""
        if self.partner is None:
            return None
        return self.replace(partner=None, **dict(self.partner))


#: Settings a `ModelConfig.partner` may not change: both ensembles share the members' split and seeds.
_NOT_PARTNER_FIELDS = ("partner", "seed", "ensemble_size", "stop_sets", "architecture")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


_INT_FIELDS = {
    "pool_kernel",
    "pool_stride",
    "dense_units",
    "max_epochs",
    "patience",
    "stop_check_every",
    "batch_size",
    "ensemble_size",
    "seed",
    "output_knots",
}
_FLOAT_FIELDS = {"dropout_keep", "learning_rate", "weight_decay", "l1_readout", "input_noise"}
_INT_TUPLE_FIELDS = {"core_filters", "core_kernels", "pool_layers"}
_FLOAT_TUPLE_FIELDS = {"ridge_alphas", "gabor_wavelengths"}
_BOOL_FIELDS = {"batch_norm", "gabor_bank", "contrast_gain", "refit", "cuda_graphs"}


def _coerce(source: str, name: str, key: str, value: Any) -> Any:
    """YAML values → the field's type, or a ConfigError naming the field."""

    def fail(expected: str) -> ConfigError:
        return ConfigError(source, None, name, f"must be {expected}, got {value!r}")

    if key == "partner":
        return None if value is None else _coerce_partner(source, name, value)

    if key in _INT_FIELDS:
        if value is None and key in ("batch_size", "seed"):
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer" + (" or null" if key in ("batch_size", "seed") else ""))
        return value
    if key in _FLOAT_FIELDS:
        # PyYAML reads "1e-3" (no dot) as a string: accept numeric strings.
        if isinstance(value, bool):
            raise fail("a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise fail("a number") from None
    if key in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if key == "pool_layers" and value is None:
        return None
    if key in _INT_TUPLE_FIELDS or key in _FLOAT_TUPLE_FIELDS:
        if not isinstance(value, (list, tuple)):
            raise fail("a list")
        items = []
        for item in value:
            if key in _FLOAT_TUPLE_FIELDS:
                try:
                    items.append(float(item))
                except (TypeError, ValueError):
                    raise fail("a list of numbers") from None
            elif isinstance(item, bool) or not isinstance(item, int):
                raise fail("a list of integers")
            else:
                items.append(item)
        return tuple(items)
    if not isinstance(value, str):
        raise fail("a string")
    return value


def _coerce_partner(source: str, name: str, value: Any) -> tuple[tuple[str, Any], ...]:
    """A partner mapping → sorted (field, value) pairs, each value coerced as its field's."""
    if not isinstance(value, dict) or not value:
        raise ConfigError(source, None, name, f"must be a non-empty mapping of settings or null, got {value!r}")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    pairs = []
    for key, item in sorted(value.items(), key=lambda pair: str(pair[0])):
        if key not in known:
            raise ConfigError(source, None, f"{name}.{key}", f"unknown setting; allowed: {', '.join(sorted(known))}")
        if key in _NOT_PARTNER_FIELDS:
            raise ConfigError(
                source,
                None,
                f"{name}.{key}",
                f"both ensembles share it; a partner may change anything but {', '.join(_NOT_PARTNER_FIELDS)}",
            )
        pairs.append((key, _coerce(source, f"{name}.{key}", key, item)))
    return tuple(pairs)


def describe_stop_score(score: float, config: ModelConfig) -> str:
    """A stopping score (lower is better, `ModelConfig.stop_metric`) as a person reads it."""
    return f"stop r {-score:.3f}" if config.stop_metric == "correlation" else f"stop loss {score:.3f}"


def _validate(config: ModelConfig) -> None:
    def bad(name: str, message: str) -> ConfigError:
        return ConfigError("ModelConfig", None, name, message)

    def choice(name: str, allowed: tuple[str, ...]) -> None:
        if getattr(config, name) not in allowed:
            raise bad(name, f"must be one of {', '.join(allowed)}, got {getattr(config, name)!r}")

    def at_least(name: str, minimum: int) -> None:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise bad(name, f"must be an integer >= {minimum}, got {value!r}")

    choice("architecture", ARCHITECTURES)
    choice("padding", PADDINGS)
    choice("input_normalisation", INPUT_NORMALISATIONS)
    choice("core_normalisation", CORE_NORMALISATIONS)
    choice("output_nonlinearity", OUTPUT_NONLINEARITIES)
    choice("output_tail", OUTPUT_TAILS)
    choice("ensemble_mode", ENSEMBLE_MODES)
    choice("stop_metric", STOP_METRICS)
    choice("loss_weights", LOSS_WEIGHTS)
    choice("stop_sets", STOP_SETS)
    filters, kernels = tuple(config.core_filters), tuple(config.core_kernels)
    if not filters or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in filters):
        raise bad("core_filters", f"must be a non-empty list of positive integers, got {config.core_filters!r}")
    if len(kernels) != len(filters) or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in kernels):
        raise bad(
            "core_kernels",
            f"must list one positive kernel size per layer ({len(filters)} layers), got {config.core_kernels!r}",
        )
    if config.pool_layers is not None:
        layers = tuple(config.pool_layers)
        if any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= len(filters) for v in layers):
            raise bad(
                "pool_layers", f"must list core layers 1..{len(filters)} to pool after, got {config.pool_layers!r}"
            )
        object.__setattr__(config, "pool_layers", layers)
    for name in _BOOL_FIELDS:
        if not isinstance(getattr(config, name), bool):
            raise bad(name, f"must be true or false, got {getattr(config, name)!r}")
    if config.padding == "same" and any(k % 2 == 0 for k in kernels):
        raise bad("core_kernels", f"'same' padding needs odd kernel sizes, got {config.core_kernels!r}")
    for name in (
        "pool_kernel",
        "pool_stride",
        "dense_units",
        "max_epochs",
        "patience",
        "stop_check_every",
        "ensemble_size",
    ):
        at_least(name, 1)
    at_least("output_knots", 0)
    if config.batch_size is not None:
        at_least("batch_size", 1)
    if config.seed is not None:
        at_least("seed", 0)
    if not 0.0 < config.dropout_keep <= 1.0:
        raise bad("dropout_keep", f"is the probability of keeping a unit, in (0, 1], got {config.dropout_keep}")
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise bad("learning_rate", f"must be a positive number, got {config.learning_rate}")
    for name in ("weight_decay", "l1_readout"):
        value = getattr(config, name)
        if not (math.isfinite(value) and value >= 0):
            raise bad(name, f"must be a number >= 0, got {value}")
    if not (math.isfinite(config.input_noise) and 0 <= config.input_noise <= MAX_INPUT_NOISE):
        raise bad(
            "input_noise",
            f"must be a number from 0 to {MAX_INPUT_NOISE} (times each pixel's spread over the images; "
            f"e.g. 0.4), got {config.input_noise}",
        )
    wavelengths = tuple(config.gabor_wavelengths)
    low, high = GABOR_WAVELENGTH_RANGE
    if not wavelengths or any(
        isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and low <= w <= high)
        for w in wavelengths
    ):
        raise bad(
            "gabor_wavelengths",
            f"must be a non-empty list of wavelengths from {low:g} to {high:g} input pixels, "
            f"got {config.gabor_wavelengths!r}",
        )
    alphas = tuple(config.ridge_alphas)
    if not alphas or any(not (math.isfinite(a) and a > 0) for a in alphas):
        raise bad("ridge_alphas", f"must be a non-empty list of positive numbers, got {config.ridge_alphas!r}")
    if config.architecture == "linear" and config.output_knots != 0:
        raise bad("output_knots", "must be 0 for the linear model (its closed-form fit is linear in the pixels)")
    if config.architecture == "linear" and config.input_noise != 0:
        raise bad("input_noise", "must be 0 for the linear model (its closed-form fit sees each image once)")
    if config.architecture == "linear" and config.ensemble_size != 1:
        raise bad("ensemble_size", "must be 1 for the linear model (its closed-form fit has no randomness)")
    if config.partner is not None:
        partner = config.partner
        if isinstance(partner, dict):  # a caller that bypassed from_dict
            partner = _coerce_partner("ModelConfig", "partner", partner)
        object.__setattr__(config, "partner", partner)
        try:
            config.partner_config()
        except ConfigError as error:
            raise bad(f"partner.{error.field}", error.message) from None
        except (TypeError, ValueError) as error:
            raise bad("partner", f"must be a mapping of settings: {error}") from None
        if config.architecture == "linear":
            raise bad("partner", "the linear model is fitted in closed form; a partner needs a CNN architecture")
        if config.refit or config.partner_config().refit:  # type: ignore[union-attr]
            raise bad(
                "refit",
                "must be false with a partner: the blend's weights are judged on images each member did not train on",
            )
    # Lists from callers that bypass from_dict become tuples, so configs compare and hash.
    object.__setattr__(config, "core_filters", filters)
    object.__setattr__(config, "core_kernels", kernels)
    object.__setattr__(config, "ridge_alphas", alphas)
    object.__setattr__(config, "gabor_wavelengths", tuple(float(w) for w in wavelengths))
