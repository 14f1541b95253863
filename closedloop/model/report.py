"""What a fit reports: per-unit metrics, their JSON, a terminal table and Fig. 3.

`evaluate` turns held-out predictions and trials into a `MetricsReport`; the fit command
writes it with `MetricsReport.to_json`, prints `summary_table` over sessions, and draws
the paper's Fig. 3 with `fig3`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

import numpy as np

from closedloop.errors import DataFileError
from closedloop.model import metrics
from closedloop.model.cells import GROUP_ORDER, UNDEFINED, CellProperties, group_summary

METRICS_FORMAT = "closedloop-metrics"
METRICS_VERSION = 1
WITHIN_RMAX_FRACTION = 0.9  # "within 10 % of rmax" means r >= 0.9 rmax (docs/methods.md, Model)

# per-unit float arrays of a report, in the order they are written
UNIT_METRICS = ("r", "fve", "rmax", "r_over_rmax", "cc_max", "cc_norm", "signal_power", "fev", "feve")


def _nan_stat(values: np.ndarray, stat) -> float:
    finite = values[np.isfinite(values)]
    return float(stat(finite)) if finite.size else float("nan")


def _ratio_of_means(r: np.ndarray, r_oracle: np.ndarray) -> float:
    """Mean r over mean r_oracle on the units where both are defined (NaN if none, or that mean <= 0)."""
    both = np.isfinite(r) & np.isfinite(r_oracle)
    if not both.any() or r_oracle[both].mean() <= 0:
        return float("nan")
    return float(r[both].mean() / r_oracle[both].mean())


def _json_floats(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64)]


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True, eq=False)
class MetricsReport:
    """Held-out metrics of one fitted model, (n_units,) arrays (see `closedloop.model.metrics`).

    Attributes
    ----------
    r, fve, rmax, r_over_rmax, cc_max, cc_norm, signal_power, fev, feve
        Per-unit metrics; NaN where undefined.
    reliable
        (n_units,) bool, `closedloop.model.metrics.unit_masks`' reliable units (trial means
        that depend on the image; FEV >= ``min_fev``).
    r_linear
        r of the linear baseline, or ``None`` when no baseline was evaluated.
    r_oracle
        r of the simulator's exact rates on the same held-out images, scored the
        same way (simulated archives only; ``None`` otherwise).  ``r / r_oracle`` is
        how much of what a perfect model could reach the model reaches.
    unit_ids
        Unit identifiers, or ``None``.
    n_images, n_draws, seed, min_fev
        Held-out image count and the settings the numbers depend on.
    """

    r: np.ndarray
    fve: np.ndarray
    rmax: np.ndarray
    r_over_rmax: np.ndarray
    cc_max: np.ndarray
    cc_norm: np.ndarray
    signal_power: np.ndarray
    fev: np.ndarray
    feve: np.ndarray
    reliable: np.ndarray
    r_linear: np.ndarray | None = None
    unit_ids: np.ndarray | None = None
    n_images: int = 0
    r_oracle: np.ndarray | None = None
    n_draws: int = 100
    seed: int = 0
    min_fev: float = metrics.DEFAULT_MIN_FEV

    @property
    def n_units(self) -> int:
        return int(self.r.shape[0])

    @property
    def within_rmax(self) -> np.ndarray:
        """(n_units,) bool: r >= 0.9 rmax (False where either is undefined)."""
        with np.errstate(invalid="ignore"):
            return np.isfinite(self.r) & np.isfinite(self.rmax) & (self.r >= WITHIN_RMAX_FRACTION * self.rmax)

    @property
    def summary(self) -> dict[str, float | int]:
        """Population numbers; means and medians skip units where a metric is NaN.

        ``frac_within_10pct_rmax`` counts units with r >= 0.9 rmax among those with both
        defined; ``n_cc_norm`` is how many units CCnorm is defined for (signal power > 0).
        ``mean_r_over_oracle`` is mean r over mean r_oracle (units where both are
        defined; a ratio of means, so units the simulator barely drives do not dominate);
        NaN without an oracle.  Keys ending ``_reliable`` are the same means over the
        reliable units only (`metrics.unit_masks`): a unit whose trial means do not depend
        on the image has an rmax near 1/√2, what noise alone gives, so its r/rmax and
        r/oracle measure its noise, not the model.
        """
        defined_both = np.isfinite(self.r) & np.isfinite(self.rmax)
        r_linear = np.full(self.n_units, np.nan) if self.r_linear is None else self.r_linear
        oracle = {}
        if self.r_oracle is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                oracle_over_rmax = np.where(self.rmax > 0, self.r_oracle / self.rmax, np.nan)
            oracle = {
                "mean_r_oracle": _nan_stat(self.r_oracle, np.mean),
                "mean_r_oracle_over_rmax": _nan_stat(oracle_over_rmax, np.mean),
                "mean_r_oracle_over_rmax_reliable": _nan_stat(oracle_over_rmax[self.reliable], np.mean),
                "mean_r_over_oracle": _ratio_of_means(self.r, self.r_oracle),
                "mean_r_over_oracle_reliable": _ratio_of_means(self.r[self.reliable], self.r_oracle[self.reliable]),
            }
        return {
            "n_units": self.n_units,
            "n_reliable": int(np.sum(self.reliable)),
            "n_images": int(self.n_images),
            "mean_r": _nan_stat(self.r, np.mean),
            "median_r": _nan_stat(self.r, np.median),
            "mean_rmax": _nan_stat(self.rmax, np.mean),
            "mean_r_over_rmax": _nan_stat(self.r_over_rmax, np.mean),
            "mean_r_over_rmax_reliable": _nan_stat(self.r_over_rmax[self.reliable], np.mean),
            "median_r_over_rmax": _nan_stat(self.r_over_rmax, np.median),
            "frac_within_10pct_rmax": (
                float(self.within_rmax.sum() / defined_both.sum()) if defined_both.any() else float("nan")
            ),
            "mean_cc_norm": _nan_stat(self.cc_norm, np.mean),
            "median_cc_norm": _nan_stat(self.cc_norm, np.median),
            "n_cc_norm": int(np.isfinite(self.cc_norm).sum()),
            "mean_cc_max": _nan_stat(self.cc_max, np.mean),
            "mean_fve": _nan_stat(self.fve, np.mean),
            "mean_feve": _nan_stat(self.feve, np.mean),
            "mean_r_linear": _nan_stat(r_linear, np.mean),
            **oracle,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: floats, ints, bools, lists; NaN becomes ``None``."""
        units: dict[str, Any] = {name: _json_floats(getattr(self, name)) for name in UNIT_METRICS}
        units["reliable"] = [bool(v) for v in self.reliable]
        if self.r_linear is not None:
            units["r_linear"] = _json_floats(self.r_linear)
        if self.r_oracle is not None:
            units["r_oracle"] = _json_floats(self.r_oracle)
        return {
            "format": METRICS_FORMAT,
            "version": METRICS_VERSION,
            "n_images": int(self.n_images),
            "n_draws": int(self.n_draws),
            "seed": int(self.seed),
            "min_fev": float(self.min_fev),
            "unit_ids": None if self.unit_ids is None else [int(u) for u in self.unit_ids],
            "units": units,
            "summary": {key: _json_value(value) for key, value in self.summary.items()},
        }

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of `to_dict` (strict JSON: no NaN literals)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<metrics>") -> MetricsReport:
        """Rebuild a report from `to_dict` data; raises `DataFileError` naming ``source``."""

        def fail(message: str) -> DataFileError:
            return DataFileError(source, f"{message}; expected metrics written by MetricsReport.to_json")

        if not isinstance(data, Mapping) or data.get("format") != METRICS_FORMAT:
            raise fail(f"not a metrics file (its 'format' is not {METRICS_FORMAT!r})")
        if data.get("version") != METRICS_VERSION:
            raise fail(f"metrics version {data.get('version')!r} is not supported (this reads {METRICS_VERSION})")
        units = data.get("units")
        if not isinstance(units, Mapping):
            raise fail("'units' is missing or not an object")

        def float_array(name: str) -> np.ndarray:
            values = units.get(name)
            if not isinstance(values, list) or not all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values
            ):
                raise fail(f"units.{name} must be a list of numbers or null")
            return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)

        arrays = {name: float_array(name) for name in UNIT_METRICS}
        reliable = units.get("reliable")
        if not isinstance(reliable, list) or not all(isinstance(v, bool) for v in reliable):
            raise fail("units.reliable must be a list of true/false")
        arrays["reliable"] = np.array(reliable, dtype=bool)
        for optional in ("r_linear", "r_oracle"):
            if optional in units:
                arrays[optional] = float_array(optional)
        unit_ids = data.get("unit_ids")
        if unit_ids is not None:
            integers = isinstance(unit_ids, list) and all(
                isinstance(u, int) and not isinstance(u, bool) for u in unit_ids
            )
            if not integers:
                raise fail("unit_ids must be a list of integers or null")
            arrays["unit_ids"] = np.array(unit_ids, dtype=np.int64)
        lengths = {name: len(values) for name, values in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise fail(f"per-unit lists differ in length: {lengths}")
        settings: dict[str, Any] = {}
        for key, kind in (("n_images", int), ("n_draws", int), ("seed", int), ("min_fev", (int, float))):
            value = data.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise fail(f"'{key}' is missing or not a number")
            settings[key] = value
        settings["min_fev"] = float(settings["min_fev"])
        fields: dict[str, Any] = {**arrays, **settings}  # disjoint keys: the per-unit arrays, then the settings
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str, source: str = "<metrics JSON>") -> MetricsReport:
        """Inverse of `to_json`; ``source`` (e.g. the file path) names the input in errors."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataFileError(source, f"not valid JSON ({error.msg} at line {error.lineno})") from None
        return cls.from_dict(data, source)


def evaluate(
    pred: np.ndarray,
    trials: np.ndarray,
    *,
    baseline_pred: np.ndarray | None = None,
    unit_ids: np.ndarray | None = None,
    seed: int = 0,
    n_draws: int = 100,
    min_fev: float = metrics.DEFAULT_MIN_FEV,
    oracle_pred: np.ndarray | None = None,
) -> MetricsReport:
    """All held-out metrics of a model's predictions.

    Parameters
    ----------
    pred
        (n_images, n_units) predicted rates for the held-out images.
    trials
        (n_images, n_repeats, n_units) measured rates in Hz, NaN for missing repeats.
    baseline_pred
        (n_images, n_units) predictions of the linear baseline, giving ``r_linear``.
    unit_ids
        (n_units,) identifiers to record with the numbers.
    seed, n_draws
        Random draws of `metrics.rmax_kindel` (the only random metric).
    min_fev
        FEV cut-off for ``reliable`` (`metrics.unit_masks`).
    oracle_pred
        (n_images, n_units) the simulator's exact rates for the held-out images
        (`closedloop.sim.truth.oracle_rates`), giving ``r_oracle``.
    """
    pred = np.asarray(pred, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    if trials.ndim != 3:
        raise ValueError(f"trials must be (n_images, n_repeats, n_units), got shape {trials.shape}")
    expected = (trials.shape[0], trials.shape[2])
    for name, array in (("pred", pred), ("baseline_pred", baseline_pred), ("oracle_pred", oracle_pred)):
        if array is not None and np.shape(array) != expected:
            raise ValueError(f"{name} has shape {np.shape(array)}, trials need {expected}")
    if unit_ids is not None and np.shape(unit_ids) != (trials.shape[2],):
        raise ValueError(f"unit_ids has shape {np.shape(unit_ids)}, trials have {trials.shape[2]} units")
    means = metrics.trial_means(trials)
    r = metrics.pearson_r(pred, means)
    r_linear = None if baseline_pred is None else metrics.pearson_r(np.asarray(baseline_pred, float), means)
    rmax = metrics.rmax_kindel(trials, n_draws=n_draws, seed=seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        r_over_rmax = np.where(rmax > 0, r / rmax, np.nan)
    return MetricsReport(
        r=r,
        fve=metrics.fve(pred, means),
        rmax=rmax,
        r_over_rmax=r_over_rmax,
        cc_max=metrics.cc_max(trials),
        cc_norm=metrics.cc_norm(pred, trials),
        signal_power=metrics.signal_power(trials),
        fev=metrics.fev(trials),
        feve=metrics.feve(pred, trials),
        reliable=metrics.unit_masks(trials, min_fev=min_fev).reliable,
        r_linear=r_linear,
        unit_ids=None if unit_ids is None else np.asarray(unit_ids, dtype=np.int64),
        n_images=int(trials.shape[0]),
        r_oracle=None if oracle_pred is None else metrics.pearson_r(np.asarray(oracle_pred, float), means),
        n_draws=int(n_draws),
        seed=int(seed),
        min_fev=float(min_fev),
    )


# --------------------------------------------------------------------------------------
# terminal table over sessions


@dataclass(frozen=True)
class SessionRow:
    """One session's line in `summary_table`; NaN / ``None`` print as "–".

    The ``_reliable`` means and ``n_reliable`` are over the session's reliable units
    (`MetricsReport.summary`); ``n_reliable`` ``None`` when unknown.
    """

    name: str
    n_units: int
    mean_r: float
    mean_r_over_rmax: float
    mean_cc_norm: float
    mean_r_linear: float
    frac_within_10pct_rmax: float
    fit_time_s: float | None = None
    mean_r_over_oracle: float = float("nan")
    n_reliable: int | None = None
    mean_r_over_rmax_reliable: float = float("nan")
    mean_r_over_oracle_reliable: float = float("nan")

    @classmethod
    def from_report(cls, name: str, report: MetricsReport, fit_time_s: float | None = None) -> SessionRow:
        return cls.from_summary(name, report.summary, fit_time_s)

    @classmethod
    def from_summary(cls, name: str, s: dict, fit_time_s: float | None = None) -> SessionRow:
        """The row of a session from its summary (`MetricsReport.summary`, a fit outcome's)."""
        return cls(
            name=name,
            n_units=int(s["n_units"]),
            mean_r=_number(s["mean_r"]),
            mean_r_over_rmax=_number(s["mean_r_over_rmax"]),
            mean_cc_norm=_number(s["mean_cc_norm"]),
            mean_r_linear=_number(s["mean_r_linear"]),
            frac_within_10pct_rmax=_number(s["frac_within_10pct_rmax"]),
            fit_time_s=fit_time_s,
            mean_r_over_oracle=_number(s.get("mean_r_over_oracle")),
            n_reliable=None if s.get("n_reliable") is None else int(s["n_reliable"]),
            mean_r_over_rmax_reliable=_number(s.get("mean_r_over_rmax_reliable")),
            mean_r_over_oracle_reliable=_number(s.get("mean_r_over_oracle_reliable")),
        )


def _number(value: Any) -> float:
    # A summary read back from JSON holds None where the number was NaN.
    return float("nan") if value is None else float(value)


_COLUMNS = ("session", "units", "reliable", "r", "r/rmax", "r/rmax rel.", "CCnorm", "r_linear", "r≥0.9rmax", "fit time")
#: Shown after r/rmax when some session has a simulator oracle.
_ORACLE_COLUMNS = ("r/oracle", "r/oracle rel.")
#: Printed under the table: what "rel." means and why it is there.
RELIABLE_LEGEND = (
    "rel.: over the reliable units only, whose trial means depend on the image "
    f"(ANOVA p < {metrics.RELIABLE_IMAGE_P:g}); a unit whose means do not has rmax near 0.71, what "
    "noise alone gives, so its r/rmax says nothing about the model"
)


def _cells(row: SessionRow, oracle: bool = False) -> list[str]:
    def number(x: float) -> str:
        return f"{x:.3f}" if math.isfinite(x) else "–"

    def percent(x: float) -> str:
        return f"{100 * x:.0f}%" if math.isfinite(x) else "–"

    timed = row.fit_time_s is not None and math.isfinite(row.fit_time_s)
    return [
        row.name,
        str(row.n_units),
        "–" if row.n_reliable is None else str(row.n_reliable),
        number(row.mean_r),
        number(row.mean_r_over_rmax),
        number(row.mean_r_over_rmax_reliable),
        *([number(row.mean_r_over_oracle), number(row.mean_r_over_oracle_reliable)] if oracle else []),
        number(row.mean_cc_norm),
        number(row.mean_r_linear),
        percent(row.frac_within_10pct_rmax),
        f"{row.fit_time_s:.1f} s" if timed else "–",
    ]


def _pooled_row(rows: Sequence[SessionRow]) -> SessionRow:
    """Sessions combined, each weighted by its unit count (skipping undefined values)."""
    weights = np.array([row.n_units for row in rows], dtype=np.float64)
    reliable = np.array([np.nan if row.n_reliable is None else row.n_reliable for row in rows], dtype=np.float64)

    def weighted(field: str, by: np.ndarray = weights) -> float:
        values = np.array([getattr(row, field) for row in rows], dtype=np.float64)
        use = np.isfinite(values) & np.isfinite(by) & (by > 0)
        return float(np.average(values[use], weights=by[use])) if use.any() else float("nan")

    times = [row.fit_time_s for row in rows if row.fit_time_s is not None and math.isfinite(row.fit_time_s)]
    return SessionRow(
        name="all (unit-weighted)",
        n_units=int(weights.sum()),
        mean_r=weighted("mean_r"),
        mean_r_over_rmax=weighted("mean_r_over_rmax"),
        mean_cc_norm=weighted("mean_cc_norm"),
        mean_r_linear=weighted("mean_r_linear"),
        frac_within_10pct_rmax=weighted("frac_within_10pct_rmax"),
        fit_time_s=float(sum(times)) if times else None,
        mean_r_over_oracle=weighted("mean_r_over_oracle"),
        n_reliable=None if np.isnan(reliable).any() else int(reliable.sum()),
        mean_r_over_rmax_reliable=weighted("mean_r_over_rmax_reliable", reliable),
        mean_r_over_oracle_reliable=weighted("mean_r_over_oracle_reliable", reliable),
    )


def summary_table(rows: Sequence[SessionRow]) -> str:
    """A plain-text table of per-session fit results, with a combined line for > 1 session.

    Columns: session, units, reliable units, mean r, mean r/rmax over all and over
    reliable units, (r/oracle likewise when some session is a simulated archive), mean
    CCnorm, mean r of the linear baseline, fraction of units with r >= 0.9 rmax, fit time
    (total on the combined line); then `RELIABLE_LEGEND`.
    """
    oracle = any(math.isfinite(row.mean_r_over_oracle) for row in rows)
    columns = _COLUMNS[:6] + (_ORACLE_COLUMNS if oracle else ()) + _COLUMNS[6:]
    body = [_cells(row, oracle) for row in rows]
    if len(rows) > 1:
        body.append(_cells(_pooled_row(rows), oracle))
    widths = [max(len(text) for text in column) for column in zip(columns, *body)]

    def line(texts: Sequence[str]) -> str:
        first = texts[0].ljust(widths[0])
        return "  ".join([first] + [text.rjust(width) for text, width in zip(texts[1:], widths[1:])])

    lines = [line(columns), "  ".join("-" * width for width in widths)]
    lines += [line(texts) for texts in body[: len(rows)]]
    if len(rows) > 1:
        lines += ["  ".join("-" * width for width in widths), line(body[-1])]
    if not rows:
        lines.append("(no sessions)")
    lines.append(RELIABLE_LEGEND)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Fig. 3 of Kindel et al. (2019)


def fig3(report: MetricsReport, cells: CellProperties, path: str | Path, *, title: str | None = None) -> Path:
    """Draw the paper's Fig. 3 layout to a PNG and return its path.

    A: histogram of r (rmax outlined); B: mean r, r_linear and rmax per orientation group;
    C: r vs circular variance; D: r vs image selectivity (linear baseline in grey when
    present).  Panels that need grating responses say so when there are none.
    """
    # Figure + Agg canvas directly: no pyplot global state, no GUI backend, thread-safe.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if cells.groups.shape != report.r.shape:
        raise ValueError(f"cells cover {cells.groups.shape[0]} units, the report {report.n_units}")
    path = Path(path)
    figure = Figure(figsize=(9, 7.5), layout="constrained")
    FigureCanvasAgg(figure)
    (ax_hist, ax_bars), (ax_cv, ax_sel) = figure.subplots(2, 2)
    r = report.r
    r_linear = report.r_linear if report.r_linear is not None and np.isfinite(report.r_linear).any() else None
    has_linear = r_linear is not None

    finite_r, finite_rmax = r[np.isfinite(r)], report.rmax[np.isfinite(report.rmax)]
    low = min(-0.2, float(finite_r.min()) if finite_r.size else 0.0)
    bins = np.linspace(low, 1.0, 25)
    ax_hist.hist(finite_r, bins=bins, color="tab:blue", alpha=0.8, label="r (CNN)")
    ax_hist.hist(finite_rmax, bins=bins, histtype="step", color="black", label="rmax")
    if finite_r.size:
        mean_r = finite_r.mean()
        ax_hist.axvline(mean_r, color="tab:blue", linestyle="--", label=f"mean r {mean_r:.2f}")
    ax_hist.set(xlabel="correlation on held-out images", ylabel="units", title="A  prediction accuracy")
    ax_hist.legend(fontsize=8)

    groups = _group_bars(ax_bars, report, cells, has_linear)
    ax_bars.set_title("B  by orientation tuning")

    for ax, x, label, letter in (
        (ax_cv, cells.circular_variance, "circular variance", "C"),
        (ax_sel, cells.image_selectivity, "image selectivity", "D"),
    ):
        shown = np.isfinite(x) & np.isfinite(r)
        if not shown.any():
            ax.text(0.5, 0.5, f"no {label} available", ha="center", va="center", transform=ax.transAxes)
        else:
            if r_linear is not None:
                ax.scatter(x[shown], r_linear[shown], s=12, color="0.6", label="r_linear")
            ax.scatter(x[shown], r[shown], s=14, color="tab:blue", label="r (CNN)")
            ax.legend(fontsize=8)
        ax.set(xlabel=label, ylabel="r", title=f"{letter}  r vs {label}", xlim=(-0.02, 1.02))
    if groups:
        for threshold in (cells.selective_below, cells.nonselective_above):
            ax_cv.axvline(threshold, color="0.4", linestyle=":", linewidth=1)
    if title:
        figure.suptitle(title)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=110)
    except OSError as error:
        reason = error.strerror or str(error)
        raise DataFileError(path, f"cannot write the figure ({reason}); choose a writable path") from None
    return path


def _group_bars(ax, report: MetricsReport, cells: CellProperties, has_linear: bool) -> list[str]:
    """Panel B; returns the orientation groups drawn (none without grating responses)."""
    summary = group_summary(cells.groups, report.r, report.r_linear, report.rmax)
    groups = [g for g in GROUP_ORDER if g in summary and g != UNDEFINED]
    if not groups:
        ax.text(0.5, 0.5, "no grating responses", ha="center", va="center", transform=ax.transAxes)
        return groups
    series = [("mean_r", "r (CNN)", "tab:blue")]
    if has_linear:
        series.append(("mean_r_linear", "r_linear", "0.6"))
    series.append(("mean_rmax", "rmax", "black"))
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    for k, (key, label, color) in enumerate(series):
        heights = [summary[g][key] for g in groups]
        errors = [summary[g]["sem_r"] for g in groups] if key == "mean_r" else None
        outlined = key == "mean_rmax"  # the ceiling, drawn as an empty box
        ax.bar(
            x + (k - (len(series) - 1) / 2) * width,
            heights,
            width,
            yerr=errors,
            color="white" if outlined else color,
            edgecolor=color,
            label=label,
        )
    ax.set_xticks(x, [f"{g}\n(n={summary[g]['n']})" for g in groups])
    ax.set_ylabel("mean correlation")
    low, high = ax.get_ylim()
    ax.set_ylim(min(low, 0.0), max(high, 1.0) * 1.2)  # room for the legend above the bars
    ax.legend(fontsize=8, loc="upper center", ncols=len(series))
    return groups
