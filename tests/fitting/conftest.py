"""Small seeded archives of both layouts and a tiny model configuration for fast fits."""

from __future__ import annotations

import pytest

from closedloop.sim.archive import ArchiveSpec, make_archive

TINY_YAML = """\
# a network small enough to fit in about a second
model:
  core_filters: [4]
  core_kernels: [5]
  dense_units: 16
  max_epochs: 10
  patience: 5
  stop_check_every: 5
"""


@pytest.fixture(scope="session")
def archives(tmp_path_factory):
    """A session-layout .h5, a pvc-8 .mat and a session with too few images to split."""
    folder = tmp_path_factory.mktemp("archives")
    paths = {
        "session": folder / "s1.h5",
        "pvc8": folder / "01.mat",
        "few": folder / "few.h5",
    }
    make_archive(paths["session"], ArchiveSpec(layout="session", seed=1, n_units=6, n_images=40, n_repeats=4))
    make_archive(paths["pvc8"], ArchiveSpec(layout="pvc8", seed=2, n_units=6, n_images=30, n_repeats=3))
    make_archive(paths["few"], ArchiveSpec(layout="session", seed=3, n_units=4, n_images=8, n_repeats=3))
    return paths


@pytest.fixture(scope="session")
def tiny_config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("configs") / "tiny.yaml"
    path.write_text(TINY_YAML)
    return path
