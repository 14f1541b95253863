"""The loop report as text and as a figure (`closedloop.reports.loop_types.LoopReport`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

#: What each key of `Iteration.summary` means (errors: median |rate − target| as % of the
#: unit's natural-image range; graded = images with a finite target).
SUMMARY_LINES = {
    "n_images": "images the synthesize block made",
    "n_measured": "of them shown in a good block (with a measured rate)",
    "r_target_measured": "Pearson r of target and measured rate over graded images (all units pooled)",
    "r_target_true": "the same with the brain's true rate",
    "r_target_measured_unit_median": "median over units of r(target, measured) (units with >= 3 graded targets)",
    "r_target_true_unit_median": "the same with the true rate",
    "slope_measured_unit_median": "median over units of the slope of measured rate on target (1: the rates "
    "span the asked range; below 1 they fall short of it, above 1 they overshoot)",
    "slope_true_unit_median": "the same with the true rate",
    "error_measured_pct": "median |measured - target| (% of the unit's measured natural-image range)",
    "error_true_pct": "median |true - target| (% of the unit's true natural-image range)",
    "error_predicted_pct": "median |predicted - target|: the optimiser's own miss (% of measured range)",
    "max_measured_over_best_natural": "'max' images: median measured rate / the unit's best natural image's",
    "max_measured_beats_best_natural": "fraction of 'max' images measured above the unit's best natural image",
    "max_true_over_best_natural": "the same ratio with true rates",
    "max_true_beats_best_natural": "the same fraction with true rates",
    "max_predicted_over_true": "'max' images: median of the rate the model predicted (achieved) / the true rate",
    "max_spread_hz": "'max' images: median std of the ensemble members' predictions (Hz)",
    "max_promise_ratio": "what a 'max' image is promised over its prediction: the measured / predicted rate at "
    "the units' top-predicted held-out photographs (median) that the model which made it recorded",
    "max_promised_over_measured": "'max' images: median promised / measured rate",
    "max_promised_over_true": "'max' images: median promised / true rate",
    "error_over_spread_measured": "how far measured rates miss the predicted (achieved) rates, in units of the "
    "ensemble's spread: rms miss / rms spread, the measurements' squared standard errors taken off the squared "
    "misses (1: the spread is an honest error bar)",
    "error_over_spread_true": "the same with the true rates",
    "interval_sds": "k of each image's 95 % interval for its measured mean, promise ± k x √(spread² + se²), known "
    "before the images were shown: the split-conformal quantile of the earlier iterations' measured misses so "
    "scaled, or with fewer than 19 of those, the model's held-out photographs'",
    "interval_from_images": "how many earlier synthesized images k came from (0: the held-out photographs)",
    "interval_halfwidth_pct": "median half-width of the interval as % of the unit's measured natural-image range",
    "measured_within_interval": "fraction of measured rates inside their 95 % interval",
    "true_within_interval": "the same with true rates (0.95 or more if the interval is honest)",
    "r_predicted_before": "r(prediction of the model that made them, measured) over all images",
    "error_predicted_before_pct": "median |that prediction - measured| (% of measured range)",
    "r_predicted_after": "the same for the refit after their responses",
    "error_predicted_after_pct": "the same for the refit",
    "r_predicted_before_held_out": "r before, on images the refit held out",
    "r_predicted_after_held_out": "r after, on images the refit held out",
    "n_held_out_after": "synthesized images the refit held out (never trained on)",
}


def _f(value: float, digits: int = 2, unit: str = "") -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}{unit}"


def _fit_line(fit) -> str:
    if fit is None:
        return "unknown"
    start = "warm" if fit.warm_start else "cold"
    misses = (
        f"held-out misses {fit.error_over_spread:.1f}x its spread, " if math.isfinite(fit.error_over_spread) else ""
    )
    return (
        f"v{fit.version} (r mean {_f(fit.r_mean)}, median {_f(fit.r_median)}, r/rmax {_f(fit.r_over_rmax_mean)}, "
        f"{misses}{fit.n_images} images, "
        f"{_f(fit.refit_seconds, 1)} s {start})"
    )


def report_text(report) -> str:
    """Readable lines: the model versions, then a table and summaries per iteration."""
    lines = [f"loop report: {report.session}", "model versions:"]
    lines += [f"  {_fit_line(fit)}" for fit in report.fits] or ["  none"]
    for it in report.iterations:
        s, t = it.summary, it.turnaround
        lines += [
            "",
            f"iteration {it.number} (synthesize block {it.synthesize_block}, loop iteration "
            f"{it.loop_iteration}): images from {_fit_line(it.model_before)}",
            f"  refit after their responses: {_fit_line(it.model_after) if it.model_after else it.after_note}",
        ]
        if math.isfinite(t.total):
            spans = "" if t.is_loop else f" (spans {t.n_fits} refits: not a loop turnaround)"
            lines.append(
                f"  turnaround {t.total:.3f} s from block {t.from_block}'s last response{spans}: extraction "
                f"{_f(t.extraction, 3)} s, refit {_f(t.refit, 3)} s, synthesis {_f(t.synthesis, 3)} s, "
                f"other {_f(t.other, 3)} s"
            )
        lines.append(
            f"  {'stimulus':>8} {'unit':>5} {'target':>7} {'predicted':>9} {'promised':>8} {'± sd':>6} {'± 95 %':>7} "
            f"{'measured':>8} {'n':>3} {'true':>7} {'refit':>7}"
        )
        for im in it.images:
            held = "" if im.held_out_after is None else ("*" if im.held_out_after else " ")
            lines.append(
                f"  {im.stimulus_id:>8} {im.unit_id:>5} {im.label:>7} {_f(im.predicted_before_hz, 1):>9} "
                f"{_f(im.promised_hz, 1):>8} {_f(im.spread_hz, 1):>6} {_f(im.interval_hz, 1):>7} "
                f"{_f(im.measured_hz, 1):>8} "
                f"{im.n_presentations:>3} {_f(im.true_hz, 1):>7} "
                f"{_f(im.predicted_after_hz, 1):>6}{held}"
            )
        lines += [
            f"  targets vs measured: r {_f(s['r_target_measured'])} pooled, median per-unit r "
            f"{_f(s['r_target_measured_unit_median'])}; median error {_f(s['error_measured_pct'], 0)} % of the "
            f"natural-image range (the model's own {_f(s['error_predicted_pct'], 0)} %); median slope "
            f"{_f(s['slope_measured_unit_median'])} (1: the rates span the asked range)",
        ]
        if report.has_truth:
            lines.append(
                f"  targets vs truth: r {_f(s['r_target_true'])} pooled, median per-unit r "
                f"{_f(s['r_target_true_unit_median'])}; median error {_f(s['error_true_pct'], 0)} %; median slope "
                f"{_f(s['slope_true_unit_median'])}"
            )
        if math.isfinite(s["max_measured_over_best_natural"]) or math.isfinite(s["max_true_over_best_natural"]):
            true = (
                (
                    f", true {_f(s['max_true_over_best_natural'])}x "
                    f"({_f(100 * s['max_true_beats_best_natural'], 0)} % above it)"
                )
                if report.has_truth
                else ""
            )
            lines.append(
                f"  'max' images vs the unit's best natural image: measured "
                f"{_f(s['max_measured_over_best_natural'])}x "
                f"({_f(100 * s['max_measured_beats_best_natural'], 0)} % above it){true}"
            )
            true = (
                f"; predicted/true {_f(s['max_predicted_over_true'])}, promised/true {_f(s['max_promised_over_true'])}"
                if report.has_truth
                else ""
            )
            lines.append(
                f"  'max' images promised {_f(s['max_promise_ratio'])} x their prediction (the model's top held-out "
                f"photographs' measured / predicted), median "
                f"promised/measured {_f(s['max_promised_over_measured'])}{true}; ensemble spread "
                f"{_f(s['max_spread_hz'], 1)} Hz"
            )
        if math.isfinite(s["error_over_spread_measured"]) or math.isfinite(s["error_over_spread_true"]):
            true = f", true {_f(s['error_over_spread_true'], 1)}x" if report.has_truth else ""
            lines.append(
                f"  predictions miss by (rms, over the ensemble's spread): measured "
                f"{_f(s['error_over_spread_measured'], 1)}x (measurement noise taken off){true}; "
                "1x if the spread were an honest error bar"
            )
        if math.isfinite(s["interval_sds"]):
            source = (
                f"{int(s['interval_from_images'])} earlier synthesized images' measured misses"
                if s["interval_from_images"] > 0
                else "the model's held-out photographs, easier than synthesized images"
            )
            true = f", true {_f(100 * s['true_within_interval'], 0)} %" if report.has_truth else ""
            once = sum(image.n_presentations == 1 for image in it.images)
            se = f" (se of the {once} shown once: their unit's trial noise)" if once else ""
            lines.append(
                f"  95 % interval (the ± 95 % column): promise ± {_f(s['interval_sds'], 1)} x √(sd² + se²){se}, "
                f"median ± {_f(s['interval_halfwidth_pct'], 0)} % of the natural range (from {source}); inside it: "
                f"measured {_f(100 * s['measured_within_interval'], 0)} %{true}"
            )
        after = (
            f"after the refit r {_f(s['r_predicted_after'])}, error {_f(s['error_predicted_after_pct'], 0)} %"
            if math.isfinite(s["r_predicted_after"]) or math.isfinite(s["error_predicted_after_pct"])
            else f"after the refit: {it.after_note or 'n/a'}"
        )
        lines.append(
            f"  model vs measured on these images: before (from {it.before_source}) r "
            f"{_f(s['r_predicted_before'])}, error {_f(s['error_predicted_before_pct'], 0)} %; {after}"
        )
        if s["n_held_out_after"] > 0:
            lines.append(
                f"    on the {int(s['n_held_out_after'])} the refit held out (*): r "
                f"{_f(s['r_predicted_before_held_out'])} before, {_f(s['r_predicted_after_held_out'])} after"
            )
    if len(report.iterations) > 1:
        errors = " -> ".join(_f(it.summary["error_measured_pct"], 0) for it in report.iterations)
        lines += ["", f"measured error over iterations (% of natural range): {errors}"]
    honesty = report.spread_honesty
    if report.iterations and math.isfinite(honesty.get("error_over_spread_measured", math.nan)):
        true = f", true {_f(honesty['error_over_spread_true'], 1)}x" if report.has_truth else ""
        lines.append(
            f"over all iterations, predictions missed by {_f(honesty['error_over_spread_measured'], 1)}x the "
            f"ensemble's spread (rms, measured, measurement noise taken off){true}"
        )
    if report.iterations and math.isfinite(honesty.get("measured_within_interval", math.nan)):
        true = f", true {_f(100 * honesty['true_within_interval'], 0)} %" if report.has_truth else ""
        measured = _f(100 * honesty["measured_within_interval"], 0)
        lines.append(f"inside their 95 % intervals over all iterations: measured {measured} %{true}")
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def report_figure(report, path: Path) -> Path:
    """Per iteration: target vs measured and vs true rate (graded images), "max" images vs
    the best natural image; last panel: held-out r/rmax and r median over model versions."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = max(1, len(report.iterations)) + 1
    columns = min(panels, 5)
    rows = -(-panels // columns)
    fig = Figure(figsize=(3.4 * columns, 3.2 * rows))
    FigureCanvasAgg(fig)  # Agg whatever backend pyplot uses: no display needed
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    for ax, it in zip(axes, report.iterations):
        target = np.asarray([im.target_hz for im in it.images])
        measured = np.asarray([im.measured_hz for im in it.images])
        true = np.asarray([im.true_hz for im in it.images])
        graded = np.isfinite(target)
        ax.scatter(target[graded], measured[graded], s=18, label="measured", color="tab:blue")
        if report.has_truth:
            ax.scatter(target[graded], true[graded], s=18, marker="x", label="true", color="tab:red")
        finite = np.concatenate([target[graded], measured[graded], true[graded]])
        finite = finite[np.isfinite(finite)]
        if finite.size:
            low, high = float(finite.min()), float(finite.max())
            ax.plot([low, high], [low, high], color="0.6", lw=0.8, zorder=0)
        ax.set_title(
            f"iteration {it.number} (model v{it.model_before.version if it.model_before else '?'})", fontsize=9
        )
        ax.set_xlabel("target (Hz)")
        ax.set_ylabel("rate (Hz)")
        ax.legend(fontsize=7, loc="best")
    if not report.iterations:
        axes[0].text(0.5, 0.5, "no loop iteration", ha="center", va="center", transform=axes[0].transAxes)
    ax = axes[panels - 1]
    versions = [fit.version for fit in report.fits]
    ax.plot(versions, [fit.r_over_rmax_mean for fit in report.fits], "o-", label="r/rmax (reliable units)")
    ax.plot(versions, [fit.r_median for fit in report.fits], "s--", label="median r")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("model version")
    ax.set_ylabel("held-out")
    ax.set_title("model over the loop", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
