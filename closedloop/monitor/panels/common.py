"""What the panels share: colours, the identity line, NaN-safe ranges."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pyqtgraph as pg

from closedloop.monitor.state import MonitorView

MEASURED = (60, 140, 230)
PREDICTED = (240, 140, 40)
CHOSEN = (230, 60, 60)
MUTED = (150, 150, 150)


def fmt(value: float, digits: int = 2) -> str:
    """A number for a title, "–" when undefined."""
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


class Panel(Protocol):
    """What the window asks of a panel: the view areas it shows, and a redraw from a view."""

    @property
    def depends(self) -> tuple[str, ...]: ...

    def update(self, view: MonitorView) -> None: ...


class IdentityLine:
    """A dashed y = x line that spans the data drawn in a plot."""

    def __init__(self, plot: pg.PlotItem):
        self.item = plot.plot([], [], pen=pg.mkPen(MUTED, style=pg.QtCore.Qt.PenStyle.DashLine))

    def span(self, *arrays: np.ndarray) -> None:
        values = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays] + [np.zeros(1)])
        values = values[np.isfinite(values)]
        top = float(values.max()) if values.size else 1.0
        self.item.setData([0.0, max(top, 1.0)], [0.0, max(top, 1.0)])


def finite_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points where both coordinates are finite (pyqtgraph scatters dislike NaN)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    both = np.isfinite(x) & np.isfinite(y)
    return x[both], y[both]


def plain_axes(plot: pg.PlotItem) -> pg.PlotItem:
    """Axes without SI-prefix rescaling (labels already say Hz, s or r)."""
    for name in ("left", "bottom"):
        plot.getAxis(name).enableAutoSIPrefix(False)
    return plot


def titled(plot: pg.PlotItem, text: str) -> None:
    """Set a plot's title (small, so many panels fit)."""
    plot.setTitle(text, size="9pt")
