"""Check synthesized images against a simulated session's ground truth.

The simulator knows every unit's exact expected rate for any image, so what synthesis
promised (a target rate, "as high as possible") can be compared with what the simulated
neuron would really do.  Used by ``benchmarks/synth.py`` and ``closedloop demo``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from closedloop.data.session import SessionReader
from closedloop.data.session_format import StimulusKind
from closedloop.sim.aperture import aperture_mask
from closedloop.sim.archive import population_for, spec_from_archive
from closedloop.sim.archive_spec import RESPONSE_WINDOW_S
from closedloop.synth.interval import lower_end_hz, max_promise_hz, planned_interval_hz
from closedloop.synth.optimise import SynthesisResult
from closedloop.model.metrics import error_over_spread, fraction_within
from closedloop.synth.plan import unit_metric


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.std(a[keep]) == 0 or np.std(b[keep]) == 0:
        return float("nan")
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


def slope(target: np.ndarray, truth: np.ndarray) -> float:
    """Least-squares slope of ``truth`` on ``target``: 1 when the true rates move as far as the
    targets ask, below 1 when they fall short of the asked range, above 1 when they overshoot it
    (NaN with fewer than 3 finite pairs or targets that do not vary)."""
    keep = np.isfinite(target) & np.isfinite(truth)
    if keep.sum() < 3 or np.std(target[keep]) == 0:
        return float("nan")
    return float(np.polyfit(target[keep], truth[keep], 1)[0])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a.ravel() @ b.ravel() / (na * nb)) if na > 0 and nb > 0 else float("nan")


def ground_truth_report(
    archive: Path,
    checkpoint,
    graded: SynthesisResult,
    maxed: SynthesisResult,
    *,
    repeats: int | None = None,
    seed: int = 0,
) -> dict:
    """Ground-truth numbers for a percentile-target run (``graded``) and a "max" run.

    Parameters
    ----------
    archive
        The simulated session file the checkpoint was fitted to (its recipe rebuilds the truth).
    checkpoint
        The fitted model (`closedloop.model.checkpoint.Checkpoint`), for unit ids and metrics.
    graded, maxed
        Synthesis results for percentile targets (p20 and p80 among them for RF recovery)
        and for "max", over the same units.
    repeats, seed
        When ``repeats`` is given, every image is also "shown" that many times to the simulator
        (spikes drawn with ``seed``) and its measured mean judged against the 95 % interval
        ``closedloop synth`` prints for that many presentations
        (`closedloop.synth.interval.planned_interval_hz`, around the promise; for "max" images,
        which it prints only the lower end of, what the whole interval would hold, and how many
        lay above that end).

    Returns
    -------
    dict
        ``n_units`` judged (those in both runs) and, for "well-predicted (r/rmax >= 0.8)" and
        "all units" of those: pooled and
        median per-unit correlation of target with true rate, the median per-unit `slope` of true
        rate on target (how far the true rates follow the asked range), median |truth − target| in units
        of the unit's natural-image range (and the optimiser's own error), the fraction of
        "max" images beating the unit's best natural image, and RF similarity (cosine inside
        the aperture) of the max image and of p80 − p20 for simple and centre-surround units,
        and for "max" the median of predicted / true rate, of promised / true rate
        (`closedloop.synth.interval.max_promise_hz`) and of the ensemble's spread; for
        percentile and "max" images how far the true rates miss the predictions in units of
        the spread (`error_over_spread`); with ``repeats``, the fractions of measured means and
        of true rates inside that interval (``percentile_measured_within_interval``,
        ``percentile_true_within_interval``, ``max_…``; NaN without a recorded interval).
    """
    spec = spec_from_archive(archive)
    population = population_for(spec)
    duration = spec.durations_s[0]

    def truth(images66: np.ndarray) -> np.ndarray:
        return population.expected_rates(images66, RESPONSE_WINDOW_S, duration)

    with SessionReader(archive) as reader:
        natural = reader.stimulus_pixels[reader.stimuli["kind"] == StimulusKind.NATURAL]
    natural_true = truth(natural)  # (n_natural, n_pop)
    column = {int(u): i for i, u in enumerate(population.unit_ids)}
    model_units = np.asarray(checkpoint.unit_ids)
    pop_index = np.asarray([column[int(u)] for u in model_units])
    natural_range = natural_true.max(0)[pop_index] - natural_true.min(0)[pop_index]
    best_natural = natural_true.max(0)[pop_index]

    g = graded
    g_true = truth(g.canvas.to_display(g.images))
    g_units = np.asarray([job.unit for job in g.jobs])
    g_truth = g_true[np.arange(len(g.jobs)), pop_index[g_units]]
    m = maxed
    m_true = truth(m.canvas.to_display(m.images))
    m_units = np.asarray([job.unit for job in m.jobs])
    m_truth = m_true[np.arange(len(m.jobs)), pop_index[m_units]]
    m_promised = max_promise_hz(checkpoint, m.achieved_hz)
    g_shown = m_shown = None
    g_half = m_half = np.zeros(0)
    if repeats is not None:
        rng = np.random.default_rng(seed)
        g_shown = _shown(population, g.canvas.to_display(g.images), pop_index[g_units], duration, repeats, rng)
        m_shown = _shown(population, m.canvas.to_display(m.images), pop_index[m_units], duration, repeats, rng)
        g_half = planned_interval_hz(checkpoint, model_units[g_units], g.achieved_hz, g.spread_hz, repeats)
        m_half = planned_interval_hz(checkpoint, model_units[m_units], m_promised, m.spread_hz, repeats)

    # RF similarity inside the aperture, at display resolution.
    inside = aperture_mask(population.size_px, population.spec.aperture_diameter_px) > 0.5
    rfs = population.receptive_fields()
    grey = g.canvas.mean_luminance
    m_display = m.canvas.to_display(m.images) - grey
    g_display = g.canvas.to_display(g.images) - grey
    labels = np.asarray([job.label for job in g.jobs])

    ratio = unit_metric(checkpoint.metrics, "r_over_rmax", model_units.size)
    ratio = np.full(model_units.size, np.nan) if ratio is None else ratio
    types = population.unit_types[pop_index]
    # only units that have both percentile and max images can be judged
    judged = np.intersect1d(g_units, m_units)
    groups = {"well-predicted (r/rmax >= 0.8)": judged[ratio[judged] >= 0.8], "all units": judged}
    units: dict[str, dict] = {}
    out: dict[str, Any] = {"n_units": int(judged.size), "units": units}
    for name, members in groups.items():
        rows = np.isin(g_units, members)
        per_unit_r = [pearson(g.target_hz[g_units == u], g_truth[g_units == u]) for u in members]
        per_unit_slope = [slope(g.target_hz[g_units == u], g_truth[g_units == u]) for u in members]
        err = np.abs(g_truth[rows] - g.target_hz[rows]) / natural_range[g_units[rows]]
        model_err = np.abs(g.achieved_hz[rows] - g.target_hz[rows]) / natural_range[g_units[rows]]
        max_rows = np.isin(m_units, members)
        beats = m_truth[max_rows] > best_natural[m_units[max_rows]]
        rf = {}
        for kind in ("simple", "centre_surround"):
            sims_max, sims_diff = [], []
            for u in members[types[members] == kind]:
                true_rf = rfs[pop_index[u]] * inside
                row_max = np.flatnonzero(m_units == u)[0]
                sims_max.append(cosine(m_display[row_max] * inside, true_rf))
                hi = np.flatnonzero((g_units == u) & (labels == "p80"))
                lo = np.flatnonzero((g_units == u) & (labels == "p20"))
                if hi.size and lo.size:
                    sims_diff.append(cosine((g_display[hi[0]] - g_display[lo[0]]) * inside, true_rf))
            rf[kind] = {
                "n": len(sims_max),
                "max_image": float(np.median(sims_max)) if sims_max else None,
                "p80_minus_p20": float(np.median(sims_diff)) if sims_diff else None,
            }
        units[name] = {
            "n_units": int(members.size),
            "pooled_r": pearson(g.target_hz[rows], g_truth[rows]),
            "median_unit_r": float(np.nanmedian(per_unit_r)) if members.size else float("nan"),
            "median_unit_slope": float(np.nanmedian(per_unit_slope)) if members.size else float("nan"),
            "median_abs_error_over_range": float(np.median(err)) if err.size else float("nan"),
            "model_median_abs_error_over_range": float(np.median(model_err)) if model_err.size else float("nan"),
            "pooled_r_model_vs_truth": pearson(g.achieved_hz[rows], g_truth[rows]),
            "max_beats_best_natural": float(np.mean(beats)) if beats.size else float("nan"),
            "max_true_over_best_natural": float(np.median(m_truth[max_rows] / best_natural[m_units[max_rows]]))
            if beats.size
            else float("nan"),
            # how far "max" over-promises: the model's prediction, and what synth promises, over the true rate
            "max_predicted_over_true": _median_over_true(m.achieved_hz[max_rows], m_truth[max_rows]),
            "max_promised_over_true": _median_over_true(m_promised[max_rows], m_truth[max_rows]),
            "max_spread_hz": float(np.nanmedian(m.spread_hz[max_rows]))
            if beats.size and m.spread_hz is not None
            else float("nan"),
            # is the spread an error bar? (1 if the true rates miss by as much as it says)
            "percentile_error_over_spread": _error_over_spread(g, g_truth, rows),
            "max_error_over_spread": _error_over_spread(m, m_truth, max_rows),
            **_interval_hits("percentile", g.achieved_hz, g_truth, g_shown, g_half, rows),
            **_interval_hits("max", m_promised, m_truth, m_shown, m_half, max_rows),
            "rf_similarity": rf,
        }
    return out


def _error_over_spread(result: SynthesisResult, truth: np.ndarray, rows: np.ndarray) -> float:
    """`error_over_spread` of a run's images in ``rows`` (NaN when the run has no spread)."""
    if result.spread_hz is None or not rows.any():
        return float("nan")
    return error_over_spread(result.achieved_hz[rows], truth[rows], result.spread_hz[rows])


def _shown(population, images: np.ndarray, columns: np.ndarray, duration: float, repeats: int, rng) -> np.ndarray:
    """Each image's measured mean rate over ``repeats`` simulated presentations, for the unit it was
    made for: (n_images,)."""
    start, stop = RESPONSE_WINDOW_S
    n_bins = int(round((stop - start) / 0.001))
    counts = population.sample_binned_counts(
        images, repeats, duration_s=duration, n_bins=n_bins, bin_s=0.001, t_start_s=start, rng=rng
    )  # (n_units, n_images, repeats, n_bins)
    rates = counts.sum(axis=-1, dtype=np.float64)[columns, np.arange(images.shape[0])] / (stop - start)
    return rates.mean(axis=1)


def _median_over_true(rates: np.ndarray, truth: np.ndarray) -> float:
    """The median of ``rates`` over the true rates (NaN: no image)."""
    return float(np.median(rates / np.maximum(truth, 1e-9))) if rates.size else float("nan")


def _interval_hits(
    name: str,
    promised: np.ndarray,
    truth: np.ndarray,
    shown: np.ndarray | None,
    half: np.ndarray,
    rows: np.ndarray,
) -> dict[str, float]:
    """The fractions of measured means (``shown``, from `_shown`) and true rates of a run's images
    in ``rows`` inside promise ± ``half``, and above its lower end (``…_above_floor``): none when
    nothing was shown, NaN without an interval."""
    if shown is None:
        return {}
    promised, measured, true, half = promised[rows], shown[rows], truth[rows], half[rows]
    floor = lower_end_hz(promised, half)  # NaN where the half-width is
    return {
        f"{name}_measured_within_interval": fraction_within(promised, measured, half),
        f"{name}_true_within_interval": fraction_within(promised, true, half),
        f"{name}_measured_above_floor": _fraction_above(measured, floor),
        f"{name}_true_above_floor": _fraction_above(true, floor),
    }


def _fraction_above(rates: np.ndarray, floor: np.ndarray) -> float:
    """The fraction of ``rates`` at or above ``floor``, where both are known (NaN: none)."""
    known = np.isfinite(rates) & np.isfinite(floor)
    return float(np.mean(rates[known] >= floor[known])) if known.any() else float("nan")
