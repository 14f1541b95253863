"""The numbers of the loop report (`closedloop.reports.loop_report`), from a session and its journal.

Measured rates are means over a stimulus's trials in good blocks (not flagged), as the
runner sends them to the model server.  Natural-image range and best natural image of a
unit come from the same means over every natural image recorded (measured), or from the
brain's expected rates for those images (true).  Errors are |rate − target| as a
percentage of that range, so units with different rates compare.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import yaml

from closedloop.config.yaml_loader import safe_load_bounded
from closedloop.data.session_format import StimulusKind
from closedloop.data.session_reader import SessionReader
from closedloop.errors import DataFileError
from closedloop.model.saved import load_saved, model_file_name, model_path, predict_pixels
from closedloop.reports.loop_types import (
    Iteration,
    LoopReport,
    ModelFit,
    SynthesizedImage,
    Turnaround,
    read_journal,
)
from closedloop.runner.journal import BlockRecord
from closedloop.model.metrics import (
    calibrated_interval_sds,
    error_over_spread,
    fraction_within,
    interval_halfwidths,
    mean_standard_errors,
    noise_per_hz,
    promise_ratio,
)
from closedloop.synth.verify import slope

PRESENTATION_KINDS = ("natural", "gratings", "present_synthesized")


def build_report(session_path: Path, brain, models_dir: Path | None, device: str) -> LoopReport:
    with SessionReader(session_path) as reader:
        stimuli, trials, blocks = reader.stimuli, reader.trials, reader.blocks
        responses = np.asarray(reader.responses, dtype=np.float64)
        unit_ids = np.asarray(reader.unit_ids, dtype=np.int64)
        n_blocks = reader.n_blocks
        window_s = tuple(float(v) for v in reader.response_window_s)
        duration_s = _stimulus_duration_s(reader)
        natural_ids = stimuli["id"][stimuli["kind"] == StimulusKind.NATURAL]
        synthesized = stimuli[stimuli["kind"] == StimulusKind.SYNTHESIZED]
        natural_pixels = reader.read_pixels(natural_ids) if brain is not None else None
        synthesized_pixels = reader.read_pixels(synthesized["id"])
    records = read_journal(session_path, n_blocks)
    fits = _fits(records)
    by_version = {fit.version: fit for fit in fits}

    good = blocks["flagged"][trials["block"]] == 0 if trials.size else np.zeros(0, bool)
    means, counts, variances = _stimulus_means(trials["stimulus_id"][good], responses[good], len(stimuli))
    noise = noise_per_hz(means, variances, counts[:, None])
    natural_means = means[natural_ids][counts[natural_ids] > 0]
    natural_range = np.ptp(natural_means, axis=0) if natural_means.size else np.full(unit_ids.size, np.nan)
    best_natural = natural_means.max(axis=0) if natural_means.size else np.full(unit_ids.size, np.nan)
    column = {int(u): i for i, u in enumerate(unit_ids)}

    truth = None if natural_pixels is None else _Truth(brain, unit_ids, window_s, duration_s, natural_pixels)
    synthesized_rows = {int(s): row for row, s in enumerate(synthesized["id"])}
    models = _SavedModels(models_dir, device)
    report = LoopReport(session=str(session_path), fits=fits, iterations=[], has_truth=truth is not None)

    for number, (record, (start, stop)) in enumerate(_synthesize_records(records), 1):
        ids = np.arange(start, stop, dtype=np.int64)
        rows = np.asarray([synthesized_rows[int(i)] for i in ids], dtype=np.int64)
        table = synthesized[rows]
        cols = np.asarray([column[int(u)] for u in table["unit_id"]], dtype=np.int64)
        images = synthesized_images(table, means[:, cols], variances[:, cols], counts, noise[cols])
        version = int(table["model_version"][0]) if table.size else record.model_version
        after = _fit_after(records, record.session_block, ids, trials, blocks, version)
        iteration = Iteration(
            number,
            record.iteration,
            record.session_block,
            by_version.get(version),
            None if after is None else by_version.get(after),
            images,
        )
        if truth is not None:
            true = truth.rates(synthesized_pixels[rows])
            for image, t in zip(images, true[np.arange(len(images)), cols]):
                image.true_hz = float(t)
        models.fill(iteration, version, after, synthesized_pixels[rows])
        iteration.summary = _summary(
            images,
            natural_range[cols],
            best_natural[cols],
            None if truth is None else truth.natural_range[cols],
            None if truth is None else truth.best_natural[cols],
        )
        # the promises first: each image's interval is centred on its promise
        iteration.summary.update(iteration_max_promise(images, iteration.model_before))
        iteration.summary.update(
            iteration_interval(images, iteration.model_before, report.iterations, natural_range[cols])
        )
        iteration.turnaround = turnaround(records, record.session_block)
        report.iterations.append(iteration)
    every = [image for it in report.iterations for image in it.images]
    promised, measured, true, half = _rates(every, "promised_hz", "measured_hz", "true_hz", "interval_hz")
    report.spread_honesty = {
        **spread_honesty(every),
        "measured_within_interval": fraction_within(promised, measured, half),
        "true_within_interval": fraction_within(promised, true, half),
    }
    if not report.iterations:
        report.notes.append("no synthesize block stored images: there is no loop iteration to report")
    if models_dir is None and report.iterations:
        report.notes.append(
            "predictions of the refitted model on the synthesized images need the saved models: "
            "give models_dir (the model server's out_dir, closedloop run --model-out)"
        )
    if truth is None and report.iterations:
        report.notes.append("no brain given: ground-truth rates left out")
    return report


def synthesized_images(
    table: np.ndarray, means: np.ndarray, variances: np.ndarray, counts: np.ndarray, noise: np.ndarray
) -> list[SynthesizedImage]:
    """One `SynthesizedImage` per row of the session's ``stimuli`` ``table``, with its measured mean
    and that mean's standard error (`closedloop.model.metrics.mean_standard_errors`: from the unit's
    noise when the image was shown once). ``means`` and ``variances`` are (n_stimuli, n_rows),
    column j for row j's unit; ``counts`` (n_stimuli,) trials; ``noise`` one per row."""
    ids, rows = table["id"], np.arange(len(table))
    measured, n = means[ids, rows], counts[ids]
    se = mean_standard_errors(measured, variances[ids, rows], n, table["achieved_hz"], noise)
    return [
        SynthesizedImage(
            int(s["id"]),
            int(s["unit_id"]),
            float(s["target_hz"]),
            float(s["achieved_hz"]),
            float(m),
            int(c),
            spread_hz=float(s["spread_hz"]),
            measured_se_hz=float(e),
        )
        for s, m, c, e in zip(table, measured, n, se)
    ]


# --- the journal ------------------------------------------------------------------------


def _fits(records: list[BlockRecord]) -> list[ModelFit]:
    out = []
    for r in records:
        if r.kind != "fit" or r.model_version <= 0 or not r.metrics:
            continue
        m = r.metrics
        out.append(
            ModelFit(
                r.model_version,
                r.session_block,
                m.get("r_mean", math.nan),
                m.get("r_median", math.nan),
                m.get("r_over_rmax_mean", math.nan),
                int(_finite(m.get("n_images"), 0)),
                m.get("refit_seconds", math.nan),
                bool(_finite(m.get("warm_start"), 0)),
                m.get("heldout_error_over_spread", math.nan),
                m.get("heldout_interval_sds", math.nan),
                m.get("heldout_top_ratio", math.nan),
            )
        )
    return out


def _synthesize_records(records: list[BlockRecord]) -> list[tuple[BlockRecord, list[int]]]:
    """The synthesize blocks that stored images, each with its [start, stop) of stimulus ids."""
    return [(r, r.stimuli) for r in records if r.kind == "synthesize" and r.stimulus_set == "synthesized" and r.stimuli]


def _fit_after(records, synth_block: int, ids: np.ndarray, trials, blocks, version: int) -> int | None:
    """Version of the first refit after the images' responses reached the model (``None``: none)."""
    shown_blocks = np.unique(trials["block"][np.isin(trials["stimulus_id"], ids)])
    shown_blocks = shown_blocks[(shown_blocks > synth_block) & (blocks["flagged"][shown_blocks] == 0)]
    if shown_blocks.size == 0:
        return None
    first_shown = int(shown_blocks.min())
    for r in records:
        if r.session_block > first_shown and r.kind == "fit" and r.model_version > version and r.metrics:
            return r.model_version
    return None


def turnaround(records: list[BlockRecord], synth_block: int) -> Turnaround:
    """The turnaround ending at the SynthesizeResult of block ``synth_block`` (NaN parts: not recorded)."""
    before = [r for r in records if r.session_block <= synth_block]
    source = next(
        (
            r
            for r in reversed(before)
            if r.kind in PRESENTATION_KINDS and r.session_block < synth_block and "responses_in_hand" in r.times
        ),
        None,
    )
    if source is None:
        return Turnaround()
    times: dict[str, float] = {}
    for r in before:
        if r.session_block >= source.session_block:
            times.update(r.times)  # the newest of each moment up to the synthesize block

    def span(first: str, last: str) -> float:
        return times[last] - times[first] if first in times and last in times else math.nan

    total = span("responses_in_hand", "synthesis_received")
    extraction = span("responses_in_hand", "responses_delivered")
    refit = span("fit_requested", "model_updated")
    synthesis = span("synthesis_requested", "synthesis_received")
    parts = [extraction, refit, synthesis]
    n_fits = sum(1 for r in before if r.session_block > source.session_block and r.kind == "fit")
    return Turnaround(
        total,
        extraction,
        refit,
        synthesis,
        other=total - float(np.nansum(parts)) if math.isfinite(total) else math.nan,
        from_block=source.session_block,
        n_fits=n_fits,
    )


# --- rates ------------------------------------------------------------------------------


def _stimulus_means(
    stimulus_ids: np.ndarray, rates: np.ndarray, n_stimuli: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_stimuli, n_units) mean rate over trials with finite rates, (n_stimuli,) trial counts, and
    (n_stimuli, n_units) trial variances (NaN below two trials)."""
    keep = np.all(np.isfinite(rates), axis=1)
    ids, rates = stimulus_ids[keep], rates[keep]
    sums = np.zeros((n_stimuli, rates.shape[1] if rates.ndim == 2 else 0))
    np.add.at(sums, ids, rates)
    counts = np.bincount(ids, minlength=n_stimuli)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
        squares = np.zeros_like(sums)
        np.add.at(squares, ids, (rates - means[ids]) ** 2)
        variances = np.where(counts[:, None] > 1, squares / (counts[:, None] - 1), np.nan)
        return means, counts, variances


def _stimulus_duration_s(reader) -> float:
    """The on-time of a stimulus: the runner's stimulus frames at the rig's refresh rate."""
    frames = reader.metadata.get("runner", {}).get("stimulus_frames")
    try:
        refresh = float(safe_load_bounded(reader.rig_yaml)["display"]["refresh_hz"])
    except (yaml.YAMLError, KeyError, TypeError, ValueError):
        refresh = None
    if not frames or not refresh:
        raise DataFileError(
            reader.path,
            "does not say how long stimuli were shown (runner metadata "
            "stimulus_frames and the rig's display.refresh_hz); it was not written by the runner",
        )
    return float(frames) / refresh


class _Truth:
    """The brain's expected rates for the session's units."""

    def __init__(self, brain, unit_ids: np.ndarray, window_s, duration_s: float, natural_pixels: np.ndarray):
        source = brain.build() if hasattr(brain, "build") else brain
        if not (hasattr(source, "expected_rates") or hasattr(source, "brain")):
            raise TypeError(
                f"{type(source).__name__} gives no expected rates (a simulated population or a digital twin does)"
            )
        brain_ids = {int(u): i for i, u in enumerate(np.asarray(source.unit_ids))}
        missing = [int(u) for u in unit_ids if int(u) not in brain_ids]
        if missing:
            raise ValueError(
                f"the brain has no unit(s) {missing[:5]} of the session: it is not the brain that was recorded"
            )
        self.source, self.window_s, self.duration_s = source, window_s, duration_s
        self.columns = np.asarray([brain_ids[int(u)] for u in unit_ids], dtype=np.int64)
        natural = self.rates(natural_pixels)
        self.natural_range, self.best_natural = np.ptp(natural, axis=0), natural.max(axis=0)

    def rates(self, images: np.ndarray) -> np.ndarray:
        if hasattr(self.source, "expected_rates"):
            rates = self.source.expected_rates(images, self.window_s, self.duration_s)
        else:  # a callable brain's rates are its expected window rates
            rates = self.source.brain(images)
        return np.asarray(rates, dtype=np.float64)[:, self.columns]


class _SavedModels:
    """Predictions of saved model versions on synthesized images (``models_dir/model_vNNN.pt``)."""

    def __init__(self, folder: Path | None, device: str):
        self.folder, self.device = folder, device
        self._loaded: dict[int, object] = {}

    def _load(self, folder: Path, version: int):
        if version not in self._loaded:
            self._loaded[version] = load_saved(folder, version, self.device)
        return self._loaded[version]

    def _predict(self, checkpoint, pixels: np.ndarray, unit_ids: list[int]) -> np.ndarray:
        rates = predict_pixels(checkpoint, pixels)
        column = {int(u): i for i, u in enumerate(checkpoint.unit_ids)}
        return np.asarray([rates[k, column[u]] if u in column else math.nan for k, u in enumerate(unit_ids)])

    def fill(self, iteration: Iteration, version: int, after: int | None, pixels: np.ndarray) -> None:
        images = iteration.images
        units = [i.unit_id for i in images]
        before = None if self.folder is None else self._load(self.folder, version)
        if before is not None:
            for image, rate in zip(images, self._predict(before, pixels, units)):
                image.predicted_before_hz = float(rate)
            iteration.before_source = f"{model_file_name(version)} on the stored images"
        else:
            for image in images:
                image.predicted_before_hz = image.achieved_hz
            iteration.before_source = "SynthesizeResult.achieved"
        if after is None:
            iteration.after_note = "no refit after the images' responses"
            return
        checkpoint = None if self.folder is None else self._load(self.folder, after)
        if checkpoint is None:
            iteration.after_note = (
                f"model version {after} was not saved (give models_dir: the server's out_dir)"
                if self.folder is None
                else f"no {model_path(self.folder, after)}"
            )
            return
        held = set(int(i) for i in np.asarray(checkpoint.image_ids)[checkpoint.split.held_out])
        for image, rate in zip(images, self._predict(checkpoint, pixels, units)):
            image.predicted_after_hz = float(rate)
            image.held_out_after = image.stimulus_id in held


# --- summaries --------------------------------------------------------------------------


def pearson(a, b) -> float:
    """Pearson r over pairs where both are finite; NaN with fewer than 3 or no spread."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.std(a[keep]) == 0 or np.std(b[keep]) == 0:
        return math.nan
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


def _median(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else math.nan


def _summary(images: list[SynthesizedImage], measured_range, best_measured, true_range, best_true) -> dict:
    """Control accuracy of one iteration (keys explained in `closedloop.reports.loop_view.SUMMARY_LINES`)."""
    column = {
        name: np.asarray([getattr(i, name) for i in images], dtype=np.float64)
        for name in (
            "target_hz",
            "achieved_hz",
            "spread_hz",
            "measured_hz",
            "true_hz",
            "predicted_before_hz",
            "predicted_after_hz",
        )
    }
    units = np.asarray([i.unit_id for i in images])
    target, measured, true = column["target_hz"], column["measured_hz"], column["true_hz"]
    graded, maxed = np.isfinite(target), ~np.isfinite(target)
    held = np.asarray([i.held_out_after is True for i in images])

    def per_unit(statistic, rates: np.ndarray) -> float:
        """Median over units of ``statistic(target, rate)`` on the unit's graded images."""
        return _median(
            [statistic(target[graded & (units == u)], rates[graded & (units == u)]) for u in np.unique(units)]
        )

    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "n_images": float(len(images)),
            "n_measured": float(np.sum(np.isfinite(measured))),
            "r_target_measured": pearson(target[graded], measured[graded]),
            "r_target_true": pearson(target[graded], true[graded]),
            "r_target_measured_unit_median": per_unit(pearson, measured),
            "r_target_true_unit_median": per_unit(pearson, true),
            # how far the rates moved for the range asked: the model's gain on its own images
            "slope_measured_unit_median": per_unit(slope, measured),
            "slope_true_unit_median": per_unit(slope, true),
            "error_measured_pct": 100 * _median(np.abs(measured - target)[graded] / measured_range[graded]),
            "error_true_pct": np.nan
            if true_range is None
            else 100 * _median(np.abs(true - target)[graded] / true_range[graded]),
            "error_predicted_pct": 100
            * _median(np.abs(column["predicted_before_hz"] - target)[graded] / measured_range[graded]),
            "max_measured_over_best_natural": _median(measured[maxed] / best_measured[maxed]),
            "max_measured_beats_best_natural": _fraction(measured[maxed] > best_measured[maxed], measured[maxed]),
            "max_true_over_best_natural": np.nan if best_true is None else _median(true[maxed] / best_true[maxed]),
            "max_true_beats_best_natural": np.nan
            if best_true is None
            else _fraction(true[maxed] > best_true[maxed], true[maxed]),
            # what the optimiser promised against what the brain gives, and how sure the ensemble was
            "max_predicted_over_true": _median(column["achieved_hz"][maxed] / true[maxed]),
            "max_spread_hz": _median(column["spread_hz"][maxed]),
            **spread_honesty(images),
        }
        for when in ("before", "after"):
            predicted = column[f"predicted_{when}_hz"]
            out[f"r_predicted_{when}"] = pearson(predicted, measured)
            out[f"error_predicted_{when}_pct"] = 100 * _median(np.abs(predicted - measured) / measured_range)
            out[f"r_predicted_{when}_held_out"] = pearson(predicted[held], measured[held])
        out["n_held_out_after"] = float(held.sum())
    return out


def spread_honesty(images: list[SynthesizedImage]) -> dict[str, float]:
    """Is the ensemble's spread an error bar? How far measured (noise taken off) and true rates miss
    the promised rates, in units of the spread (`closedloop.model.metrics.error_over_spread`; 1 if it is)."""
    promised, spread, measured, se, true = _rates(
        images, "achieved_hz", "spread_hz", "measured_hz", "measured_se_hz", "true_hz"
    )
    return {
        "error_over_spread_measured": error_over_spread(promised, measured, spread, se),
        "error_over_spread_true": error_over_spread(promised, true, spread),
    }


_MEASURED = ("promised_hz", "spread_hz", "measured_hz", "measured_se_hz")


def iteration_interval(
    images: list[SynthesizedImage], model: ModelFit | None, earlier: list[Iteration], natural_range: np.ndarray
) -> dict:
    """Each image's 95 % interval for its measured mean, promise ± k·√(spread² + se²) (the promise:
    ``promised_hz``, set by `iteration_max_promise`), with ``k`` known before the images were
    shown: `closedloop.model.metrics.interval_sds` of the earlier
    iterations' measured means when there are enough of them, else the one the model recorded from
    its held-out photographs (easier to predict than synthesized images). Also the median half-width
    as % of each image's unit's measured natural-image range (``natural_range``, one per image) and
    the fraction of measured and of true rates inside the interval. Sets each image's
    ``interval_hz``, the interval's half-width."""
    promised, spread, measured, se = _rates([image for it in earlier for image in it.images], *_MEASURED)
    fallback = model.interval_sds if model is not None else math.nan
    k, used = calibrated_interval_sds(promised, measured, spread, se, fallback)
    promised, spread, measured, se, true = _rates(images, *_MEASURED, "true_hz")
    half = interval_halfwidths(k, spread, se)
    for image, width in zip(images, half):
        image.interval_hz = float(width)
    with np.errstate(divide="ignore", invalid="ignore"):  # a unit whose natural rates never varied
        halfwidth_pct = 100 * _median(half / natural_range)
    return {
        "interval_sds": k,
        "interval_from_images": float(used),
        "interval_halfwidth_pct": halfwidth_pct,
        "measured_within_interval": fraction_within(promised, measured, half),
        "true_within_interval": fraction_within(promised, true, half),
    }


def iteration_max_promise(images: list[SynthesizedImage], model: ModelFit | None) -> dict:
    """The rate each image is promised: its prediction, and for a "max" image its prediction times
    the ``heldout_top_ratio`` the model that made it recorded (`closedloop.model.metrics.promise_ratio`).
    Sets each image's ``promised_hz``; returns the ratio and the "max" promises' median over the
    measured and the true rates."""
    ratio = promise_ratio(model.top_ratio if model is not None else None)
    for image in images:
        image.promised_hz = image.achieved_hz * (ratio if math.isnan(image.target_hz) else 1.0)
    maxed = [image for image in images if math.isnan(image.target_hz)]
    promised, measured, true = _rates(maxed, "promised_hz", "measured_hz", "true_hz")
    with np.errstate(divide="ignore", invalid="ignore"):  # an image measured at 0 Hz: infinitely over-promised
        over_measured, over_true = promised / measured, promised / true
    return {
        "max_promise_ratio": ratio,
        "max_promised_over_measured": _median_of_known(over_measured),
        "max_promised_over_true": _median_of_known(over_true),
    }


def _median_of_known(values: np.ndarray) -> float:
    """The median of the values that are not NaN (infinities count), NaN when there are none."""
    values = values[~np.isnan(values)]
    return float(np.median(values)) if values.size else math.nan


def _rates(images: list[SynthesizedImage], *names: str) -> list[np.ndarray]:
    """One float array per `SynthesizedImage` field named, over the images."""
    return [np.asarray([getattr(image, name) for image in images], dtype=np.float64) for name in names]


def _fraction(hits: np.ndarray, values: np.ndarray) -> float:
    known = np.isfinite(values)
    return float(np.mean(hits[known])) if known.any() else math.nan


def _finite(value, default: float) -> float:
    return default if value is None or not math.isfinite(float(value)) else float(value)
