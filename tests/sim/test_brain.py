"""Pluggable brains by dotted path, and their checks."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from closedloop.errors import ClosedLoopError
from closedloop.sim import Brain, SimulatedV1, load_brain

MODULE = textwrap.dedent("""
    import numpy as np

    def good(images):
        return np.full((len(images), 3), 5.0)

    def wrong_shape(images):
        return np.zeros((len(images) + 1, 3))

    def flat(images):
        return np.zeros(len(images))

    def with_nan(images):
        out = np.ones((len(images), 2))
        out[0, 0] = np.nan
        return out

    def negative(images):
        return -np.ones((len(images), 2))

    def broken(images):
        raise RuntimeError("model weights missing")

    def text(images):
        return "rates"

    not_callable = 42

    class Population:
        def __call__(self, images):
            return np.ones((len(images), 4))

    class NeedsArguments:
        def __init__(self, path):
            pass

    class Namespace:
        @staticmethod
        def rates(images):
            return np.ones((len(images), 2))
""")


@pytest.fixture
def brains(tmp_path, monkeypatch):
    (tmp_path / "my_brains.py").write_text(MODULE)
    (tmp_path / "crashing_brains.py").write_text("raise ValueError('bad config at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_brains"


def test_good_brains_load(brains):
    brain = load_brain(f"{brains}:good")
    assert brain(np.zeros((3, 66, 66))).shape == (3, 3)
    assert isinstance(load_brain(f"{brains}:Population"), Brain)
    assert load_brain(f"{brains}:Namespace.rates")(np.zeros((1, 66, 66))).shape == (1, 2)


def test_simulated_v1_is_a_brain():
    brain = load_brain("closedloop.sim:SimulatedV1")
    assert isinstance(brain, SimulatedV1) and isinstance(brain, Brain)


@pytest.mark.parametrize(
    "target, fragment",
    [
        ("no_colon_here", "package.module:callable"),
        ("a:b:c", "package.module:callable"),
        (":good", "package.module:callable"),
        ("definitely_not_a_module_xyz:good", "cannot import module"),
        ("crashing_brains:anything", "ValueError: bad config at import"),
        ("my_brains:missing", "no attribute"),
        ("my_brains:not_callable", "not callable"),
        ("my_brains:NeedsArguments", "no arguments"),
        ("my_brains:broken", "model weights missing"),
        ("my_brains:wrong_shape", "shape"),
        ("my_brains:flat", "shape"),
        ("my_brains:with_nan", "NaN"),
        ("my_brains:negative", "negative"),
        ("my_brains:text", "not an array"),
    ],
)
def test_bad_brains_raise_clear_errors(brains, target, fragment):
    with pytest.raises(ClosedLoopError, match=fragment):
        load_brain(target)
