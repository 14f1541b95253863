"""Plug-in brains from the rig file: ``acquisition.brain`` (population, callable, twin) reaches the
simulated array of `closedloop demo`, and the loop report grades against that brain's own truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from closedloop.acquisition import BrainSpec
from closedloop.cli import main
from closedloop.config import load_rig
from closedloop.errors import ConfigError
from closedloop.sim.brain import spec_from_rig
from tests.runner.helpers import PROTOCOL, RIG, SCENARIO

# A lab's own model: 4 units, each driven by the contrast of one quadrant of the image.
BRAIN_MODULE = """
import numpy as np


class QuadrantBrain:
    def __call__(self, images):
        images = np.asarray(images, dtype=np.float64)
        h, w = images.shape[1] // 2, images.shape[2] // 2
        quadrants = [images[:, :h, :w], images[:, :h, w:], images[:, h:, :w], images[:, h:, w:]]
        return np.stack([2.0 + 150.0 * q.std(axis=(1, 2)) for q in quadrants], axis=1)
"""


def _rig_with(tmp_path, brain: str):
    path = tmp_path / "rig.yaml"
    text = RIG.format(scenario="unused").replace("  scenario: unused\n", f"  brain: {brain}\n")
    path.write_text(text)
    return path


def test_a_callable_brain_named_in_the_rig_drives_the_demo_and_is_its_ground_truth(tmp_path, capsys):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "lab_v1.py").write_text(BRAIN_MODULE)
    rig = _rig_with(tmp_path, '{kind: callable, target: "lab_v1:QuadrantBrain", import_path: [models]}')
    spec = spec_from_rig(load_rig(rig))
    assert spec.kind == "callable" and spec.import_path == (str(tmp_path / "models"),)
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(PROTOCOL.format(top_k=2, iterations=1))
    out = tmp_path / "demo"
    status = main(
        [
            "demo",
            "--out",
            str(out),
            "--rig",
            str(rig),
            "--protocol",
            str(protocol),
            "--device",
            "cpu",
            "--json",
            str(out / "demo.json"),
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0, printed
    report = json.loads((out / "demo.json").read_text())["report"]
    assert report["iterations"] and report["has_truth"]  # graded against the callable's own rates
    from closedloop.data.session import SessionReader

    with SessionReader(out / "demo.h5") as reader:
        np.testing.assert_array_equal(reader.unit_ids, [1, 2, 3, 4])  # the callable's four units
    # the demo's session, synthesized images included, exports to NWB that DANDI accepts
    from closedloop.data.nwb import export_nwb
    from tests.data.test_nwb_dandi import SUBJECT, problems

    (tmp_path / "meta.yaml").write_text(SUBJECT)
    export_nwb(out / "demo.h5", out / "demo.nwb", metadata=tmp_path / "meta.yaml")
    assert problems(out / "demo.nwb") == []


def test_a_population_brain_and_its_overrides(tmp_path):
    (tmp_path / "pop.yaml").write_text(SCENARIO.format(n_units=8))
    spec = spec_from_rig(load_rig(_rig_with(tmp_path, "{kind: population, scenario: pop.yaml, n_units: 3, seed: 9}")))
    assert spec == BrainSpec(scenario=str(tmp_path / "pop.yaml"), n_units=3, seed=9, size_px=66)
    assert len(spec.build().unit_ids) == 3


def test_a_twin_brain_names_its_checkpoint_and_archive_relative_to_the_rig(tmp_path):
    (tmp_path / "fits").mkdir()
    for name in ("model.pt", "p2.mat"):
        (tmp_path / "fits" / name).write_bytes(b"")
    spec = spec_from_rig(load_rig(_rig_with(tmp_path, "{kind: twin, checkpoint: fits/model.pt, archive: fits/p2.mat}")))
    assert (spec.kind, spec.checkpoint, spec.archive) == (
        "twin",
        str(tmp_path / "fits" / "model.pt"),
        str(tmp_path / "fits" / "p2.mat"),
    )


@pytest.mark.parametrize(
    ("brain", "message"),
    [
        (
            "{kind: callable, target: lab_v1.QuadrantBrain}",
            "acquisition.brain.target: write it as package.module:callable",
        ),
        ("{kind: twin, checkpoint: model.pt, archive: a.mat}", "acquisition.brain.checkpoint: "),
        ("{kind: oracle}", "acquisition.brain"),
    ],
)
def test_bad_brains_are_refused_with_file_line_and_field(tmp_path, brain, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_rig(_rig_with(tmp_path, brain))
    assert str(caught.value).startswith(f"{tmp_path / 'rig.yaml'}:")


def test_scenario_and_brain_together_are_refused(tmp_path):
    path = tmp_path / "rig.yaml"
    path.write_text(RIG.format(scenario="sim/default.yaml") + "")
    text = path.read_text().replace("  seed: 1\n", "  seed: 1\n  brain: {kind: population}\n")
    path.write_text(text)
    with pytest.raises(ConfigError, match="give either scenario or brain"):
        load_rig(path)
