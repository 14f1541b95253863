"""Helpers for the configuration tests: the repository root and edited copies of shipped YAMLs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DELETE = object()  # a change value that removes the key


def write_variant(tmp_path: Path, shipped: str, changes: dict[str, Any], name: str = "variant.yaml") -> Path:
    """Copy ``ROOT / shipped`` to ``tmp_path / name`` with dotted keys changed (`DELETE` removes one)."""
    data = yaml.safe_load((ROOT / shipped).read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        target = data
        for key in parents:
            target = target.setdefault(key, {})
        if value is DELETE:
            target.pop(last, None)
        else:
            target[last] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
