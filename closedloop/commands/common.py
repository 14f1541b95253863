"""Helpers shared by subcommands: JSON summaries and checked argument types."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from closedloop.jsonsafe import json_safe


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """Every command can write its summary as JSON as well as printing it."""
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the summary as JSON to PATH")


def write_json(path: Path | None, summary: dict[str, Any]) -> None:
    """Write ``summary`` atomically (NaN becomes null) if a path was given."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(summary), indent=2) + "\n")
    os.replace(tmp, path)


def _whole_number_at_least(text: str, minimum: int, wording: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {wording}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _whole_number_at_least(text, 1, "at least 1")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _whole_number_at_least(text, 0, "0 or more")
