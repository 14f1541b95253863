"""What every message type shares: declared array fields, checks, and the registry.

A message type is a frozen dataclass deriving from `Message`.  Fields named in its
``ARRAYS`` class attribute are numpy arrays (sent as raw frames); every other field is
a scalar, string, ``None`` or a small dict (sent in the msgpack header).  Construction
checks everything, so a message that exists is a valid message — whether it was built
by our code or decoded from the wire.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from closedloop.messages.envelope import ALLOWED_DTYPES

MAX_TEXT_CHARS = 65536


@dataclass(frozen=True)
class ArraySpec:
    """What one array field accepts.

    Attributes
    ----------
    dtypes
        Allowed dtype names; other numeric input is cast to the first one it casts to
        safely (e.g. a Python list of ints to ``int64``), anything else is refused.
    ndim
        Required number of dimensions.
    optional
        Whether the field may be ``None`` (then no frame is sent for it).
    """

    dtypes: tuple[str, ...]
    ndim: int
    optional: bool = False

    def check(self, field: str, value: Any) -> np.ndarray | None:
        """Return `value` as a read-only array of an allowed dtype, or raise."""
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"{field}: required array is missing")
        array = np.asarray(value)
        allowed = _dtypes(self.dtypes)
        if array.dtype not in allowed:
            target: np.dtype | None
            if array.size == 0 and array.dtype == np.float64:
                target = allowed[0]  # an empty Python list arrives as float64
            else:
                safe = [d for d in allowed if np.can_cast(array.dtype, d, "safe")]
                target = safe[0] if safe else None
            if target is None:
                raise TypeError(f"{field}: dtype {array.dtype} is not one of {', '.join(self.dtypes)}")
            array = array.astype(target)
        if array.ndim != self.ndim:
            raise ValueError(f"{field}: expected {self.ndim} dimension(s), got shape {array.shape}")
        if array.dtype.str not in ALLOWED_DTYPES:  # e.g. big-endian input
            array = array.astype(array.dtype.newbyteorder("<"))
        view = array.view()
        view.flags.writeable = False  # a frozen message should not change under a receiver
        return view


@functools.cache
def _dtypes(names: tuple[str, ...]) -> tuple[np.dtype, ...]:
    return tuple(np.dtype(name) for name in names)


class Message:
    """Base of all message types (frozen dataclasses; see `closedloop.messages.types`).

    Subclasses declare ``ARRAYS`` and may override `_check` to validate and normalise
    their scalar fields and the consistency between fields.
    """

    ARRAYS: ClassVar[dict[str, ArraySpec]] = {}

    def __post_init__(self) -> None:
        for name, spec in self.ARRAYS.items():
            object.__setattr__(self, name, spec.check(name, getattr(self, name)))
        self._check()

    def _check(self) -> None:
        """Validate scalar fields; raise ValueError/TypeError naming the field."""

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    @classmethod
    def type_name(cls) -> str:
        """The name this type travels under (its class name)."""
        return cls.__name__

    @classmethod
    def scalar_field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in cls.ARRAYS)  # type: ignore[arg-type]

    def scalars(self) -> dict[str, Any]:
        """Non-array fields by name (what goes into the header body)."""
        return {name: getattr(self, name) for name in self.scalar_field_names()}

    def arrays(self) -> dict[str, np.ndarray]:
        """Array fields that are present, by name, in declaration order."""
        out = {}
        for name in self.ARRAYS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def same_as(self, other: object) -> bool:
        """Field-by-field equality, arrays compared by dtype, shape and content."""
        if type(other) is not type(self):
            return False
        if not _same_value(self.scalars(), other.scalars()):  # type: ignore[attr-defined]
            return False
        for name in self.ARRAYS:
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None):
                return False
            if a is not None and (
                a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
            ):
                return False
        return True


def _same_value(a: Any, b: Any) -> bool:
    """Equality in which NaN equals NaN (an undefined metric is the same undefined metric)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


MESSAGE_TYPES: dict[str, type[Message]] = {}


def register(cls: type[Message]) -> type[Message]:
    """Class decorator: make a message type decodable under its class name."""
    name = cls.type_name()
    if name in MESSAGE_TYPES and MESSAGE_TYPES[name] is not cls:
        raise ValueError(f"message type {name!r} is registered twice")
    MESSAGE_TYPES[name] = cls
    return cls


def message_class(name: str) -> type[Message] | None:
    """The registered class for a type name, or ``None`` when unknown."""
    return MESSAGE_TYPES.get(name)


# --- scalar checks, shared by the message types -------------------------------------


def as_int(value: Any, field: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{field}: expected an integer, got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{field}: must be >= {minimum}, got {value}")
    if not -(2**63) <= value < 2**64:
        raise ValueError(f"{field}: {value} does not fit in 64 bits")
    return value


def as_bool(value: Any, field: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{field}: expected true or false, got {type(value).__name__}")
    return bool(value)


def as_optional_int(value: Any, field: str, *, minimum: int | None = None) -> int | None:
    return None if value is None else as_int(value, field, minimum=minimum)


def as_float(value: Any, field: str, *, finite: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{field}: expected a number, got {type(value).__name__}")
    value = float(value)
    if finite and not math.isfinite(value):
        raise ValueError(f"{field}: must be finite, got {value}")
    return value


def as_text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field}: expected text, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"{field}: text longer than {MAX_TEXT_CHARS} characters")
    return value


def as_metrics(value: Any, field: str) -> dict[str, float]:
    """A flat ``{name: number}`` dict (NaN allowed: a metric can be undefined)."""
    if not isinstance(value, dict):
        raise TypeError(f"{field}: expected a dict of name -> number, got {type(value).__name__}")
    return {as_text(k, f"{field} key"): as_float(v, f"{field}[{k!r}]", finite=False) for k, v in value.items()}


def same_length(message: Message, *names: str) -> None:
    """Raise unless the (present) 1st dimension of the named arrays agree."""
    lengths = {n: len(getattr(message, n)) for n in names if getattr(message, n) is not None}
    if len(set(lengths.values())) > 1:
        raise ValueError("arrays must have the same length: " + ", ".join(f"{n}={k}" for n, k in lengths.items()))
