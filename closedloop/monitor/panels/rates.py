"""Predicted vs measured rates: the chosen unit, the population, their running correlation, per trial."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg

from closedloop.monitor.panels.common import CHOSEN, MEASURED, PREDICTED, IdentityLine, finite_xy, fmt, titled
from closedloop.monitor.state import MonitorView


class UnitScatterPanel:
    """The chosen unit: predicted vs measured mean rate, one point per stimulus."""

    #: areas of the view (state.AREAS) this panel draws
    depends = ("rates", "unit")

    def __init__(self, plot: pg.PlotItem):
        self.plot = plot
        plot.setLabels(bottom="measured (Hz)", left="predicted (Hz)")
        self.identity = IdentityLine(plot)
        self.points = pg.ScatterPlotItem(size=6, pen=None, brush=pg.mkBrush(*CHOSEN, 170))
        plot.addItem(self.points)

    def update(self, view: MonitorView) -> None:
        p = view.unit_points
        self.points.setData(p["measured"], p["predicted"])
        self.identity.span(p["measured"], p["predicted"])
        titled(
            self.plot,
            f"unit {view.unit if view.unit is not None else '–'}: r = {fmt(view.unit_r)} "
            f"({p['measured'].size} stimuli)",
        )


class PopulationPanel:
    """Every unit's (stimulus, unit) pairs; clicking a point picks its unit."""

    #: areas of the view (state.AREAS) this panel draws
    depends = ("rates",)

    def __init__(self, plot: pg.PlotItem, pick: Callable[[int], None]):
        self.plot = plot
        self.pick = pick
        plot.setLabels(bottom="measured (Hz)", left="predicted (Hz)")
        self.identity = IdentityLine(plot)
        self.points = pg.ScatterPlotItem(size=4, pen=None, brush=pg.mkBrush(*MEASURED, 60))
        self.points.sigClicked.connect(self._clicked)
        plot.addItem(self.points)
        self._unit_of_point = np.zeros(0, dtype=np.int64)

    def _clicked(self, _item, points, _event=None) -> None:
        # per-point `data` would make setData ~10x slower; the point index is enough
        if len(points) and points[0].index() < self._unit_of_point.size:
            self.pick(int(self._unit_of_point[points[0].index()]))

    def update(self, view: MonitorView) -> None:
        p = view.population_points
        self._unit_of_point = p["unit_id"]
        self.points.setData(p["measured"], p["predicted"])
        self.identity.span(p["measured"], p["predicted"])
        titled(
            self.plot,
            f"population: r = {fmt(view.population_r)} pooled, median unit r = "
            f"{fmt(view.median_unit_r)} ({view.n_pairs} pairs)",
        )


class CorrelationPanel:
    """Running correlation as trials come in: pooled and median over units."""

    #: areas of the view (state.AREAS) this panel draws
    depends = ("rates",)

    def __init__(self, plot: pg.PlotItem):
        self.plot = plot
        plot.setLabels(bottom="trials", left="r")
        plot.addLegend(offset=(-5, -5), labelTextSize="8pt")
        self.pooled = plot.plot([], [], pen=pg.mkPen(MEASURED, width=2), name="pooled")
        self.median = plot.plot([], [], pen=pg.mkPen(PREDICTED, width=2), name="median unit")
        plot.setYRange(-0.1, 1.0)

    def update(self, view: MonitorView) -> None:
        h = view.correlation_history
        self.pooled.setData(h["trials"], h["pooled"], connect="finite")
        self.median.setData(h["trials"], h["median"], connect="finite")
        titled(self.plot, f"running correlation (newest: {fmt(h['pooled'][-1] if h.size else np.nan)})")


class TrialsPanel:
    """The chosen unit's measured rate on each trial and the prediction for that trial's stimulus."""

    #: areas of the view (state.AREAS) this panel draws
    depends = ("rates", "unit")

    def __init__(self, plot: pg.PlotItem):
        self.plot = plot
        plot.setLabels(bottom="trial", left="rate (Hz)")
        plot.addLegend(offset=(-5, 5), labelTextSize="8pt")
        self.measured = pg.ScatterPlotItem(size=4, pen=None, brush=pg.mkBrush(*MEASURED, 150), name="measured")
        plot.addItem(self.measured)
        self.predicted = plot.plot([], [], pen=pg.mkPen(PREDICTED, width=1.5), name="predicted", connect="finite")

    def update(self, view: MonitorView) -> None:
        t = view.trials
        self.measured.setData(*finite_xy(t["trial"], t["measured"]))
        self.predicted.setData(t["trial"], t["predicted"], connect="finite")
        titled(self.plot, f"unit {view.unit if view.unit is not None else '–'} over trials ({t['trial'].size} shown)")
