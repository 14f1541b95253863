"""The loop report on a small simulated loop with the real model server, and benchmarks/loop.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from closedloop.config import load_protocol
from closedloop.data.session import SessionReader
from closedloop.data.session_format import StimulusKind
from closedloop.errors import DataFileError
from closedloop.loop import run_until_done, simulated_components
from closedloop.model.checkpoint import load_checkpoint
from closedloop.reports.loop_report import loop_report
from closedloop.runner import journal_path
from closedloop.runner.journal import TIMES, BlockRecord
from closedloop.server import ModelServer
from closedloop.server.settings import ServerSettings
from closedloop.transport import Endpoints

from tests.benchmark_scripts import load_benchmark

from .helpers import FAST, PROTOCOL

ROOT = Path(__file__).resolve().parents[2]
WINDOW_S, DURATION_S = (0.05, 0.10), 0.1  # the protocol's response window; 6 frames at 60 Hz

# Three graded targets per unit, so per-unit correlations exist; two iterations; two ensemble
# members, so synthesized images carry a spread.
LOOP_PROTOCOL = PROTOCOL.replace("targets: [p50, max]", "targets: [p20, p50, p80, max]").replace(
    "  patience: 2\n", "  patience: 2\n  ensemble: 2\n"
)


def write_loop_protocol(folder: Path, iterations: int = 2, shown: int = 2) -> Path:
    path = folder / "loop.yaml"
    text = LOOP_PROTOCOL.format(top_k=2, iterations=iterations)
    path.write_text(
        text.replace("present_synthesized\n        repeats: 2", f"present_synthesized\n        repeats: {shown}")
    )
    return path


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory, brain_and_units):
    """One closed loop (real server, models saved), shared by the tests of this module."""
    return _closed_loop(tmp_path_factory.mktemp("loop"), brain_and_units, shown=2)


@pytest.fixture(scope="module")
def shown_once_run(tmp_path_factory, brain_and_units):
    """The same loop with every synthesized image shown once."""
    return _closed_loop(tmp_path_factory.mktemp("once"), brain_and_units, shown=1)


def _closed_loop(folder: Path, brain_and_units, shown: int):
    from closedloop.config import load_rig

    from .helpers import RIG, SCENARIO, N_UNITS

    (folder / "scenario.yaml").write_text(SCENARIO.format(n_units=N_UNITS))
    (folder / "rig.yaml").write_text(RIG.format(scenario=folder / "scenario.yaml"))
    rig, protocol = load_rig(folder / "rig.yaml"), load_protocol(write_loop_protocol(folder, shown=shown))
    brain, unit_ids, channels = brain_and_units
    endpoints = Endpoints.inproc()
    settings = ServerSettings.from_configs(
        rig,
        protocol,
        request_endpoint=endpoints.model,
        events_endpoint=endpoints.model_events,
        out_dir=folder / "models",
        device="cpu",
    )
    loop = simulated_components(
        rig,
        protocol,
        folder / "s.h5",
        endpoints=endpoints,
        brain=brain,
        units=(unit_ids, channels),
        model_server=ModelServer("model", settings),
        settings=FAST,
    )
    report = run_until_done(loop, timeout_s=90)
    assert report.ok and loop.runner.finished
    return folder, brain


def records(session: Path) -> list[BlockRecord]:
    return [BlockRecord.from_json(line) for line in journal_path(session).read_text().splitlines()]


def test_the_journal_records_when_each_turnaround_moment_happened(loop_run):
    folder, _ = loop_run
    journal = records(folder / "s.h5")
    assert {k for r in journal for k in r.times} <= set(TIMES)
    for r in journal:
        t = r.times
        if r.kind in ("natural", "present_synthesized"):
            assert t["step_started"] <= t["block_sent"] <= t["responses_in_hand"] <= t["responses_computed"]
        if r.kind == "fit":
            assert t["fit_requested"] <= t["fit_accepted"] <= t["model_updated"]
        if r.kind == "synthesize":
            assert t["synthesis_requested"] <= t["synthesis_received"] <= t["images_stored"]
    for before, after in zip(journal, journal[1:]):  # a block's responses reach the server before the next step
        if before.kind in ("natural", "present_synthesized"):
            assert (
                before.times["responses_computed"] <= after.times["responses_delivered"] <= after.times["step_started"]
            )


def test_the_report_matches_a_recomputation_from_the_session_file(loop_run):
    folder, brain = loop_run
    session = folder / "s.h5"
    report = loop_report(session, brain, models_dir=folder / "models")
    with SessionReader(session) as reader:
        stimuli, trials, blocks = reader.stimuli, reader.trials, reader.blocks
        responses, unit_ids = reader.responses.astype(np.float64), reader.unit_ids
        pixels = reader.stimulus_pixels
    column = {int(u): i for i, u in enumerate(unit_ids)}
    synthesized = stimuli[stimuli["kind"] == StimulusKind.SYNTHESIZED]
    assert len(report.iterations) == 2 and report.has_truth and not report.notes
    assert [f.version for f in report.fits] == [1, 2, 3]
    journal = {r.model_version: r for r in records(session) if r.kind == "fit"}
    assert report.fits[1].r_median == pytest.approx(journal[2].metrics["r_median"])

    source = brain.build()
    natural = stimuli["id"][stimuli["kind"] == StimulusKind.NATURAL]
    true_natural = source.expected_rates(pixels[natural], WINDOW_S, DURATION_S)
    good = blocks["flagged"][trials["block"]] == 0
    measured_natural = np.stack([responses[good & (trials["stimulus_id"] == i)].mean(0) for i in natural])
    for it, version in zip(report.iterations, (1, 2)):
        rows = synthesized[synthesized["model_version"] == version]
        assert [im.stimulus_id for im in it.images] == rows["id"].tolist()
        assert it.model_before.version == version and it.model_after.version == version + 1
        ids, cols = rows["id"], np.array([column[int(u)] for u in rows["unit_id"]])
        measured = np.array([responses[good & (trials["stimulus_id"] == i), c].mean() for i, c in zip(ids, cols)])
        true = source.expected_rates(pixels[ids], WINDOW_S, DURATION_S)[np.arange(ids.size), cols]
        assert np.allclose([im.measured_hz for im in it.images], measured)
        assert [im.n_presentations for im in it.images] == [2] * ids.size
        assert np.allclose([im.true_hz for im in it.images], true)
        assert np.allclose([im.achieved_hz for im in it.images], rows["achieved_hz"])
        # the ensemble's spread as the real server sent it and the runner stored it
        spread = np.array([im.spread_hz for im in it.images])
        assert np.all(spread > 0) and np.array_equal(spread, rows["spread_hz"])
        target = rows["target_hz"]
        graded = np.isfinite(target)
        assert graded.sum() == 6 and (~graded).sum() == 2  # 2 units x (p20, p50, p80) and max
        s = it.summary
        assert s["r_target_measured"] == pytest.approx(_r(target[graded], measured[graded]), nan_ok=True)
        assert s["r_target_true"] == pytest.approx(_r(target[graded], true[graded]))
        span = np.ptp(measured_natural, axis=0)[cols]
        assert s["error_measured_pct"] == pytest.approx(100 * np.median((np.abs(measured - target) / span)[graded]))
        true_span = np.ptp(true_natural, axis=0)[cols]
        assert s["error_true_pct"] == pytest.approx(100 * np.median((np.abs(true - target) / true_span)[graded]))
        best_true = true_natural.max(0)[cols]
        assert s["max_true_over_best_natural"] == pytest.approx(np.median((true / best_true)[~graded]))
        assert s["max_predicted_over_true"] == pytest.approx(np.median((rows["achieved_hz"] / true)[~graded]))
        assert s["max_spread_hz"] == pytest.approx(np.median(rows["spread_hz"][~graded]))
        per_unit = [
            _r(target[graded & (rows["unit_id"] == u)], true[graded & (rows["unit_id"] == u)])
            for u in np.unique(rows["unit_id"])
        ]
        assert s["r_target_true_unit_median"] == pytest.approx(np.nanmedian(per_unit))
        slopes = [
            np.polyfit(target[graded & (rows["unit_id"] == u)], true[graded & (rows["unit_id"] == u)], 1)[0]
            for u in np.unique(rows["unit_id"])
        ]
        assert s["slope_true_unit_median"] == pytest.approx(np.median(slopes))
        # the spread's honesty: rms miss over rms spread, the measured means' noise taken off
        trial_rates = [responses[good & (trials["stimulus_id"] == i), c] for i, c in zip(ids, cols)]
        se = np.array([r.std(ddof=1) / np.sqrt(r.size) for r in trial_rates])
        assert np.allclose([im.measured_se_hz for im in it.images], se)
        miss = rows["achieved_hz"] - true
        assert s["error_over_spread_true"] == pytest.approx(np.sqrt(np.mean(miss**2) / np.mean(spread**2)))
        excess = max(np.mean((rows["achieved_hz"] - measured) ** 2 - se**2), 0.0)
        assert s["error_over_spread_measured"] == pytest.approx(np.sqrt(excess / np.mean(spread**2)))
        # the refit: its saved model's predictions and split
        after = load_checkpoint(folder / "models" / f"model_v{version + 1:03d}.pt", "cpu")
        # the 95 % interval, known before the images were shown: 8 earlier images are too few for its
        # quantile, so it is the one the model that made them recorded from its held-out photographs
        made_by = load_checkpoint(folder / "models" / f"model_v{version:03d}.pt", "cpu")
        k = made_by.metrics["heldout_interval_sds"]
        assert k > 0 and it.model_before.interval_sds == pytest.approx(k)
        assert s["interval_sds"] == pytest.approx(k) and s["interval_from_images"] == 0
        # "max" promises: the prediction times the ratio the model recorded at its units' top-predicted
        # held-out photographs
        ratio = made_by.metrics["heldout_top_ratio"]
        assert ratio > 0 and it.model_before.top_ratio == pytest.approx(ratio)
        assert s["max_promise_ratio"] == pytest.approx(ratio)
        promised = np.where(graded, rows["achieved_hz"], ratio * rows["achieved_hz"])
        assert np.allclose([im.promised_hz for im in it.images], promised)
        # each interval is centred on the image's promise
        half = k * np.sqrt(spread**2 + se**2)
        assert np.allclose([im.interval_hz for im in it.images], half)
        for name, actual in (("true_within_interval", true), ("measured_within_interval", measured)):
            assert s[name] == pytest.approx(np.mean(np.abs(actual - promised) <= half))
        assert s["max_promised_over_true"] == pytest.approx(np.median((promised / true)[~graded]))
        with np.errstate(divide="ignore"):  # a "max" image measured at 0 Hz
            over_measured = np.median((promised / measured)[~graded])
        assert s["max_promised_over_measured"] == pytest.approx(over_measured)
        # the refit's held-out misses over its spread, as the server saved them and the journal recorded them
        factor = after.metrics["heldout_error_over_spread"]
        assert factor > 0 and it.model_after.error_over_spread == pytest.approx(factor)
        held = set(after.image_ids[after.split.held_out].tolist())
        assert [im.held_out_after for im in it.images] == [int(i) in held for i in ids]
        assert all(math.isfinite(im.predicted_after_hz) for im in it.images)
        assert s["r_predicted_after"] == pytest.approx(
            _r([im.predicted_after_hz for im in it.images], measured), nan_ok=True
        )
        # the model that made them predicts the stored images about as the optimiser said
        before = np.array([im.predicted_before_hz for im in it.images])
        assert "model_v00" in it.before_source and np.allclose(before, rows["achieved_hz"], rtol=0.2, atol=1.0)
        t = it.turnaround
        assert t.is_loop and 0 < t.extraction < t.total and 0 < t.refit < t.total and 0 < t.synthesis < t.total
        assert t.extraction + t.refit + t.synthesis + t.other == pytest.approx(t.total)

    every = [im for it in report.iterations for im in it.images]
    predicted, promised, spread, true = (
        np.array([getattr(im, k) for im in every]) for k in ("achieved_hz", "promised_hz", "spread_hz", "true_hz")
    )
    # the spread judges the ensemble's own predictions; the intervals are centred on the promises
    session_wide = np.sqrt(np.mean((predicted - true) ** 2) / np.mean(spread**2))
    assert report.spread_honesty["error_over_spread_true"] == pytest.approx(session_wide)
    half = np.array([im.interval_hz for im in every])
    assert report.spread_honesty["true_within_interval"] == pytest.approx(np.mean(np.abs(promised - true) <= half))
    text = report.text()
    assert "iteration 2" in text and "targets vs truth" in text and "turnaround" in text
    assert f"predictions missed by {report.spread_honesty['error_over_spread_measured']:.1f}x" in text
    k = report.iterations[0].summary["interval_sds"]
    assert f"95 % interval (the ± 95 % column): promise ± {k:.1f} x √(sd² + se²)" in text
    assert "(from the model's held-out photographs" in text
    assert f"median slope {report.iterations[0].summary['slope_true_unit_median']:.2f}" in text
    first = report.iterations[0].images[0]
    ratio = report.iterations[0].summary["max_promise_ratio"]
    assert f"'max' images promised {ratio:.2f} x their prediction (the model's top held-out photographs'" in text
    assert f"held-out misses {report.fits[-1].error_over_spread:.1f}x its spread" in text
    assert "± sd" in text and "promised" in text
    assert f" {first.predicted_before_hz:.1f} {first.promised_hz:>8.1f} {first.spread_hz:>6.1f} " in text
    json.dumps(report.to_dict(), allow_nan=False)
    figure = report.figure(folder / "report.png")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_monitor_draws_the_reports_95_percent_intervals_from_the_session_file(loop_run):
    from closedloop.monitor.session_source import SessionSource
    from closedloop.monitor.state import MonitorState

    folder, _ = loop_run
    report = loop_report(folder / "s.h5", None, models_dir=None)
    state = MonitorState()
    source = SessionSource(folder / "s.h5", state)
    assert source.poll() > 0
    s = state.view().synthesized
    drawn = dict(zip(s["stimulus_id"].tolist(), s["interval_hz"].tolist()))
    images = [image for it in report.iterations for image in it.images]
    assert len(images) == len(drawn) > 0 and np.all(np.isfinite([image.interval_hz for image in images]))
    assert [drawn[image.stimulus_id] for image in images] == pytest.approx([image.interval_hz for image in images])


def test_images_shown_once_get_their_units_noise_as_standard_error_and_an_interval(shown_once_run):
    folder, brain = shown_once_run
    report = loop_report(folder / "s.h5", brain, models_dir=folder / "models")
    with SessionReader(folder / "s.h5") as reader:
        stimuli, trials, blocks = reader.stimuli, reader.trials, reader.blocks
        responses = np.asarray(reader.responses, dtype=np.float64)
        column = {int(u): i for i, u in enumerate(reader.unit_ids)}
    good = blocks["flagged"][trials["block"]] == 0
    # each unit's noise, by hand: Σ (n − 1)·variance / Σ (n − 1)·mean over the stimuli shown twice
    variance_sum, mean_sum = np.zeros(responses.shape[1]), np.zeros(responses.shape[1])
    for stimulus in stimuli["id"]:
        rates = responses[good & (trials["stimulus_id"] == stimulus)]
        if len(rates) >= 2:
            variance_sum += (len(rates) - 1) * rates.var(axis=0, ddof=1)
            mean_sum += (len(rates) - 1) * rates.mean(axis=0)
    noise = variance_sum / mean_sum
    for it in report.iterations:
        assert [image.n_presentations for image in it.images] == [1] * len(it.images)
        promised = np.array([image.achieved_hz for image in it.images])
        measured = np.array([image.measured_hz for image in it.images])
        spread = np.array([image.spread_hz for image in it.images])
        units = [column[image.unit_id] for image in it.images]
        se = np.sqrt(noise[units] * (promised + measured) / 2)
        assert [image.measured_se_hz for image in it.images] == pytest.approx(se)
        k = it.summary["interval_sds"]  # 8 earlier images are too few: the model's photographs
        assert k == pytest.approx(it.model_before.interval_sds)
        assert [image.interval_hz for image in it.images] == pytest.approx(k * np.hypot(spread, se))
    assert "(se of the 8 shown once: their unit's trial noise)" in report.text()


def test_max_images_are_promised_their_prediction_times_the_models_top_ratio_rate_images_their_prediction():
    from closedloop.reports.loop_numbers import iteration_max_promise
    from closedloop.reports.loop_types import ModelFit, SynthesizedImage

    def image(target: float, achieved: float, measured: float, true: float = math.nan) -> SynthesizedImage:
        return SynthesizedImage(0, 1, target, achieved, measured, 2, true_hz=true)

    def model(top_ratio: float) -> ModelFit:
        return ModelFit(1, 0, 0.5, 0.5, 0.8, 100, 1.0, False, top_ratio=top_ratio)

    new = [image(math.nan, 100.0, 60.0, 50.0), image(20.0, 20.0, 18.0, 19.0), image(math.nan, 50.0, 0.0, 30.0)]
    out = iteration_max_promise(new, model(0.8))
    assert out["max_promise_ratio"] == 0.8
    assert [im.promised_hz for im in new] == pytest.approx([80.0, 20.0, 40.0])
    assert out["max_promised_over_true"] == pytest.approx(np.median([80 / 50, 40 / 30]))
    assert out["max_promised_over_measured"] == np.inf  # one "max" image measured at 0 Hz, one at 80 / 60
    # a model that recorded no ratio, or one that is not a positive number, or none known: the prediction
    for unknown in (model(math.nan), model(-1.0), model(0.0), None):
        assert iteration_max_promise(new, unknown)["max_promise_ratio"] == 1.0
        assert [im.promised_hz for im in new] == [100.0, 20.0, 50.0]


def test_without_brain_or_saved_models_the_report_says_what_it_needs(loop_run):
    folder, _ = loop_run
    report = loop_report(folder / "s.h5")
    assert not report.has_truth and len(report.iterations) == 2
    assert any("models_dir" in note for note in report.notes) and any("brain" in note for note in report.notes)
    first = report.iterations[0]
    assert all(math.isnan(im.true_hz) and math.isnan(im.predicted_after_hz) for im in first.images)
    assert [im.predicted_before_hz for im in first.images] == [im.achieved_hz for im in first.images]
    assert "out_dir" in first.after_note and "targets vs truth" not in report.text()


def test_a_missing_session_or_journal_is_a_clear_error(loop_run, tmp_path):
    with pytest.raises(DataFileError, match="no such session file"):
        loop_report(tmp_path / "nothing.h5")
    copy = tmp_path / "copy.h5"
    copy.write_bytes((loop_run[0] / "s.h5").read_bytes())
    with pytest.raises(DataFileError, match="runner journal"):
        loop_report(copy)


def test_the_benchmark_runs_a_tiny_loop_and_skips_the_presenter(loop_run, tmp_path, capsys):
    folder, _ = loop_run
    module = load_benchmark("loop")
    status = module.main(
        [
            "--rig",
            str(folder / "rig.yaml"),
            "--protocol",
            str(folder / "loop.yaml"),
            "--iterations",
            "1",
            "--presenter-stimuli",
            "0",
            "--out",
            str(tmp_path),
            "--json",
            str(tmp_path / "loop.json"),
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0 and "turnaround, all iterations: median" in printed
    assert "presenter: skipped: --presenter-stimuli 0" in printed
    numbers = json.loads((tmp_path / "loop.json").read_text())
    (run,) = numbers["runs"]  # the rig's own brain
    assert run["brain"] == "rig" and run["ran"]["finished"] and len(run["report"]["iterations"]) == 1
    assert run["turnaround"]["all"]["total"]["median_s"] > 0 and (tmp_path / "loop.png").exists()
    summary = run["report"]["iterations"][0]["summary"]
    assert run["truth"][0]["r_target_true"] == summary["r_target_true"]
    assert run["truth"][0]["max_predicted_over_true"] == summary["max_predicted_over_true"] is not None


def test_the_benchmark_runs_the_loop_once_per_family_on_the_family_scenario(loop_run, tmp_path, capsys, monkeypatch):
    folder, brain = loop_run
    module = load_benchmark("loop")
    report = loop_report(folder / "s.h5", brain, models_dir=folder / "models")
    scenarios, images = [], []

    def one_loop(args, out):  # the real one is the test above; here: which rig and images each run gets
        from closedloop.config import load_rig

        scenarios.append(load_rig(args.rig).acquisition.scenario)
        images.append(args.images)
        return report, 1.0, {"protocol": "p", "rig": "r", "device": "cpu", "session": str(out / "loop.h5")}

    monkeypatch.setattr(module, "run_loop", one_loop)
    lab = tmp_path / "lab.yaml"  # a lab's own scenario, named on the command line
    lab.write_text("population:\n  family: plugin\n  brain: 'lab_v1:Population'\n  n_units: 5\n")
    argv = ["--rig", str(folder / "rig.yaml"), "--families", "deep,textures", "--presenter-stimuli", "0"]
    status = module.main(
        [*argv, "--scenario", f"lab={lab}", "--out", str(tmp_path), "--json", str(tmp_path / "loop.json")]
    )
    assert status == 0
    assert scenarios == [str(ROOT / "sim/deep.yaml"), str(ROOT / "sim/textures.yaml"), str(lab)]
    assert images == [None, "mixed", None]  # the textures family is shown its own images, not photographs
    assert "(brain: deep)" in capsys.readouterr().out
    runs = json.loads((tmp_path / "loop.json").read_text())["runs"]
    assert [run["brain"] for run in runs] == ["deep", "textures", "lab"]
    written = [float("nan") if row["r_over_rmax"] is None else row["r_over_rmax"] for row in runs[1]["truth"]]
    assert written == pytest.approx([it.model_before.r_over_rmax_mean for it in report.iterations], nan_ok=True)
    for bad in (
        ["--families", "classic,cortex"],
        ["--scenario", "deep=x.yaml"],
        ["--scenario", f"lab={tmp_path}/no.yaml"],
    ):
        with pytest.raises(SystemExit):
            module.parse_args(bad)
    assert module.parse_args(["--scenario", f"lab={lab}"]).family_list == ["lab"]  # only it, not the rig's brain


def test_the_benchmark_repeats_each_loop_per_seed_and_averages_the_runs(loop_run, tmp_path, capsys, monkeypatch):
    folder, brain = loop_run
    module = load_benchmark("loop")
    report = loop_report(folder / "s.h5", brain, models_dir=folder / "models")
    seeds = []

    def one_loop(args, out):  # which protocol each run is given
        from closedloop.config import load_protocol

        copy = module.protocol_copy(
            args.protocol, out, iterations=args.iterations, images=args.images, seed=args.seed, shown=args.shown
        )
        protocol = load_protocol(copy)
        loop = next(block for block in protocol.blocks if block.kind == "loop")
        shown = [inner.repeats for inner in loop.blocks if inner.kind == "present_synthesized"]
        seeds.append((protocol.seed, protocol.synthesis.seed, out.name, shown))
        return report, 1.0, {"protocol": "p", "rig": "r", "device": "cpu", "session": str(out / "loop.h5")}

    monkeypatch.setattr(module, "run_loop", one_loop)
    argv = ["--rig", str(folder / "rig.yaml"), "--protocol", str(folder / "loop.yaml"), "--seeds", "3,4"]
    status = module.main(
        [*argv, "--shown", "1", "--presenter-stimuli", "0", "--out", str(tmp_path), "--json", str(tmp_path / "j")]
    )
    assert status == 0 and seeds == [(3, 3, "seed3", [1]), (4, 4, "seed4", [1])]  # each image shown once
    assert "mean ± sd over the runs (seeds)" in capsys.readouterr().out
    numbers = json.loads((tmp_path / "j").read_text())
    assert [run["seed"] for run in numbers["runs"]] == [3, 4]
    first = numbers["repeats"][0]
    assert first["n_runs"] == 2 and first["r_over_rmax"]["n"] == 2 and first["r_over_rmax"]["sd"] == 0.0
    for bad in ("3,x", ",", "-1"):
        with pytest.raises(SystemExit):
            module.parse_args(["--seeds", bad])
    with pytest.raises(SystemExit):
        module.parse_args(["--shown", "0"])


def test_the_repeat_summary_gives_mean_and_spread_per_brain_and_iteration():
    module = load_benchmark("loop")

    def run(brain, r_over_rmax, turnaround):
        truth = [{key: np.nan for key in module.REPEAT_COLUMNS} | {"r_over_rmax": r} for r in r_over_rmax]
        return {"brain": brain, "truth": truth, "turnaround": {"after_first": {"total": {"median_s": turnaround}}}}

    runs = [run("a", [0.5, 0.7], 10.0), run("a", [0.6, 0.9], 12.0), run("b", [0.4], None)]
    rows = module.repeat_summary(runs)
    assert [(row["brain"], row["iteration"], row["n_runs"]) for row in rows] == [("a", 1, 2), ("a", 2, 2), ("b", 1, 1)]
    second = rows[1]["r_over_rmax"]
    assert second["mean"] == pytest.approx(0.8) and second["sd"] == pytest.approx(np.std([0.7, 0.9], ddof=1))
    assert (second["min"], second["max"]) == (0.7, 0.9)
    assert rows[0]["turnaround_after_first_s"]["mean"] == pytest.approx(11.0)
    assert rows[2]["turnaround_after_first_s"]["n"] == 0 and math.isnan(rows[2]["r_over_rmax"]["sd"])
    assert rows[0]["r_target_true"]["n"] == 0  # no finite value: NaN figures, not an error


def test_the_presenter_part_says_why_it_is_skipped_without_a_display(monkeypatch):
    module = load_benchmark("loop")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setattr(module.shutil, "which", lambda name: None)
    args = module.parse_args(["--presenter-stimuli", "10"])
    result = module.presenter_frames(args, args.protocol)
    assert result["skipped"].startswith("no display and no xvfb-run")


def _r(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 3 or np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])
