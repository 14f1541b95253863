"""Build frozen dataclasses from YAML nodes, checked against the dataclasses' type hints.

A settings class is an ordinary frozen dataclass.  `build` reads its type hints
(int, float, bool, str, Literal[...], fixed tuples, ``tuple[X, ...]``, ``list[X]``,
``X | None``, nested dataclasses, and unions of dataclasses told apart by their
``kind`` field), refuses unknown keys, fills defaults, and applies the range limits
declared with `setting`.  A class may define ``check(self, where)`` for rules that
involve several fields; it raises ``where.error("field", "message")``.

Every error is a `ConfigError` naming the file, the line and the dotted field
(``display.refresh_hz``, ``blocks[2].repeats``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from closedloop.config.yaml_loader import YamlNode, load_yaml, read_text, shorten
from closedloop.errors import ConfigError
from closedloop.paths import resolve_in_file, shipped_file

if TYPE_CHECKING:  # typing only: the protocol every dataclass satisfies
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

# Compared as written (int with int stays exact, int with float never overflows).
_LIMITS = {
    "ge": (">=", operator.ge),
    "gt": (">", operator.gt),
    "le": ("<=", operator.le),
    "lt": ("<", operator.lt),
}
#: Every integer setting must fit a signed 64-bit integer (numpy, HDF5 and torch
#: all store it so); fields narrow this with `setting` limits.
MAX_INT = 2**63 - 1
#: Largest magnitude of any number setting; fields narrow this with `setting` limits.
MAX_NUMBER = 1e12
#: Longest text setting (a path may be this long on Linux).
MAX_TEXT_CHARS = 4096


def setting(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field with optional numeric limits, checked by `build`.

    Parameters
    ----------
    default
        The value used when the key is absent; leave out to make the key required.
    ge, gt, le, lt
        The value must be ``>=``, ``>``, ``<=`` or ``<`` this number.  A ``None``
        value (for ``X | None`` fields) is not checked.
    """
    limits = {name: value for name, value in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if value is not None}
    return dataclasses.field(default=default, metadata={"limits": limits})


def path_setting(default: Any = dataclasses.MISSING, *, folder: bool = False) -> Any:
    """A text field naming a file (or ``folder``), resolved by `build` against the settings file.

    A relative path is taken relative to the folder of the file that names it (then
    among closedloop's shipped files, `closedloop.paths.resolve_in_file`); `build`
    refuses a path that does not exist, naming the file, line and field.  A default is
    the name of a shipped file.
    """
    return dataclasses.field(default=default, metadata={"path": "folder" if folder else "file"})


def internal(default: Any = None) -> Any:
    """A dataclass field that is not read from YAML (set by the loader, e.g. the source text)."""
    return dataclasses.field(default=default, compare=False, repr=False, metadata={"internal": True})


def join(prefix: str, name: str) -> str:
    """Dotted field name: ``join("blocks[2]", "repeats") == "blocks[2].repeats"``."""
    if not prefix:
        return name
    if not name:
        return prefix
    return prefix + name if name.startswith("[") else f"{prefix}.{name}"


_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class ConfigSource:
    """A configuration file's path, text and node tree, used to place errors.

    Attributes
    ----------
    path
        The file as given to the loader.
    text
        The file's contents, exactly as read.
    root
        The top-level mapping node.
    """

    path: str
    text: str
    root: YamlNode

    def line_of(self, field: str) -> int:
        """Line of a dotted field, or of its nearest ancestor present in the file."""
        node, line = self.root, self.root.line
        for key, index in _PART.findall(field):
            if key and node.kind == "mapping" and key in node.value:
                line, node = node.key_lines[key], node.value[key]
            elif index and node.kind == "sequence" and int(index) < len(node.value):
                node = node.value[int(index)]
                line = node.line
            else:
                break
        return line

    def error(self, field: str | None, message: str) -> ConfigError:
        """A `ConfigError` for ``field`` (dotted), placed at its line."""
        line = self.root.line if field is None else self.line_of(field)
        return ConfigError(self.path, line, field or None, message)


class LoadedFromFile:
    """For a top-level settings class with a ``source: ConfigSource | None`` field."""

    source: ConfigSource | None

    @property
    def path(self) -> str | None:
        """The file it was loaded from (``None`` when built in code)."""
        return None if self.source is None else self.source.path

    @property
    def source_text(self) -> str | None:
        """The file's text, exactly as read (session files store it)."""
        return None if self.source is None else self.source.text


@dataclass(frozen=True)
class Where:
    """Where one settings object sits in its file; given to ``check`` methods.

    Attributes
    ----------
    source
        The file.
    prefix
        Dotted name of the object (``""`` for the top level).
    """

    source: ConfigSource
    prefix: str = ""

    def field(self, name: str) -> str:
        """Full dotted name of one of this object's fields."""
        return join(self.prefix, name)

    def at(self, name: str) -> Where:
        """The location of a nested object."""
        return Where(self.source, self.field(name))

    def has(self, name: str) -> bool:
        """True when the field was written in the file (not filled from a default)."""
        node = self.source.root
        for key, index in _PART.findall(self.field(name)):
            if key and node.kind == "mapping" and key in node.value:
                node = node.value[key]
            elif index and node.kind == "sequence" and int(index) < len(node.value):
                node = node.value[int(index)]
            else:
                return False
        return True

    def line(self, name: str = "") -> int:
        """Line of a field (or of the object itself for ``""``)."""
        return self.source.line_of(self.field(name))

    def error(self, name: str, message: str) -> ConfigError:
        """A `ConfigError` about one of this object's fields."""
        return self.source.error(self.field(name), message)


def load_settings_file(cls: type[T], path: str | Path) -> T:
    """Read a YAML file and build ``cls`` from it, keeping the text as its ``source``.

    Raises
    ------
    ConfigError
        The file is missing or not valid YAML, or a setting is wrong (file, line, field).
    """
    text = read_text(path)
    source = ConfigSource(str(path), text, load_yaml(path, text))
    return build(cls, source.root, Where(source), source=source)


def build(cls: type[T], node: YamlNode, where: Where, **internal_values: Any) -> T:
    """Build a settings dataclass from a mapping node.

    Parameters
    ----------
    cls
        A frozen dataclass whose fields are the allowed keys.
    node
        The mapping node (``source.root`` for a whole file).
    where
        Location of ``node`` in its file.
    **internal_values
        Values for fields declared with `internal`.

    Returns
    -------
    T
        The instance, after its ``check`` method (if any) has passed.

    Raises
    ------
    ConfigError
        On an unknown or missing key, a value of the wrong type or out of range,
        or a failed ``check``.
    """
    if node.kind != "mapping":
        raise where.error("", f"expected a mapping of settings (key: value), got {node.describe()}")
    hints = get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")]
    allowed = [f.name for f in fields]
    for key in node.value:
        if key not in allowed:
            raise ConfigError(where.source.path, node.key_lines[key], where.field(key), _unknown_key(key, allowed))
    values: dict[str, Any] = {}
    for f in fields:
        name = where.field(f.name)
        if f.name not in node.value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise where.error(f.name, f"missing required key '{f.name}'" + _under(where.prefix))
            if f.metadata.get("path") and isinstance(f.default, str):
                values[f.name] = str(shipped_file(f.default))
            continue
        written = node.value[f.name]
        if written.kind == "scalar":
            # Limits first, on the number as written: a 400-digit integer or 1e308 then
            # gets this field's own range in its message.
            _check_limits(f, _as_number(written), where, written)
        value = _value(hints[f.name], written, where.source, name)
        _check_limits(f, value, where, written)
        if f.metadata.get("path"):
            value = _existing_path(f.metadata["path"], value, where.source, written, name)
        values[f.name] = value
    instance = cls(**values, **internal_values)
    check = getattr(instance, "check", None)
    if callable(check):
        check(where)
    return instance


def _existing_path(kind: str, value: Any, source: ConfigSource, node: YamlNode, name: str) -> Any:
    """``value`` resolved against the settings file's folder; it must exist (each one, for a list)."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        paths = [
            _existing_path(kind, item, source, item_node, f"{name}[{i}]")
            for i, (item, item_node) in enumerate(zip(value, node.value))
        ]
        return tuple(paths) if isinstance(value, tuple) else paths
    if not value:
        raise ConfigError(source.path, node.line, name, f"give the path of a {kind}, not an empty text")
    path = resolve_in_file(value, source.path)
    found = path.is_dir() if kind == "folder" else path.is_file()
    if not found:
        what = (
            "not a folder"
            if kind == "folder" and path.exists()
            else ("a folder, not a file" if path.is_dir() else "not found")
        )
        place = "" if Path(value).is_absolute() else f" (relative paths are taken from the folder of {source.path})"
        raise ConfigError(source.path, node.line, name, f"{path}: {what}{place}; check the path")
    return str(path)


def _under(prefix: str) -> str:
    return f" under '{prefix}'" if prefix else ""


def _unknown_key(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key '{key}'; did you mean '{close[0]}'? Allowed keys: {', '.join(allowed)}"
    return f"unknown key '{key}'; allowed keys: {', '.join(allowed)}"


def _as_number(node: YamlNode) -> Any:
    """A scalar's number as written (PyYAML leaves ``1e308`` as text), else its value."""
    if isinstance(node.value, str) and node.plain:
        try:
            number = float(node.value)
        except ValueError:
            return node.value
        return number if math.isfinite(number) else node.value
    if isinstance(node.value, float) and not math.isfinite(node.value):
        return None  # refused as not finite when converted
    return node.value


def _check_limits(f: dataclasses.Field, value: Any, where: Where, node: YamlNode) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    for name, bound in f.metadata.get("limits", {}).items():
        symbol, holds = _LIMITS[name]
        if not holds(value, bound):
            message = f"must be {symbol} {_number(bound)}, got {shorten(node.raw)}"
            raise ConfigError(where.source.path, node.line, where.field(f.name), message)


def _number(bound: float) -> str:
    """A limit as a user reads it: ``4096``, ``0.5``, ``4294967295``, ``1e+12``."""
    if isinstance(bound, int) or (isinstance(bound, float) and bound.is_integer() and abs(bound) < 1e15):
        return str(int(bound))
    return f"{bound:g}"


def _value(hint: Any, node: YamlNode, source: ConfigSource, name: str) -> Any:
    """Convert one node to the Python type ``hint``."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return _union(get_args(hint), node, source, name)
    if origin is Literal:
        return _literal(get_args(hint), node, source, name)
    if origin in (tuple, list):
        return _sequence(hint, node, source, name)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build(hint, node, Where(source, name))
    if hint in (int, float, bool, str):
        return _scalar(hint, node, source, name)
    raise TypeError(f"settings field {name} has unsupported type {hint!r}")  # a programming error


def _fail(source: ConfigSource, node: YamlNode, name: str, expected: str) -> ConfigError:
    return ConfigError(source.path, node.line, name, f"expected {expected}, got {node.describe()}")


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "text"}


def _scalar(hint: type, node: YamlNode, source: ConfigSource, name: str) -> Any:
    value = node.value
    if node.kind != "scalar" or value is None:
        raise _fail(source, node, name, _TYPE_NAMES[hint])
    if hint is bool:
        # Strict: YAML 1.1 also reads yes/no/on/off as booleans; refuse them so a
        # typo or a quoted "yes" never silently flips a setting.
        if isinstance(value, bool) and node.raw.lower() in ("true", "false"):
            return value
        if isinstance(value, bool):
            raise ConfigError(source.path, node.line, name, f"write true or false, not {node.raw!r}")
        raise _fail(source, node, name, "true or false")
    if hint is str:
        # Unquoted numbers or words are taken as written (a rig called 2024, a device 0).
        text = node.raw if node.plain else str(value)
        if len(text) > MAX_TEXT_CHARS:
            raise ConfigError(
                source.path,
                node.line,
                name,
                f"text of {len(text)} characters; at most {MAX_TEXT_CHARS} (names and paths are short)",
            )
        return text
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_INT:
                raise ConfigError(
                    source.path,
                    node.line,
                    name,
                    f"{shorten(node.raw)} is too large: whole numbers "
                    f"must be within ±{MAX_INT} (64 bits); check the value",
                )
            return value
        raise _fail(source, node, name, "an integer")
    # float: integers are accepted, and so is 1e-3 (PyYAML reads it as text).
    if isinstance(value, str) and node.plain:
        try:
            value = float(value)
        except ValueError:
            raise _fail(source, node, name, "a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(source, node, name, "a number")
    if isinstance(value, int) and abs(value) > MAX_NUMBER:
        raise ConfigError(
            source.path,
            node.line,
            name,
            f"{shorten(node.raw)} is far too large for this setting; numbers here must be within ±{MAX_NUMBER:g}",
        )
    if not math.isfinite(value):
        raise ConfigError(source.path, node.line, name, f"must be a finite number, got {shorten(node.raw)}")
    if abs(value) > MAX_NUMBER:
        raise ConfigError(
            source.path,
            node.line,
            name,
            f"{shorten(node.raw)} is far too large for this setting; numbers here must be within ±{MAX_NUMBER:g}",
        )
    return float(value)


def _literal(options: tuple, node: YamlNode, source: ConfigSource, name: str) -> Any:
    if node.kind == "scalar":
        written = node.raw if node.plain else node.value
        for option in options:
            if isinstance(option, str) and written == option:
                return option
            if not isinstance(option, str) and type(node.value) is type(option) and node.value == option:
                return option
    allowed = ", ".join(repr(option) for option in options)
    close = difflib.get_close_matches(str(node.raw), [str(option) for option in options], n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close and node.kind == "scalar" else ""
    raise ConfigError(source.path, node.line, name, f"must be one of {allowed}, got {node.describe()}{hint}")


def _sequence(hint: Any, node: YamlNode, source: ConfigSource, name: str) -> Any:
    args = get_args(hint)
    if get_origin(hint) is list or (len(args) == 2 and args[1] is Ellipsis):
        item_hint = args[0]
        if node.kind != "sequence":
            raise _fail(source, node, name, "a list")
        items = [_value(item_hint, item, source, f"{name}[{i}]") for i, item in enumerate(node.value)]
        return items if get_origin(hint) is list else tuple(items)
    # A fixed tuple such as tuple[float, float].
    expected = f"a list of {len(args)} values [{', '.join(_TYPE_NAMES.get(a, str(a)) for a in args)}]"
    if node.kind != "sequence":
        raise _fail(source, node, name, expected)
    if len(node.value) != len(args):
        raise ConfigError(source.path, node.line, name, f"expected {expected}, got {len(node.value)} values")
    return tuple(_value(a, item, source, f"{name}[{i}]") for i, (a, item) in enumerate(zip(args, node.value)))


def _union(options: tuple, node: YamlNode, source: ConfigSource, name: str) -> Any:
    if type(None) in options:
        if node.kind == "scalar" and node.value is None:
            return None
        options = tuple(option for option in options if option is not type(None))
        if len(options) == 1:
            return _value(options[0], node, source, name)
    if all(dataclasses.is_dataclass(option) for option in options):
        return _tagged(options, node, source, name)
    # A union of simple types (e.g. int | Literal["all"]): the first that fits wins.
    for option in options:
        try:
            return _value(option, node, source, name)
        except ConfigError:
            continue
    described = " or ".join(_describe_type(option) for option in options)
    raise _fail(source, node, name, described)


def _describe_type(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return " or ".join(repr(option) for option in get_args(hint))
    return _TYPE_NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def _tagged(options: tuple, node: YamlNode, source: ConfigSource, name: str) -> Any:
    """A union of dataclasses, chosen by the ``kind`` key (each has a ``kind: Literal[...]``)."""
    by_kind = {get_args(get_type_hints(option)["kind"])[0]: option for option in options}
    kinds = ", ".join(by_kind)
    if node.kind != "mapping":
        raise _fail(source, node, name, f"a mapping with a 'kind' ({kinds})")
    if "kind" not in node.value:
        raise ConfigError(source.path, node.line, name, f"missing required key 'kind' (one of {kinds})")
    kind_node = node.value["kind"]
    chosen = by_kind.get(kind_node.raw) if kind_node.kind == "scalar" else None
    if chosen is None:
        close = difflib.get_close_matches(str(kind_node.raw), list(by_kind), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            source.path, kind_node.line, join(name, "kind"), f"must be one of {kinds}, got {kind_node.describe()}{hint}"
        )
    return build(chosen, node, Where(source, name))
