"""Scenario files: a YAML description of a simulated population.

A scenario has a ``population`` mapping whose keys are `PopulationSpec` fields
(ranges as ``[low, high]`` lists, ``fractions`` as a mapping of unit type to
fraction) and optional ``name`` and ``description`` strings::

    name: default
    population:
      n_units: 40
      seed: 1
      fractions: {simple: 0.35, complex: 0.3, centre_surround: 0.1, texture: 0.15, weak: 0.1}

``population.family`` picks the model class (classic, normalisation, deep, pyramid, or
plugin with ``population.brain: "package.module:callable"``) and
``population.images`` the stimulus set archives show.  Missing fields take the
`PopulationSpec` defaults.  Unknown keys, wrong types and
bad values raise `ConfigError` with the file, line and dotted field name.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from closedloop.config.yaml_loader import check_bounds, read_limited
from closedloop.errors import ConfigError
from closedloop.sim.spec import FAMILY_UNIT_TYPES, IMAGE_SETS, PopulationSpec, default_fractions, spec_problems

TOP_LEVEL_KEYS = ("name", "description", "population")
_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(PopulationSpec)}


def _line_index(root: yaml.Node | None) -> tuple[dict[str, int], list[str]]:
    """1-based line of every mapping key by dotted path, and the paths given twice."""
    lines: dict[str, int] = {}
    duplicates: list[str] = []

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                path = f"{prefix}{key.value}"
                if key.value in seen:
                    duplicates.append(path)
                    lines[path] = key.start_mark.line + 1
                seen.add(key.value)
                lines.setdefault(path, key.start_mark.line + 1)
                walk(value, path + ".")

    if root is not None:
        walk(root, "")
    return lines, duplicates


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_scenario(path: str | Path) -> PopulationSpec:
    """Read a scenario YAML into a `PopulationSpec`.

    Raises
    ------
    ConfigError
        If the file is missing or unreadable, is not valid YAML, or has unknown
        keys, wrong types or out-of-range values (the error names line and field).
    """
    path = Path(path)
    try:
        text = read_limited(path)
    except FileNotFoundError:
        raise ConfigError(path, None, None, "scenario file not found; check the path") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(path, None, None, f"cannot read the scenario file ({error})") from None
    check_bounds(path, text)  # before PyYAML expands any alias
    try:
        data = yaml.safe_load(text)
        lines, duplicates = _line_index(yaml.compose(text))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(path, line, None, f"not valid YAML: {getattr(error, 'problem', None) or error}") from None

    def fail(field: str | None, message: str) -> ConfigError:
        # A default that clashes with a given value has no line; point at its mapping.
        parts = field.split(".") if field else []
        while parts and ".".join(parts) not in lines:
            parts.pop()
        return ConfigError(path, lines.get(".".join(parts)) if parts else None, field, message)

    for field in duplicates:
        raise fail(field, "key given twice; keep one")
    if not isinstance(data, dict):
        raise fail(None, "a scenario must be a mapping with a 'population' key")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise fail(str(key), f"unknown key; allowed top-level keys: {', '.join(TOP_LEVEL_KEYS)}")
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise fail(key, f"must be text, got {_describe(data[key])}")
    if "population" not in data:
        raise fail(None, "missing the 'population' mapping")
    population = data["population"]
    if not isinstance(population, dict):
        raise fail("population", f"must be a mapping of population fields, got {_describe(population)}")

    values: dict[str, Any] = {}
    for key, value in population.items():
        field = f"population.{key}"
        if key not in _FIELD_TYPES:
            raise fail(field, f"unknown key; allowed: {', '.join(_FIELD_TYPES)}")
        values[key] = _checked_value(key, value, field, fail)

    # Check the values before building the spec, so a problem is reported with its line.
    defaults = PopulationSpec()
    candidate = SimpleNamespace(**{name: getattr(defaults, name) for name in _FIELD_TYPES})
    vars(candidate).update(values)
    if "fractions" not in values:
        candidate.fractions = default_fractions(str(candidate.family))
    for key, message in spec_problems(candidate):
        raise fail(f"population.{key}", message)
    return PopulationSpec(**values)


def _checked_value(key: str, value: Any, field: str, fail) -> Any:
    """Check one population field's type; return it in the form PopulationSpec takes."""
    kind = _FIELD_TYPES[key]
    if key == "fractions":
        if not isinstance(value, dict):
            raise fail(field, f"must be a mapping of unit type to fraction, got {_describe(value)}")
        known = {t for types in FAMILY_UNIT_TYPES.values() for t in types}
        for unit_type, fraction in value.items():
            if unit_type not in known:
                raise fail(f"{field}.{unit_type}", f"unknown unit type; allowed: {', '.join(sorted(known))}")
            if not _is_number(fraction):
                raise fail(f"{field}.{unit_type}", f"must be a number, got {_describe(fraction)}")
        return {str(k): float(v) for k, v in value.items()}
    if kind == "str | None":  # the plugin family's brain; spec_problems checks its form
        if value is not None and not isinstance(value, str):
            raise fail(field, f"must be text such as 'package.module:callable', got {_describe(value)}")
        return value
    if kind == "str":
        allowed = FAMILY_UNIT_TYPES if key == "family" else IMAGE_SETS
        if not isinstance(value, str) or value not in allowed:
            raise fail(field, f"must be one of {', '.join(allowed)}; got {_describe(value)}")
        return value
    if kind.startswith("tuple"):
        if value is None and kind.endswith("| None"):
            return None
        if not (isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)):
            raise fail(field, f"must be a [low, high] list of two numbers, got {_describe(value)}")
        return (float(value[0]), float(value[1]))
    if kind == "int" or kind == "int | None":
        if value is None and kind == "int | None":
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail(field, f"must be a whole number, got {_describe(value)}")
        return value
    if kind == "float":
        if not _is_number(value):
            raise fail(field, f"must be a number, got {_describe(value)}")
        return float(value)
    raise AssertionError(f"no type check for PopulationSpec.{key} ({kind})")  # a new field needs a rule here
