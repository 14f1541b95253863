"""Hostile and fuzzed rig/protocol files: each loads or raises ConfigError, one line, in bounded time."""

from __future__ import annotations

import string
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop.errors import ConfigError

from .config_corpus import (
    PROTOCOLS,
    RIGS,
    ROOT,
    attempt,
    corpus_cases,
    load_pair,
    mutate,
)

# Values hypothesis draws for a fuzzed key: numbers of any size, text, lists and mappings.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=string.printable, max_size=30),
    st.sampled_from(["1e308", "-1e308", "1e-400", "all", "max", "p0", "p100", "99999hz", "cuda:99999999999999999999"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def _check(kind: str, path: Path) -> None:
    started = time.monotonic()
    try:
        load_pair(kind, path)
    except ConfigError as error:
        assert "\n" not in str(error).strip(), str(error)
        assert str(error).startswith(str(path))
    # Any other exception fails the test with its traceback.
    assert time.monotonic() - started < 10, "a config load must never hang"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shipped=st.sampled_from(RIGS + PROTOCOLS), value=VALUES, seed=st.integers(0, 2**32))
def test_fuzzed_config_loads_or_is_refused(tmp_path: Path, shipped: str, value: object, seed: int) -> None:
    import random

    document = mutate(yaml.safe_load((ROOT / shipped).read_text()), random.Random(seed), value)
    path = tmp_path / "fuzzed.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
    _check("rig" if shipped.startswith("rigs/") else "protocol", path)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shipped=st.sampled_from(RIGS + PROTOCOLS),
    edits=st.lists(st.tuples(st.floats(0, 1), st.text(max_size=6)), min_size=1, max_size=4),
)
def test_damaged_config_text_is_refused_cleanly(tmp_path: Path, shipped: str, edits: list[tuple[float, str]]) -> None:
    text = (ROOT / shipped).read_text()
    for where, junk in edits:
        cut = int(where * len(text))
        text = text[:cut] + junk + text[cut + len(junk) // 2 :]
    path = tmp_path / "damaged.yaml"
    path.write_text(text, encoding="utf-8")
    _check("rig" if shipped.startswith("rigs/") else "protocol", path)


def test_every_hostile_file_is_refused_with_one_line(tmp_path: Path) -> None:
    outcomes = {case.name: case.run() for case in corpus_cases(tmp_path)}
    bad = {name: outcome for name, outcome in outcomes.items() if outcome.kind != "refused"}
    assert not bad
    assert {"5 MB file", "/dev/zero", "bad_alias_bomb.yaml", "bad_nested.yaml"} <= set(outcomes)


def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path: Path) -> None:
    # 9 levels of 9 aliases: 387 million values if expanded; refused on the node graph.
    outcome = attempt("rig", ROOT / "tests" / "configs" / "bad_alias_bomb.yaml", known_bad=True)
    assert outcome.kind == "refused" and "expand to more than" in outcome.detail


def test_a_big_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("name: x\n" + "# padding\n" * 700_000)
    with pytest.raises(ConfigError, match="larger than 64 KiB") as caught:
        load_pair("rig", path)
    assert caught.value.path == str(path)


def test_a_file_just_under_the_limit_still_loads(tmp_path: Path) -> None:
    text = (ROOT / "rigs" / "sim.yaml").read_text()
    path = tmp_path / "commented.yaml"
    path.write_text(text + "#" * (64 * 1024 - len(text.encode()) - 2) + "\n")
    load_pair("rig", path)


def test_an_image_pool_too_big_for_memory_is_refused(tmp_path: Path) -> None:
    rig = yaml.safe_load((ROOT / "rigs" / "sim.yaml").read_text())
    rig["stimulus"]["size_px"] = 1080  # the whole display height
    rig_path = tmp_path / "rig.yaml"
    rig_path.write_text(yaml.safe_dump(rig))
    protocol = yaml.safe_load((ROOT / "protocols" / "kindel2017.yaml").read_text())
    protocol["images"]["n"] = 1000  # 1000 × 1080² float32 = 4.3 GiB
    protocol_path = tmp_path / "protocol.yaml"
    protocol_path.write_text(yaml.safe_dump(protocol, sort_keys=False))
    from closedloop.config import load_protocol, load_rig, validate

    with pytest.raises(ConfigError, match=r"images.n: 1000 images of 1080×1080 px take 4.3 GiB; at most 920 fit"):
        validate(load_rig(rig_path), load_protocol(protocol_path))
