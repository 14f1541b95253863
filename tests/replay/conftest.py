"""Small simulated archives (made once per test session) and protocols for the replay tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedloop.config import load_protocol, load_rig
from closedloop.paths import shipped_file
from closedloop.sim.archive import ArchiveSpec, make_archive

PROTOCOL = """\
name: replay-test
seed: {seed}
timing: {{stimulus_ms: 100, blank_ms: {blank}}}
response: {{window_ms: [{start}, {stop}]}}
images: {{n: 20}}
{fit}blocks:
  - {{kind: natural, images: all, repeats: 2}}
"""
# The Table-1 CNN with few epochs: four refits of 40 images take a few seconds on 2 cores.
CNN_FIT = """\
fit:
  architecture: kindel2017
  max_epochs: 60
  patience: 20
  learning_rate: 0.003
"""
# Ridge regression: closed form, so online and offline fits of the same data and split agree exactly.
LINEAR_FIT = """\
fit:
  architecture: linear
  max_epochs: 1
  patience: 1
"""


def write_protocol(
    folder: Path, *, fit: str = CNN_FIT, window_ms=(50, 100), seed: int = 5, name="protocol.yaml", blank_ms: int = 200
):
    path = folder / name
    path.write_text(PROTOCOL.format(seed=seed, start=window_ms[0], stop=window_ms[1], fit=fit, blank=blank_ms))
    return path


@pytest.fixture(scope="session")
def archives(tmp_path_factory) -> dict[str, Path]:
    """A session file (8 units, 40 images × 4 repeats, then 4 grating blocks) and a pvc-8 file
    (8 units, 16 small + 16 large images and the 416 gratings, 3 repeats)."""
    folder = tmp_path_factory.mktemp("archives")
    made = {"session": folder / "session.h5", "pvc8": folder / "pvc8.mat"}
    make_archive(made["session"], ArchiveSpec(layout="session", seed=3, n_units=8, n_images=40, n_repeats=4))
    make_archive(made["pvc8"], ArchiveSpec(layout="pvc8", seed=2, n_units=8, n_images=16, n_repeats=3))
    return made


@pytest.fixture
def rig():
    return load_rig(shipped_file("rigs/sim.yaml"))


@pytest.fixture
def cnn_protocol(tmp_path):
    return load_protocol(write_protocol(tmp_path))


@pytest.fixture
def linear_protocol(tmp_path):
    return load_protocol(write_protocol(tmp_path, fit=LINEAR_FIT, name="linear.yaml"))
