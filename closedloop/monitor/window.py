"""The monitor window: nine pyqtgraph panels and a status line, redrawn from the state at ~10 Hz.

The window never receives anything itself: a `QTimer` takes a `MonitorView` (a copy made
under the state's lock) and hands it to each panel.  Units are picked by typing an id,
by clicking a point of the population scatter or a bar of the held-out r panel.
"""

from __future__ import annotations

import time

import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtWidgets

from closedloop.monitor.panels.common import Panel, plain_axes
from closedloop.monitor.panels.loop import ImagePanel, ModelPanel, SynthesisPanel
from closedloop.monitor.panels.rates import CorrelationPanel, PopulationPanel, TrialsPanel, UnitScatterPanel
from closedloop.monitor.panels.spikes import PsthPanel, RasterPanel
from closedloop.monitor.state import MonitorState, MonitorView

REFRESH_MS = 100


class MonitorWindow(QtWidgets.QWidget):
    """Live view of a `MonitorState`.

    Parameters
    ----------
    state
        What to draw.
    title
        Window title (e.g. the endpoints or the session file).
    refresh_ms
        Redraw interval.
    """

    def __init__(self, state: MonitorState, *, title: str = "closedloop monitor", refresh_ms: int = REFRESH_MS):
        super().__init__()
        self.state = state
        self.redraws = 0
        self.setWindowTitle(title)
        pg.setConfigOptions(antialias=True, background="w", foreground="k")
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(self._unit_bar())
        self.graphics = pg.GraphicsLayoutWidget()
        layout.addWidget(self.graphics, stretch=1)
        self.status = QtWidgets.QLabel()
        self.status.setFont(QtWidgets.QApplication.font())
        self.status.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        # a long status line wraps instead of widening the window past the screen (or --screenshot's size)
        self.status.setWordWrap(True)
        self.status.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        layout.addWidget(self.status)
        g = self.graphics
        self.unit_scatter = UnitScatterPanel(plain_axes(g.addPlot(0, 0)))
        self.population = PopulationPanel(plain_axes(g.addPlot(0, 1)), self.pick_unit)
        self.correlation = CorrelationPanel(plain_axes(g.addPlot(0, 2)))
        self.trials = TrialsPanel(plain_axes(g.addPlot(1, 0)))
        self.raster = RasterPanel(plain_axes(g.addPlot(1, 1)))
        self.psth = PsthPanel(plain_axes(g.addPlot(1, 2)))
        self.image = ImagePanel(plain_axes(g.addPlot(2, 0)))
        self.model = ModelPanel(plain_axes(g.addPlot(2, 1)), self.pick_unit)
        self.synthesis = SynthesisPanel(plain_axes(g.addPlot(2, 2)))
        self.panels: list[Panel] = [
            self.unit_scatter,
            self.population,
            self.correlation,
            self.trials,
            self.raster,
            self.psth,
            self.image,
            self.model,
            self.synthesis,
        ]
        self._drawn: dict[int, tuple] = {}
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(refresh_ms)
        self.refresh(force=True)

    def _unit_bar(self) -> QtWidgets.QHBoxLayout:
        bar = QtWidgets.QHBoxLayout()
        bar.addWidget(QtWidgets.QLabel("unit id:"))
        self.unit_entry = QtWidgets.QLineEdit()
        self.unit_entry.setMaximumWidth(90)
        self.unit_entry.setPlaceholderText("e.g. 12")
        self.unit_entry.returnPressed.connect(self._typed_unit)
        bar.addWidget(self.unit_entry)
        self.unit_hint = QtWidgets.QLabel("type an id and press Enter, or click a point or a bar")
        self.unit_hint.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        bar.addWidget(self.unit_hint, stretch=1)
        return bar

    def _typed_unit(self) -> None:
        text = self.unit_entry.text().strip()
        try:
            unit = int(text)
        except ValueError:
            self.unit_hint.setText(f"{text!r} is not a unit id (a whole number)")
            return
        self.pick_unit(unit)

    def pick_unit(self, unit: int) -> None:
        """Show ``unit`` in the per-unit panels."""
        self.state.choose_unit(unit)
        self.unit_entry.setText(str(unit))
        known = self.state.has_unit(unit)
        self.unit_hint.setText(f"showing unit {unit}" + ("" if known else " (no data for it yet)"))
        self.refresh()

    def refresh(self, force: bool = False) -> MonitorView:
        """Redraw the panels whose data changed (all with ``force``); returns the view."""
        view = self.state.view()
        for panel in self.panels:
            key = tuple(view.revisions.get(area, 0) for area in panel.depends)
            if force or self._drawn.get(id(panel)) != key:
                panel.update(view)
                self._drawn[id(panel)] = key
        self.status.setText(status_text(view))
        if view.unit is not None and not self.unit_entry.hasFocus() and self.unit_entry.text() != str(view.unit):
            self.unit_entry.setText(str(view.unit))  # e.g. --unit, or the first unit seen
        self.redraws += 1
        return view

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        self.timer.stop()
        super().closeEvent(event)


def status_text(view: MonitorView, now: float | None = None) -> str:
    """The status lines under the panels: streams, dropped frames, errors, buffer use."""
    now = time.monotonic() if now is None else now
    lines = [" · ".join(health.line(now) for health in view.health.values()) or "no sources"]
    c = view.counts
    extra = [
        f"dropped frames: {view.dropped_frames} total, {view.dropped_last_block} this block",
        f"trials: {c.get('trials', 0)}",
        f"units: {c.get('units', 0)}",
        f"stimuli kept: {c.get('stimuli_kept', 0)} (+{c.get('stimuli_dropped', 0)} older dropped)",
    ]
    extra += [f"{k}: {v}" for k, v in c.items() if k.startswith("unusable")]
    lines.append(" · ".join(extra))
    if view.last_error:
        lines.append(f"last error: {view.last_error}")
    return "\n".join(lines)
