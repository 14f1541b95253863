"""benchmarks/shared_core.py: the deep family's sessions record one network unless asked otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("brains, same_network", [("one", True), ("each", False)])
def test_deep_sessions_share_a_network_only_when_asked(tmp_path, monkeypatch, brains, same_network):
    from closedloop.sim.archive import population_for, spec_from_archive

    monkeypatch.chdir(ROOT)  # scenario paths are relative to the repository, as the benchmarks run
    module = load_benchmark("shared_core")
    args = module.parse_args(
        ["--sessions", "2", "--brains", brains, "--units", "4", "--images", "12", "--repeats", "2"]
        + ["--out", str(tmp_path)]
    )
    first, second = (population_for(spec_from_archive(path)) for path in module.sessions("deep", args))
    assert (first.seed, second.seed) == (1, 2)
    assert np.array_equal(first.stage.w2, second.stage.w2) == same_network
    assert not np.array_equal(first.parameters["x_deg"], second.parameters["x_deg"])
