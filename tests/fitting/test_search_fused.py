"""`fit --search N --fuse-trials`: trials of one network shape train together, as if one by one."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from closedloop.cli import main
from closedloop.data.loader import load_dataset
from closedloop.fitting.search import fit_images_only, run_trial
from closedloop.fitting.search_fused import fusion_groups
from closedloop.model.model_config import ModelConfig

# One network shape, different learning rates; no dropout (a fused batch draws it differently).
ONE_SHAPE_SPACE = """\
layers: [1]
filters: [4]
kernels: [5]
pooling: [[2, 2]]
dense_units: [8]
dropout_keep: [1.0, 1.0]
learning_rate: [1.0e-3, 1.0e-2]
"""


def _argv(archives, config, space, out, n_trials, *extra):
    return [
        "fit",
        str(archives["session"]),
        "--out",
        str(out),
        "--config",
        str(config),
        "--space",
        str(space),
        "--search",
        str(n_trials),
        "--seed",
        "7",
        "--workers",
        "1",
        "--device",
        "cpu",
        *extra,
    ]


def _trials(out) -> dict[int, dict]:
    records = [json.loads(p.read_text()) for p in (out / "search" / "trials").glob("*/trial.json")]
    return {record["index"]: record for record in records}


def test_fused_search_equals_the_search_one_by_one_and_resumes(archives, tiny_config_file, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(ONE_SHAPE_SPACE)
    fused = tmp_path / "fused"
    assert main(_argv(archives, tiny_config_file, space, fused, 2, "--fuse-trials")) == 0
    first = {
        index: (fused / "search" / "trials" / f"{index:04d}" / "trial.json").stat().st_mtime_ns for index in (1, 2)
    }
    capsys.readouterr()
    # Asking for more trials resumes: the finished ones stay, the rest train as one group.
    assert main(_argv(archives, tiny_config_file, space, fused, 4, "--fuse-trials")) == 0
    err = capsys.readouterr().err
    assert "2 of 4 trials already finished, 2 to run" in err and "2 trials in 1 fused group(s)" in err
    assert all(
        (fused / "search" / "trials" / f"{i:04d}" / "trial.json").stat().st_mtime_ns == t for i, t in first.items()
    )

    together = _trials(fused)
    assert sorted(together) == [1, 2, 3, 4]
    assert len({record["config"]["learning_rate"] for record in together.values()}) == 4  # groups mixed rates
    tuning = fit_images_only(load_dataset(archives["session"]), 7)
    for index, got in together.items():
        config = ModelConfig.from_dict(got["config"])
        expected = run_trial(tuning, index, config, 7, "cpu", got["params"])[0].to_dict()  # as a search one by one
        assert got["status"] == expected["status"] == "ok" and got["config"] == expected["config"]
        assert got["epochs"] == expected["epochs"] and got["params"] == expected["params"]
        assert np.isclose(got["val_r"], expected["val_r"], atol=1e-3), index
        assert got["curve"].keys() == expected["curve"].keys()
        assert np.allclose(list(got["curve"].values()), list(expected["curve"].values()), rtol=1e-4), index
    with open(fused / "search" / "results.csv", newline="") as handle:
        assert sorted(int(row["trial"]) for row in csv.DictReader(handle)) == [1, 2, 3, 4]
    summary = json.loads((fused / "summary.json").read_text())["search"]
    assert summary["fuse_trials"] is True and summary["finished"] == 4
    assert json.loads((fused / "search" / "search.json").read_text())["fuse_trials"] is True


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--search", "2", "--fuse-trials", "--pruner", "median"], "no single trial can be pruned"),
        (["--fuse-trials"], "--fuse-trials only makes sense with --search N"),
    ],
)
def test_fuse_trials_mistakes_are_one_line_and_exit_2(archives, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(["fit", str(archives["session"]), "--out", str(out), "--device", "cpu", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_trials_group_by_network_shape_in_order():
    base = ModelConfig(core_filters=(4,), core_kernels=(5,), dense_units=8)
    drawn = [
        (1, {}, base),
        (2, {}, base.replace(dense_units=16)),
        (3, {}, base.replace(learning_rate=0.01, dropout_keep=0.5)),
        (4, {}, base.replace(architecture="linear")),
        (5, {}, base.replace(architecture="linear")),
    ]
    groups = fusion_groups(drawn)
    assert [[index for index, _, _ in group] for group in groups] == [[1, 3], [2], [4], [5]]


def test_a_fused_group_is_one_ray_task(archives, ray_cluster, tmp_path):
    from closedloop.fitting.executors import LocalExecutor, RayExecutor, TaskResources
    from closedloop.fitting.search_run import SearchPlan, run_search
    from closedloop.fitting.search_space import load_search_space

    space = tmp_path / "space.yaml"
    space.write_text(ONE_SHAPE_SPACE)
    base = ModelConfig(max_epochs=6, patience=3, stop_check_every=3)
    plan = SearchPlan("s1", 2, 7, base, load_search_space(space), device="cpu", fuse=True)
    dataset = load_dataset(archives["session"])
    on_ray = RayExecutor(ray_cluster, TaskResources())
    try:
        remote = run_search(plan, dataset, tmp_path / "ray", on_ray, slots=2)
    finally:
        on_ray.close()
    local = run_search(plan, dataset, tmp_path / "local", LocalExecutor(1, TaskResources()), slots=1)
    assert [t.index for t in remote.trials] == [t.index for t in local.trials]
    for a, b in zip(remote.trials, local.trials):
        assert a.status == b.status == "ok" and np.isclose(a.val_r, b.val_r, atol=1e-4)
    assert (tmp_path / "ray" / "trials" / "0002" / "model.pt").exists()
