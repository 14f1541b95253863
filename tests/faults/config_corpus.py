"""Hostile rig and protocol files: the bad_*.yaml corpus, generated monsters and fuzzed variants."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from closedloop.config import load_protocol, load_rig, validate
from closedloop.errors import ConfigError
from closedloop.sim.scenario import load_scenario

from .outcomes import Case, Outcome, one_line, timed

ROOT = Path(__file__).resolve().parents[2]
RIGS = ("rigs/sim.yaml", "rigs/example_openephys.yaml")
PROTOCOLS = ("protocols/demo.yaml", "protocols/kindel2017.yaml", "protocols/fast_loop.yaml")
#: A config load taking longer than this is a hang (valid files load in milliseconds).
BOUND_S = 10.0

# Values a careless or hostile hand writes where a number or a word belongs.
HOSTILE_VALUES: tuple[Any, ...] = (
    -1,
    0,
    10**400,
    -(10**400),
    2**63,
    2**64,
    1e308,
    -1e308,
    float("nan"),
    float("inf"),
    1e-320,
    "1e308",
    "1e12",
    "-1",
    "",
    "x" * 5000,
    None,
    True,
    [],
    {},
    [[[[1]]]],
    {"kind": "loop"},
    "../../etc/passwd",
    "\u202e\x00",
    0.5,
    10**6,
    10**9,
    "all",
    "max",
    "p1000",
    "1e400hz",
)


def load_pair(kind: str, path: Path) -> None:
    """Load ``path`` as a rig, a scenario, or a protocol validated on the sim rig."""
    if kind == "rig":
        validate(load_rig(path))
    elif kind == "scenario":
        load_scenario(path)
    else:
        validate(load_rig(ROOT / "rigs" / "sim.yaml"), load_protocol(path))


def attempt(kind: str, path: Path, *, known_bad: bool) -> Outcome:
    """Load one file and classify the result."""
    started = time.monotonic()
    try:
        load_pair(kind, path)
    except ConfigError as error:
        message = str(error)
        if not one_line(message) or not message.startswith(str(path)):
            return timed("crash", f"unclear error: {message[:200]!r}", started, BOUND_S)
        return timed("refused", message, started, BOUND_S)
    except Exception as error:
        return timed("crash", f"{type(error).__name__}: {str(error)[:200]}", started, BOUND_S)
    return timed("silently_accepted" if known_bad else "accepted", "loaded", started, BOUND_S)


def corpus_cases(tmp: Path) -> list[Case]:
    """The shipped bad_*.yaml files and generated monsters (all must be refused)."""
    cases = []
    for path in sorted((ROOT / "tests" / "configs").glob("bad_*.yaml")):
        first = path.read_text(encoding="utf-8", errors="replace")
        kind = "protocol" if "\nblocks:" in first or "\ntiming:" in first else "rig"
        cases.append(Case("configs", path.name, lambda p=path, k=kind: attempt(k, p, known_bad=True)))
    for name, kind, path in monsters(tmp):
        cases.append(Case("configs", name, lambda p=path, k=kind: attempt(k, p, known_bad=True)))
    return cases


def monsters(tmp: Path) -> Iterator[tuple[str, str, Path]]:
    """Files too big, endless or not text at all."""
    sim = (ROOT / "rigs" / "sim.yaml").read_text()
    big = tmp / "five_megabytes.yaml"
    big.write_text(sim + "# " + "x" * 5_000_000 + "\n")
    yield "5 MB file", "rig", big
    many = tmp / "many_keys.yaml"
    many.write_text(sim + "".join(f"k{i}: {i}\n" for i in range(200_000)))
    yield "200000 keys", "rig", many
    if Path("/dev/zero").exists():
        yield "/dev/zero", "rig", Path("/dev/zero")
    binary = tmp / "binary.yaml"
    binary.write_bytes(bytes(random.Random(1).randrange(256) for _ in range(4096)))
    yield "random bytes", "rig", binary
    folder = tmp / "a_folder.yaml"
    folder.mkdir(exist_ok=True)
    yield "a folder", "protocol", folder
    for name in ("bad_alias_bomb.yaml", "bad_nested.yaml"):
        yield f"scenario: {name}", "scenario", ROOT / "tests" / "configs" / name
    if Path("/dev/zero").exists():
        yield "scenario: /dev/zero", "scenario", Path("/dev/zero")
    yield "scenario: 5 MB file", "scenario", big
    deep_map = tmp / "deep_mapping.yaml"
    deep_map.write_text("".join("  " * i + f"k{i}:\n" for i in range(900)) + "  " * 900 + "v: 1\n")
    yield "900 nested mappings", "rig", deep_map


def mutate(document: Any, rng: random.Random, value: Any) -> Any:
    """Replace, delete or add one key somewhere in a YAML document (a copy)."""
    document = yaml.safe_load(yaml.safe_dump(document))
    node, parent, key = document, None, None
    while isinstance(node, (dict, list)) and node and rng.random() < 0.75:
        parent = node
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        node = node[key]
    if parent is None:
        parent, key = document, rng.choice(list(document))
    action = rng.random()
    if action < 0.1 and isinstance(parent, dict):
        del parent[key]
    elif action < 0.2 and isinstance(parent, dict):
        parent[f"{key}_extra"] = value
    else:
        parent[key] = value
    return document


def fuzz_file(tmp: Path, shipped: str, seed: int, value: Any) -> tuple[str, Path]:
    """Write a fuzzed copy of a shipped rig or protocol; returns (kind, path)."""
    rng = random.Random(seed)
    document = mutate(yaml.safe_load((ROOT / shipped).read_text()), rng, value)
    path = tmp / f"fuzz_{seed}.yaml"
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    if rng.random() < 0.2:  # and sometimes damage the text itself
        cut = rng.randrange(len(text))
        junk = rng.choice(["[", "]", "{", ":", "\t", "&a ", "*a", "!!python/object:os.system", "'", "<<: *a"])
        text = text[:cut] + junk + text[cut:]
    path.write_text(text, encoding="utf-8")
    return ("rig" if shipped.startswith("rigs/") else "protocol"), path


def fuzz_cases(tmp: Path, count: int, seed: int = 12) -> list[Case]:
    """``count`` seeded fuzzed variants of the shipped files (valid or refused, never a crash)."""
    rng = random.Random(seed)
    cases = []
    for index in range(count):
        shipped = rng.choice(RIGS + PROTOCOLS)
        value = rng.choice(HOSTILE_VALUES)
        kind, path = fuzz_file(tmp, shipped, seed * 100_000 + index, value)
        cases.append(Case("configs (fuzzed)", f"{shipped}#{index}", partial(attempt, kind, path, known_bad=False)))
    return cases
