"""Which model configuration a fit uses: the default, named presets, and YAML files.

`default_config` is the one place the batch fitter's default is chosen, so switching
it (e.g. to a tuned preset) is a one-line change.  A model YAML is a mapping of
`ModelConfig` fields, either at the top level or under a ``model:`` key; the best
configuration of a hyper-parameter search is written in the same form
(`write_config_yaml`), so ``closedloop fit --config best.yaml`` reads it back.  A
``preset:`` key names the preset the file's other fields change (``preset: recommended``
with ``padding: same``); without it they change `ModelConfig`'s defaults (``kindel2017``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from closedloop.config.yaml_loader import YamlNode, load_yaml
from closedloop.errors import ConfigError, DataFileError
from closedloop.model.model_config import ModelConfig
from closedloop.model.presets import DEFAULT_PRESET, PRESETS, preset


def preset_names() -> tuple[str, ...]:
    """Names ``--preset`` accepts."""
    return tuple(sorted(PRESETS))


def named_config(name: str) -> ModelConfig:
    """The preset called ``name`` (raises `ConfigError` naming the known ones)."""
    return preset(name)


def default_config() -> ModelConfig:
    """The configuration ``closedloop fit`` uses when neither --config nor --preset is given."""
    return preset(DEFAULT_PRESET)


def _plain(node: YamlNode) -> Any:
    if node.kind == "mapping":
        return {key: _plain(value) for key, value in node.value.items()}
    if node.kind == "sequence":
        return [_plain(value) for value in node.value]
    return node.value


def load_config_yaml(path: str | Path) -> ModelConfig:
    """Read a model configuration YAML (fields of `ModelConfig`, optionally under ``model:``,
    changing the preset a ``preset:`` key names, else `ModelConfig`'s defaults).

    Raises
    ------
    ConfigError
        Unreadable file, bad YAML, unknown field or preset, or bad value; names the file,
        the line where it is known, and the field.
    """
    root = load_yaml(path)
    node, prefix = root, "model"
    if set(root.value) == {"model"}:
        node = root.value["model"]
        if node.kind != "mapping":
            raise ConfigError(path, node.line, "model", f"must be a mapping of model settings, found {node.describe()}")
    fields = _plain(node)
    if node.kind == "mapping" and "preset" in fields:
        try:
            base = preset(fields.pop("preset"))
        except ConfigError as error:  # the preset registry's message, placed in this file
            raise ConfigError(path, node.value["preset"].line, f"{prefix}.preset", error.message) from None
        fields = {**base.to_dict(), **fields}
    try:
        return ModelConfig.from_dict(fields, source=str(path), prefix=prefix)
    except ConfigError as error:
        key = (error.field or "").split(".")[1] if error.field and "." in error.field else None
        line = node.key_lines.get(key) if key else None
        if line is None and key in node.value:
            line = node.value[key].line
        raise ConfigError(path, line or error.line, error.field, error.message) from None


def write_config_yaml(path: str | Path, config: ModelConfig, comment: str = "") -> Path:
    """Write ``config`` as a YAML that `load_config_yaml` reads, atomically.

    ``comment`` lines go at the top as YAML comments (e.g. how it was chosen).
    """
    path = Path(path)
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    text = header + yaml.safe_dump({"model": config.to_dict()}, sort_keys=False)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise DataFileError(path, f"cannot write the configuration ({error.strerror or error})") from None
    return path
