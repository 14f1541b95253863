"""Synthesis that says how sure it is: ensemble spread, natural contrast bound, skipped poorly fitted units."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from closedloop.cli import main
from closedloop.errors import ClosedLoopError
from closedloop.data.loader import load_dataset
from closedloop.model.checkpoint import check_compatible, load_checkpoint
from closedloop.model.linear import LinearPixelModel
from closedloop.model.model_config import ModelConfig
from closedloop.model.networks import build_network, extrapolating_tails, inverse_softplus
from closedloop.synth.canvas import Canvas
from closedloop.synth.contrast import FLOOR_QUANTILE, contrast_statistics, default_bound, rms_contrast
from closedloop.synth.library import read_library
from closedloop.synth.optimise import SynthesisSettings, synthesize
from closedloop.synth.plan import heldout_r, synthesize_from_checkpoint, well_fit
from closedloop.synth.targets import SynthesisJob, Target
from _synth_models import linear_filters


def test_rms_contrast_is_measured_inside_the_varying_aperture():
    rng = np.random.default_rng(0)
    images = np.full((20, 10, 10), 0.5)
    images[:, 2:8, 2:8] += rng.normal(0, 0.1, (20, 6, 6))
    np.testing.assert_allclose(rms_contrast(images), images[:, 2:8, 2:8].std(axis=(1, 2)))
    stats = contrast_statistics(images)
    assert default_bound(stats) == pytest.approx(np.quantile(rms_contrast(images), 0.95))
    assert default_bound({}) is None and default_bound(None) is None


def test_well_fit_keeps_units_at_or_above_the_threshold():
    kept, skipped = well_fit(np.array([0, 1, 2, 3]), np.array([0.5, 0.29, np.nan, 0.3]), 0.3)
    assert kept.tolist() == [0, 3] and skipped.tolist() == [1, 2]
    assert well_fit(np.array([1]), None, 0.3)[0].tolist() == [1]


def test_images_carry_the_ensemble_spread_and_respect_the_natural_contrast(tiny_checkpoint):
    model_path, _ = tiny_checkpoint
    checkpoint = load_checkpoint(model_path, "cpu")
    unit = int(checkpoint.unit_ids[np.nanargmax(heldout_r(checkpoint.metrics, checkpoint.unit_ids.size))])
    made = synthesize_from_checkpoint(
        checkpoint, [unit], "p50,max", settings=SynthesisSettings(steps=40), min_heldout_r=None
    )
    result = made.result
    bound = default_bound(checkpoint.metrics["image_statistics"])
    floor = default_bound(checkpoint.metrics["image_statistics"], FLOOR_QUANTILE)
    assert made.contrast["max_contrast"] == pytest.approx(bound) and "natural" in made.contrast["source"]
    assert made.contrast["min_contrast"] == pytest.approx(floor) and 0 < floor < bound
    inside = result.canvas.aperture_mask()
    rms = result.images[:, inside].std(axis=1)
    rated = np.asarray([not job.maximise for job in result.jobs])
    assert rms.max() <= bound + 1e-4 and rms[rated].min() >= floor - 1e-3  # the floor is for rate targets
    with torch.no_grad():
        members = checkpoint.model.forward_members(torch.as_tensor(result.images)).numpy()
    column = int(np.flatnonzero(checkpoint.unit_ids == unit)[0])
    np.testing.assert_allclose(result.spread_hz, members[:, :, column].std(axis=0), rtol=1e-4, atol=1e-4)
    assert np.all(result.spread_hz > 0)  # two members never agree exactly
    unbounded = synthesize_from_checkpoint(
        checkpoint, [unit], "max", settings=SynthesisSettings(steps=40), min_heldout_r=None, contrast="none"
    )
    assert unbounded.result.canvas.max_contrast is None and unbounded.result.canvas.min_contrast is None


def test_a_one_member_model_has_no_spread_rather_than_a_certain_zero(linear_model):
    jobs = [SynthesisJob(0, Target("max"), float("nan")), SynthesisJob(1, Target("p50"), 12.0)]
    result = synthesize(linear_model, jobs, canvas=Canvas(), scale_hz=np.array([30.0, 30.0]))
    assert linear_model.n_members == 1 and np.all(np.isfinite(result.achieved_hz))
    assert np.all(np.isnan(result.spread_hz)) and np.all(np.isnan(result.predictions_spread))


def test_the_disagreement_penalty_trades_rate_for_agreement(tiny_checkpoint):
    model_path, _ = tiny_checkpoint
    checkpoint = load_checkpoint(model_path, "cpu")
    units = [int(u) for u in checkpoint.unit_ids]
    plain = synthesize_from_checkpoint(
        checkpoint, units, "max", settings=SynthesisSettings(steps=60), min_heldout_r=None, seed=1
    )
    careful = synthesize_from_checkpoint(
        checkpoint,
        units,
        "max",
        min_heldout_r=None,
        seed=1,
        settings=SynthesisSettings(steps=60, disagreement_weight=5.0),
    )
    assert np.mean(careful.result.spread_hz) < np.mean(plain.result.spread_hz)


def test_cli_skips_units_below_the_threshold_and_records_it(tiny_checkpoint, tmp_path, capsys):
    model_path, _ = tiny_checkpoint
    checkpoint = load_checkpoint(model_path, "cpu")
    r = heldout_r(checkpoint.metrics, checkpoint.unit_ids.size)
    threshold = float(np.nanmedian(r))
    status = main(
        [
            "synth",
            str(model_path),
            "--targets",
            "p50,max",
            "--steps",
            "10",
            "--device",
            "cpu",
            "--min-r",
            str(threshold),
            "--out",
            str(tmp_path),
            "--presentations",
            "5",
            "--json",
            str(tmp_path / "s.json"),
        ]
    )
    printed = capsys.readouterr().out
    assert status == (1 if json.loads((tmp_path / "s.json").read_text())["not_reached"] else 0)  # 10 steps
    below = checkpoint.unit_ids[~(r >= threshold)]
    assert below.size >= 1 and all(f"skipped unit {u}: held-out r" in printed for u in below)
    library = read_library(tmp_path / "library.h5")
    assert set(library.unit_id.tolist()) == set(checkpoint.unit_ids[r >= threshold].tolist())
    assert np.all(np.isfinite(library.spread_hz)) and "± sd" in printed
    factor, interval = checkpoint.metrics["heldout_error_over_spread"], checkpoint.metrics["heldout_interval_sds"]
    assert f"rates missed by {factor:.1f}x it (rms)" in printed and "not an error bar" in printed
    assert f"mean rate over 5 presentations (--presentations): promise ± {interval:.1f} x √(sd² + se²)" in printed
    header = next(line for line in printed.splitlines() if "achieved Hz" in line)
    assert "± sd" in header and "± 95 %" in header
    extra = json.loads(library.attrs["extra"])
    assert {row["unit_id"] for row in extra["skipped_units"]} == set(below.tolist())
    assert json.loads(library.attrs["canvas"])["max_contrast"] == pytest.approx(extra["contrast_bound"]["max_contrast"])
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["min_heldout_r"] == threshold and len(summary["skipped_units"]) == below.size
    assert summary["heldout_error_over_spread"] == factor and summary["heldout_interval_sds"] == interval
    # each image's ± 95 %: k √(sd² + noise · prediction / 5), the unit's noise as the fit recorded it;
    # a "max" image keeps only the interval's lower end
    noise = dict(zip(checkpoint.unit_ids.tolist(), checkpoint.rate_statistics.noise_per_hz))

    def half(row: dict) -> float:
        return interval * np.hypot(row["spread_hz"], np.sqrt(noise[row["unit"]] * row["promised_hz"] / 5))

    rates = [row for row in summary["images"] if row["target"] == "p50"]
    maxed = [row for row in summary["images"] if row["target"] == "max"]
    assert summary["presentations"] == 5 and [row["interval_hz"] for row in rates] == pytest.approx(
        [half(row) for row in rates]
    )
    assert all(row["interval_hz"] is None for row in maxed)
    # a rate target is promised its prediction, a "max" image its prediction x the fit's top ratio
    ratio = checkpoint.metrics["heldout_top_ratio"]
    assert summary["heldout_top_ratio"] == ratio and ratio > 0
    assert [row["promised_hz"] for row in rates] == [row["achieved_hz"] for row in rates]
    assert [row["promised_hz"] for row in maxed] == pytest.approx([ratio * row["achieved_hz"] for row in maxed])
    assert f"'max' images are promised {ratio:.2f} x their prediction" in printed
    floors = [max(row["promised_hz"] - half(row), 0.0) for row in maxed]
    assert [row["at_least_hz"] for row in maxed] == pytest.approx(floors)
    assert all(f" {row['interval_hz']:.1f} " in printed for row in rates)
    assert all(f" ≥{row['at_least_hz']:.1f} " in printed for row in maxed)
    assert "'max' images get only its lower end" in printed


def test_a_model_that_records_no_interval_says_so():
    from closedloop.commands.synth import _spread_note

    note = _spread_note(None, None, 20, np.ones(3))
    assert "not an error bar" in note and "records no 95 % interval, so ± 95 % is empty" in note
    assert "records no trial noise, so ± 95 % is empty" in _spread_note(1.5, 3.0, 20, None)


def test_a_model_that_records_no_top_ratio_promises_max_images_their_prediction():
    from closedloop.commands.synth import _max_note

    assert "promised their prediction: this model records no measured / predicted rate" in _max_note(None)
    assert "promised 0.81 x their prediction" in _max_note(0.81)


def test_the_fit_records_how_far_its_held_out_misses_exceed_the_ensemble_spread(tiny_checkpoint):
    model_path, archive = tiny_checkpoint
    checkpoint = load_checkpoint(model_path, "cpu")
    dataset = load_dataset(archive)
    columns = check_compatible(checkpoint, dataset)
    held_out = checkpoint.split.held_out
    images, trials = dataset.images[held_out], dataset.trial_rates[held_out][:, :, columns]
    with torch.no_grad():
        members = checkpoint.model.forward_members(torch.as_tensor(images)).numpy()  # (2, images, units)
    mean, spread = members.mean(axis=0), members.std(axis=0)
    se = trials.std(axis=1, ddof=1) / np.sqrt(trials.shape[1])
    expected = np.sqrt(np.mean((trials.mean(axis=1) - mean) ** 2 - se**2) / np.mean(spread**2))
    assert checkpoint.metrics["heldout_error_over_spread"] == pytest.approx(expected, rel=1e-3)
    assert expected > 0
    # the 95 % interval's half-width in spreads: the ⌈(n + 1)·0.95⌉-th smallest |miss| / spread
    scores = np.sort((np.abs(trials.mean(axis=1) - mean) / np.sqrt(spread**2 + se**2)).ravel())
    interval = scores[int(np.ceil((scores.size + 1) * 0.95)) - 1]
    assert checkpoint.metrics["heldout_interval_sds"] == pytest.approx(interval, rel=1e-3)
    # measured / predicted at each unit's top-predicted held-out image, median over units
    top = np.argmax(mean, axis=0)
    units = np.arange(mean.shape[1])
    ratio = np.median(trials.mean(axis=1)[top, units] / mean[top, units])
    assert checkpoint.metrics["heldout_top_ratio"] == pytest.approx(ratio, rel=1e-3)


def test_no_unit_good_enough_is_one_clear_error(tiny_checkpoint, tmp_path, capsys):
    model_path, _ = tiny_checkpoint
    assert main(["synth", str(model_path), "--min-r", "0.999", "--out", str(tmp_path)]) == 2
    assert "no selected unit has a held-out r >= 0.999" in capsys.readouterr().err
    checkpoint = load_checkpoint(model_path, "cpu")
    with pytest.raises(ClosedLoopError, match="positive RMS contrast"):
        synthesize_from_checkpoint(
            checkpoint,
            "all",
            "max",
            contrast=-1.0,
            min_heldout_r=None,
            canvas=Canvas.for_preprocessing(checkpoint.preprocessing),
        )


@pytest.fixture
def split_ensemble():
    """Four members of one unit: 0-2 see the Gabor-like filter, member 3 the centre-surround one."""
    filters = linear_filters()
    model = LinearPixelModel(33 * 33, 1, n_members=4)
    with torch.no_grad():
        for member in range(4):
            model.weight[member, :, 0] = torch.as_tensor(2.0 * filters[0 if member < 3 else 1].ravel())
        model.bias.fill_(10.0)
    return model.eval()


def _members(model, images):
    with torch.no_grad():
        return model.forward_members(torch.as_tensor(images)).numpy()[:, :, 0]


def test_held_out_members_judge_the_images_the_others_optimised(split_ensemble):
    maximise = SynthesisJob(0, Target("max"), float("nan"))
    jobs = [maximise, SynthesisJob(0, Target("p50"), 14.0), maximise, maximise]
    settings = SynthesisSettings(steps=60, heldout_members=1)
    result = synthesize(split_ensemble, jobs, canvas=Canvas(), scale_hz=np.array([30.0]), settings=settings)
    members = _members(split_ensemble, result.images)  # (member, image)
    # Image i is judged by member i (the held-out member rotates) and optimised by the other three.
    np.testing.assert_allclose(result.achieved_hz, np.diag(members), rtol=1e-5)
    np.testing.assert_allclose(result.predictions[:, 0], np.diag(members), rtol=1e-5)
    others = lambda i: np.delete(members[:, i], i)  # noqa: E731
    assert result.converged[1] and abs(others(1).mean() - 14.0) <= settings.tolerance_hz
    # Image 3: the Gabor-like members drove it hard; the centre-surround member that judges it was never asked.
    assert others(3).min() > 40.0 and result.achieved_hz[3] < 0.5 * others(3).mean()
    np.testing.assert_allclose(result.spread_hz, members.std(axis=0), rtol=1e-4)  # all four members
    assert result.extra["heldout_members"] == 1


def test_every_member_optimises_and_reports_without_held_out_members(split_ensemble):
    jobs = [SynthesisJob(0, Target("max"), float("nan"))]
    for settings in (SynthesisSettings(steps=30, heldout_members=0), SynthesisSettings(steps=30, heldout_members=3)):
        # 0 asks for none; 3 would leave a single member to optimise, so none are held out either.
        result = synthesize(split_ensemble, jobs, canvas=Canvas(), scale_hz=np.array([30.0]), settings=settings)
        np.testing.assert_allclose(result.achieved_hz, _members(split_ensemble, result.images).mean(axis=0), rtol=1e-5)
        assert result.extra["heldout_members"] == 0


def test_max_images_are_pushed_past_a_flat_tail_but_promised_no_more_than_its_ceiling():
    config = ModelConfig(
        architecture="factorised", core_filters=(4,), core_kernels=(5,), pool_layers=(), output_knots=3,
        output_tail="flat", ensemble_size=1, seed=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_network(config, n_units=1)
    model.set_output_statistics(torch.tensor([10.0]), torch.tensor([5.0]))
    with torch.no_grad():
        model.readout.feature_weight.mul_(100.0)  # a drive that images can move by several units
        model.readout.bias -= model.readout(model.core(torch.as_tensor(Canvas().blank(1))))[0]  # grey: z = 0
    jobs = [SynthesisJob(0, Target("max"), float("nan")), SynthesisJob(0, Target("rate", 12.0), 12.0)]
    settings = SynthesisSettings(steps=100, heldout_members=0)
    result = synthesize(model.eval(), jobs, canvas=Canvas(), scale_hz=np.array([20.0]), settings=settings)
    images = torch.as_tensor(result.images)
    with torch.no_grad():
        promised = model(images)[:, 0].numpy()
        with extrapolating_tails(torch.ones(2, dtype=torch.bool)):
            driven = model(images)[:, 0].numpy()
    ceiling = float(torch.nn.functional.softplus(inverse_softplus(torch.tensor(10.0)) + 5.0 * 3.0))  # z = 3
    np.testing.assert_allclose(result.achieved_hz, promised, rtol=1e-5)
    assert result.achieved_hz[0] == pytest.approx(ceiling, rel=1e-4)
    assert driven[0] > ceiling + 5.0  # the drive went on past the last hinge (z > 4)
    assert result.converged[1] and abs(result.achieved_hz[1] - 12.0) <= settings.tolerance_hz
