"""benchmarks/deep_reference.py: the reference model that is given the deep brain's first layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


def benchmark_module():
    return load_benchmark("deep_reference")


def test_the_reference_learns_a_rectified_linear_unit_from_few_images():
    module = benchmark_module()
    rng = np.random.default_rng(0)
    features = rng.normal(size=(260, 40))
    drive = features @ rng.normal(size=40) / np.sqrt(40)
    rates = np.maximum(drive, 0.0) + 0.05 * rng.normal(size=260)
    predicted = module.reference_prediction(features[:200], rates[:200], features[200:])
    assert module.pearson(predicted, rates[200:]) > 0.85
    # and it is no oracle: rates unrelated to the features are not predicted
    unrelated = rng.normal(size=260)
    guess = module.reference_prediction(features[:200], unrelated[:200], features[200:])
    assert abs(module.pearson(guess, unrelated[200:])) < 0.35


def test_the_benchmark_scores_a_small_deep_archive_by_depth(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # scenario paths are relative to the repository, as the benchmarks run
    module = benchmark_module()
    assert module.main(["--units", "9", "--images", "60", "--repeats", "4", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    named = ("layer1", "layer2", "layer3", "all")
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split() and line.split()[0] in named}
    assert set(rows) == {"layer1", "layer2", "layer3", "all"}
    assert int(rows["all"][1]) == 9 and sum(int(rows[d][1]) for d in ("layer1", "layer2", "layer3")) == 9
    assert np.isfinite(float(rows["all"][2]))
    assert rows["all"][3] == "–"  # no fit given to compare with
