"""One session: excluded units are listed, results are written atomically."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from closedloop.data.loader import load_dataset
from closedloop.errors import ClosedLoopError
from closedloop.fitting.model_files import load_config_yaml
from closedloop.fitting.session import FitSettings, fit_dataset
from closedloop.model.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def dataset(archives):
    return load_dataset(archives["session"])


def test_silent_constant_and_nan_units_are_excluded_and_listed(dataset, tiny_config_file, tmp_path):
    rates = dataset.trial_rates.copy()
    rates[:, :, 0] = 0.0  # never fires
    rates[:, :, 1] = 7.0  # fires, but the same to every image
    rates[3, :, 2] = np.nan  # one image has no response at all
    broken = dataclasses.replace(dataset, trial_rates=rates)
    settings = FitSettings(load_config_yaml(tiny_config_file), "cpu", seed=2)

    outcome = fit_dataset(broken, tmp_path, "broken", settings)

    reasons = {u["unit_id"]: u["reason"] for u in outcome.excluded_units}
    ids = dataset.unit_ids
    assert reasons[int(ids[0])] == "never fired"
    assert "zero variance" in reasons[int(ids[1])]
    assert "missing responses" in reasons[int(ids[2])]
    record = json.loads((tmp_path / "broken" / "metrics.json").read_text())
    assert record["excluded_units"] == outcome.excluded_units
    assert record["metrics"]["unit_ids"] == [int(u) for u in ids[3:]]
    assert all(v is not None for v in record["metrics"]["units"]["r"])  # no NaN from the silent units
    checkpoint = load_checkpoint(tmp_path / "broken" / "model.pt", device="cpu")
    assert [u.unit_id for u in checkpoint.excluded_units] == [int(u) for u in ids[:3]]
    assert np.all(np.isfinite(checkpoint.history["train_loss"]))


def test_no_fittable_unit_fails_without_touching_an_earlier_result(dataset, tiny_config_file, tmp_path):
    settings = FitSettings(load_config_yaml(tiny_config_file), "cpu", seed=2)
    fit_dataset(dataset, tmp_path, "s", settings)
    before = (tmp_path / "s" / "metrics.json").read_bytes()
    silent = dataclasses.replace(dataset, trial_rates=np.zeros_like(dataset.trial_rates))

    with pytest.raises(ClosedLoopError, match="no unit can be fitted"):
        fit_dataset(silent, tmp_path, "s", settings)

    assert (tmp_path / "s" / "metrics.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
