"""Monitor tests run offscreen: the Qt platform is chosen before anything imports Qt."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from closedloop.monitor.synthetic import SyntheticSession  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_messages() -> list:
    """A small simulated closed-loop session (natural block, fit, one loop iteration)."""
    session = SyntheticSession(n_units=12, n_images=10, repeats=2, iterations=1, synth_units=2, seed=3, n_candidates=30)
    return list(session.messages())


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
