"""MetricsReport (evaluate, summary, JSON), the terminal table and Fig. 3."""

from __future__ import annotations

import json

import numpy as np
import pytest

from closedloop.errors import DataFileError
from closedloop.model import cells, metrics
from closedloop.model.report import RELIABLE_LEGEND, MetricsReport, SessionRow, evaluate, fig3, summary_table

pytestmark = pytest.mark.filterwarnings("error")


def simulated(n_images=120, n_repeats=10, n_units=12, seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.gamma(2.0, 10.0, size=(n_images, n_units))
    trials = signal[:, None, :] + rng.normal(0, 8.0, size=(n_images, n_repeats, n_units))
    pred = signal + rng.normal(0, 6.0, size=signal.shape)
    baseline = rng.normal(size=signal.shape)
    return signal, trials, pred, baseline


def small_report(**changes) -> MetricsReport:
    values = dict(
        r=np.array([0.5, 0.9, np.nan]),
        fve=np.array([0.2, 0.8, np.nan]),
        rmax=np.array([0.6, 0.95, 0.8]),
        r_over_rmax=np.array([0.5 / 0.6, 0.9 / 0.95, np.nan]),
        cc_max=np.array([0.55, 0.9, np.nan]),
        cc_norm=np.array([0.9, 1.0, np.nan]),
        signal_power=np.array([3.0, 10.0, -1.0]),
        fev=np.array([0.3, 0.8, 0.01]),
        feve=np.array([0.4, 0.9, np.nan]),
        reliable=np.array([True, True, False]),
        r_linear=np.array([0.0, 0.1, np.nan]),
        unit_ids=np.array([3, 8, 21]),
        n_images=54,
        n_draws=100,
        seed=0,
    )
    values.update(changes)
    return MetricsReport(**values)


def test_summary_by_hand():
    s = small_report().summary
    assert s["n_units"] == 3 and s["n_reliable"] == 2 and s["n_images"] == 54
    assert s["mean_r"] == pytest.approx(0.7) and s["median_r"] == pytest.approx(0.7)
    # 0.5 < 0.9 * 0.6 = 0.54; 0.9 >= 0.9 * 0.95 = 0.855; unit 2 has no r -> 1 of 2
    assert s["frac_within_10pct_rmax"] == pytest.approx(0.5)
    assert s["mean_cc_norm"] == pytest.approx(0.95) and s["n_cc_norm"] == 2
    assert s["mean_r_linear"] == pytest.approx(0.05)
    assert s["mean_rmax"] == pytest.approx((0.6 + 0.95 + 0.8) / 3)
    assert np.isnan(small_report(r_linear=None).summary["mean_r_linear"])


def test_evaluate_matches_the_metric_functions():
    _, trials, pred, baseline = simulated()
    report = evaluate(pred, trials, baseline_pred=baseline, unit_ids=np.arange(12) + 100, seed=3, n_draws=20)
    means = trials.mean(axis=1)
    np.testing.assert_allclose(report.r, metrics.pearson_r(pred, means))
    np.testing.assert_allclose(report.rmax, metrics.rmax_kindel(trials, n_draws=20, seed=3))
    np.testing.assert_allclose(report.r_over_rmax, report.r / report.rmax)
    np.testing.assert_allclose(report.cc_norm, metrics.cc_norm(pred, trials))
    np.testing.assert_allclose(report.feve, metrics.feve(pred, trials))
    np.testing.assert_allclose(report.r_linear, metrics.pearson_r(baseline, means))
    np.testing.assert_array_equal(report.reliable, metrics.unit_masks(trials).reliable)
    assert report.unit_ids.tolist() == list(range(100, 112))
    assert (report.n_images, report.n_draws, report.seed) == (120, 20, 3)
    assert evaluate(pred, trials).r_linear is None
    with pytest.raises(ValueError, match="baseline_pred"):
        evaluate(pred, trials, baseline_pred=baseline[:5])
    with pytest.raises(ValueError, match="unit_ids"):
        evaluate(pred, trials, unit_ids=np.arange(3))


def test_json_round_trip_with_nan_as_null():
    report = small_report()
    text = report.to_json()
    assert "NaN" not in text
    data = json.loads(text)
    assert data["units"]["r"] == [0.5, 0.9, None]
    assert data["summary"]["mean_r"] == pytest.approx(0.7)
    back = MetricsReport.from_json(text)
    for name in ("r", "rmax", "cc_norm", "feve", "r_linear", "signal_power"):
        np.testing.assert_array_equal(getattr(back, name), getattr(report, name))
    np.testing.assert_array_equal(back.reliable, report.reliable)
    assert back.unit_ids.tolist() == [3, 8, 21] and back.n_images == 54
    assert json.loads(back.to_json()) == data
    bare = MetricsReport.from_json(small_report(r_linear=None, unit_ids=None).to_json())
    assert bare.r_linear is None and bare.unit_ids is None


def test_json_round_trip_of_evaluated_report():
    _, trials, pred, baseline = simulated(seed=1)
    trials[0, :, 0] = np.nan
    report = evaluate(pred, trials, baseline_pred=baseline)
    back = MetricsReport.from_json(report.to_json())
    assert json.loads(back.to_json()) == json.loads(report.to_json())


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ('{"format": "something-else"}', "not a metrics file"),
        (None, "differ in length"),
        ("bad-value", "units.fve"),
        ("bad-version", "version"),
    ],
)
def test_from_json_errors_name_the_source(text, message):
    data = small_report().to_dict()
    if text is None:
        data["units"]["rmax"] = data["units"]["rmax"][:2]
        text = json.dumps(data)
    elif text == "bad-value":
        data["units"]["fve"][0] = "high"
        text = json.dumps(data)
    elif text == "bad-version":
        data["version"] = 99
        text = json.dumps(data)
    with pytest.raises(DataFileError, match=message) as caught:
        MetricsReport.from_json(text, source="runs/01/metrics.json")
    assert caught.value.path == "runs/01/metrics.json"


def test_summary_table_lines_and_pooled_row():
    rows = [
        SessionRow("01", 10, 0.2, 0.25, 0.3, 0.01, 0.1, 12.0, n_reliable=5, mean_r_over_rmax_reliable=0.4),
        SessionRow("02", 30, 0.6, 0.65, np.nan, np.nan, 0.5, None, n_reliable=15, mean_r_over_rmax_reliable=0.8),
    ]
    lines = summary_table(rows).splitlines()
    assert lines[0].split() == (
        ["session", "units", "reliable", "r", "r/rmax", "r/rmax", "rel.", "CCnorm", "r_linear", "r≥0.9rmax"]
        + ["fit", "time"]
    )
    assert lines[2].split() == ["01", "10", "5", "0.200", "0.250", "0.400", "0.300", "0.010", "10%", "12.0", "s"]
    assert lines[3].split() == ["02", "30", "15", "0.600", "0.650", "0.800", "–", "–", "50%", "–"]
    # unit-weighted: r = (10*0.2 + 30*0.6) / 40 = 0.5; CCnorm only from session 01;
    # the reliable-unit mean weighted by reliable units: (5*0.4 + 15*0.8) / 20 = 0.7
    assert lines[5].split() == [
        "all", "(unit-weighted)", "40", "20", "0.500", "0.550", "0.700", "0.300", "0.010", "40%", "12.0", "s"
    ]  # fmt: skip
    assert len({len(line) for line in lines[:-1]}) == 1  # columns line up
    assert lines[-1] == RELIABLE_LEGEND
    single = summary_table([SessionRow.from_report("x", small_report(), fit_time_s=3.25)]).splitlines()
    assert len(single) == 4 and single[2].split()[:4] == ["x", "3", "2", "0.700"]
    assert "(no sessions)" in summary_table([])
    unknown = summary_table([SessionRow("old", 4, 0.5, 0.6, 0.7, 0.1, 0.2), rows[0]]).splitlines()
    assert unknown[2].split()[2] == "–" and unknown[5].split()[3] == "–"  # a total needs every session's count


def test_fig3_renders_png(tmp_path):
    _, trials, pred, baseline = simulated(n_units=20, seed=2)
    report = evaluate(pred, trials, baseline_pred=baseline, n_draws=10)
    rng = np.random.default_rng(4)
    grating = rng.gamma(1.0, 5.0, size=(16, 20))
    grating[3, :6] += 80.0  # a few orientation-selective units
    props = cells.characterise(trials.mean(axis=1), np.arange(16) * 11.25, grating)
    assert "selective" in set(props.groups)
    path = fig3(report, props, tmp_path / "figs" / "fig3.png", title="session 01")
    assert path.exists() and path.stat().st_size > 20_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    no_gratings = cells.characterise(trials.mean(axis=1))
    bare = fig3(evaluate(pred, trials, n_draws=5), no_gratings, tmp_path / "bare.png")
    assert bare.stat().st_size > 20_000


def test_fig3_rejects_mismatched_cells_and_unwritable_path(tmp_path):
    report = small_report()
    with pytest.raises(ValueError, match="units"):
        fig3(report, cells.characterise(np.ones((5, 2))), tmp_path / "x.png")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(DataFileError, match="cannot write the figure"):
        fig3(report, cells.characterise(np.arange(15.0).reshape(5, 3)), blocker / "fig.png")


def test_oracle_scores_the_true_rates_the_same_way():
    signal, trials, pred, _ = simulated(seed=2)
    report = evaluate(pred, trials, oracle_pred=signal)
    np.testing.assert_allclose(report.r_oracle, metrics.pearson_r(signal, metrics.trial_means(trials)))
    s = report.summary
    assert s["mean_r_over_oracle"] == pytest.approx(np.mean(report.r) / np.mean(report.r_oracle))
    assert 0.5 < s["mean_r_over_oracle"] < 1.0  # the noisy prediction reaches less than the truth
    assert "mean_r_over_oracle" not in evaluate(pred, trials).summary
    back = MetricsReport.from_json(report.to_json())
    np.testing.assert_allclose(back.r_oracle, report.r_oracle)
    with pytest.raises(ValueError, match="oracle_pred"):
        evaluate(pred, trials, oracle_pred=signal[:3])


def test_summary_table_shows_r_over_oracle_only_when_some_session_has_one():
    rows = [
        SessionRow("sim", 10, 0.6, 0.7, 0.8, 0.1, 0.2, 5.0, 0.75, 8, 0.8, 0.85),
        SessionRow("real", 10, 0.5, 0.6, 0.7, 0.1, 0.2),
    ]
    lines = summary_table(rows).splitlines()
    assert lines[0].split()[4:10] == ["r/rmax", "r/rmax", "rel.", "r/oracle", "r/oracle", "rel."]
    assert lines[2].split()[4:8] == ["0.700", "0.800", "0.750", "0.850"]
    assert lines[3].split()[4:8] == ["0.600", "–", "–", "–"]
    assert "r/oracle" not in summary_table(rows[1:])


def test_reliable_means_leave_out_units_whose_rmax_is_noise():
    # Units 0-9 are driven by the images; unit 10 is pure noise: its rmax comes out near
    # 1/sqrt(2) and a prediction of it scores by chance, so only the reliable means are clean.
    signal, trials, pred, _ = simulated(n_images=200, n_units=11, seed=5)
    rng = np.random.default_rng(9)
    trials[:, :, 10] = 20.0 + rng.normal(0, 8.0, size=trials[:, :, 10].shape)
    signal[:, 10] = 20.0 + rng.normal(0, 1e-3, size=200)  # the truth: flat, up to a whisker
    report = evaluate(pred, trials, oracle_pred=signal, n_draws=50)
    assert report.rmax[10] == pytest.approx(1 / np.sqrt(2), abs=0.08)
    assert report.reliable[:10].all() and not report.reliable[10]
    s = report.summary
    assert s["mean_r_over_rmax_reliable"] == pytest.approx(np.mean(report.r_over_rmax[:10]))
    assert s["mean_r_over_oracle_reliable"] == pytest.approx(np.mean(report.r[:10]) / np.mean(report.r_oracle[:10]))
    assert s["mean_r_oracle_over_rmax_reliable"] == pytest.approx(np.mean(report.r_oracle[:10] / report.rmax[:10]))
    assert s["mean_r_over_rmax"] == pytest.approx(np.mean(report.r_over_rmax))
    assert abs(s["mean_r_over_rmax"] - s["mean_r_over_rmax_reliable"]) > 0.02  # the noise unit moves the mean
    row = SessionRow.from_summary("s", json.loads(report.to_json())["summary"])  # None for NaN read back
    assert row.n_reliable == 10 and row.mean_r_over_oracle_reliable == pytest.approx(s["mean_r_over_oracle_reliable"])
    none_reliable = small_report(reliable=np.zeros(3, bool)).summary
    assert np.isnan(none_reliable["mean_r_over_rmax_reliable"])
