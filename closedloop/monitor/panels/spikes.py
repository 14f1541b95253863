"""Raster and PSTH of the chosen unit, aligned to photodiode onsets."""

from __future__ import annotations

import pyqtgraph as pg

from closedloop.monitor.panels.common import CHOSEN, MEASURED, MUTED, titled
from closedloop.monitor.state import MonitorView


class RasterPanel:
    """One row per recent onset (newest at the top), one tick per spike."""

    #: areas of the view (state.AREAS) this panel draws
    depends = ("spikes", "unit")

    def __init__(self, plot: pg.PlotItem):
        self.plot = plot
        plot.setLabels(bottom="time from onset (s)", left="onset no. (since start)")
        plot.addItem(pg.InfiniteLine(0.0, angle=90, pen=pg.mkPen(MUTED)))
        self.ticks = pg.ScatterPlotItem(size=5, symbol="|", pen=pg.mkPen(CHOSEN), brush=None)
        plot.addItem(self.ticks)

    def update(self, view: MonitorView) -> None:
        s = view.spikes
        self.ticks.setData(s.raster_times, s.raster_rows)
        self.plot.setXRange(s.edges[0], s.edges[-1], padding=0)
        self.plot.getAxis("left").setTicks([row_ticks(s.row_onsets)])
        shown = f", onsets {s.row_onsets[0]}–{s.row_onsets[-1]}" if s.row_onsets.size else ""
        titled(self.plot, f"raster, unit {s.unit if s.unit is not None else '–'}{shown}")


def row_ticks(row_onsets, most: int = 8) -> list[tuple[int, str]]:
    """Left-axis ticks: the onset number of every k-th raster row (newest at the top)."""
    step = max(1, -(-len(row_onsets) // most))
    return [(row, str(int(row_onsets[row]))) for row in range(len(row_onsets) - 1, -1, -step)]


class PsthPanel:
    """Mean rate around onset over every complete trial kept."""

    #: areas of the view (state.AREAS) this panel draws
    depends = ("spikes", "unit")

    def __init__(self, plot: pg.PlotItem):
        self.plot = plot
        plot.setLabels(bottom="time from onset (s)", left="rate (Hz)")
        plot.addItem(pg.InfiniteLine(0.0, angle=90, pen=pg.mkPen(MUTED)))
        self.curve = plot.plot(
            [0.0, 1.0], [0.0], stepMode="center", fillLevel=0, brush=pg.mkBrush(*MEASURED, 120), pen=pg.mkPen(MEASURED)
        )

    def update(self, view: MonitorView) -> None:
        s = view.spikes
        self.curve.setData(s.edges, s.rate_hz, stepMode="center")
        titled(self.plot, f"PSTH, unit {s.unit if s.unit is not None else '–'} ({s.n_onsets} onsets)")
