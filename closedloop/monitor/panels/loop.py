"""The image on screen, the model (version, held-out r per unit) and targets vs achieved."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg

from closedloop.monitor.panels.common import CHOSEN, MEASURED, MUTED, PREDICTED, IdentityLine, finite_xy, fmt, titled
from closedloop.monitor.state import MonitorView


class ImagePanel:
    """The stimulus on screen now (from the pixels cached by stimulus id)."""

    #: areas of the view (state.AREAS) this panel draws
    depends = ("now",)

    def __init__(self, plot: pg.PlotItem):
        self.plot = plot
        plot.hideAxis("left")
        plot.hideAxis("bottom")
        plot.setAspectLocked(True)
        plot.invertY(True)
        self.image = pg.ImageItem(axisOrder="row-major")
        plot.addItem(self.image)

    def update(self, view: MonitorView) -> None:
        now = view.now
        if view.image is not None:
            self.image.setImage(view.image, levels=(0.0, 1.0), autoLevels=False)
        if now is None:
            titled(self.plot, "on screen: nothing yet")
        else:
            shown = "" if view.image is not None else " (pixels not received)"
            titled(self.plot, f"on screen: stimulus {now.stimulus_id}, trial {now.trial}, block {now.block}{shown}")


class ModelPanel:
    """Held-out r of every unit from the newest model; clicking a bar picks the unit."""

    #: areas of the view (state.AREAS) this panel draws
    depends = ("model", "rates", "unit")

    def __init__(self, plot: pg.PlotItem, pick: Callable[[int], None]):
        self.plot = plot
        self.pick = pick
        plot.setLabels(bottom="unit id", left="held-out r")
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.8, brush=pg.mkBrush(*MEASURED, 160), pen=None)
        self.chosen = pg.BarGraphItem(x=[], height=[], width=0.8, brush=pg.mkBrush(*CHOSEN), pen=None)
        self.online = pg.ScatterPlotItem(size=4, pen=None, brush=pg.mkBrush(*PREDICTED, 200))
        for item in (self.bars, self.chosen, self.online):
            plot.addItem(item)
        self._unit_ids = np.zeros(0, dtype=np.int64)
        plot.scene().sigMouseClicked.connect(self._clicked)

    def _clicked(self, event) -> None:
        box = self.plot.vb
        if not box.sceneBoundingRect().contains(event.scenePos()):
            return
        column = int(round(box.mapSceneToView(event.scenePos()).x()))
        if 0 <= column < self._unit_ids.size:
            self.pick(int(self._unit_ids[column]))

    def update(self, view: MonitorView) -> None:
        if not np.array_equal(self._unit_ids, view.unit_ids):
            self.plot.getAxis("bottom").setTicks([unit_ticks(view.unit_ids)])
        self._unit_ids = view.unit_ids
        x = np.arange(view.unit_ids.size)
        self.bars.setOpts(x=x, height=np.nan_to_num(view.heldout_r))
        chosen: np.ndarray | list[int] = np.flatnonzero(view.unit_ids == view.unit) if view.unit is not None else []
        self.chosen.setOpts(x=x[chosen], height=np.nan_to_num(view.heldout_r[chosen]))
        online = view.per_unit_r if view.per_unit_r.size == x.size else np.full(x.size, np.nan)
        self.online.setData(*finite_xy(x, online))
        m = view.model_metrics
        title = (
            f"model v{view.model_version}: held-out r mean {fmt(m.get('r_mean', np.nan))}, "
            f"median {fmt(m.get('r_median', np.nan))}"
            if view.model_version
            else "model: none yet"
        )
        titled(self.plot, title + " (bars; dots: online r)")


def unit_ticks(unit_ids: np.ndarray, most: int = 16) -> list[tuple[int, str]]:
    """Axis ticks naming the unit id of every k-th bar (at most ``most`` labels)."""
    step = max(1, int(np.ceil(unit_ids.size / most)))
    return [(int(i), str(int(unit_ids[i]))) for i in range(0, unit_ids.size, step)]


class SynthesisPanel:
    """Synthesized images: target vs measured response (filled) and vs the promised rate (open).

    The promise (the prediction, and for a "max" image the prediction times the loop report's
    ratio, `closedloop.monitor.synthesis.synthesized_promises`) carries a vertical bar, its 95 %
    interval for the measured mean (the loop report's ± 95 %,
    `closedloop.monitor.synthesis.synthesized_intervals`) once the image has been shown; images
    without a spread (an older server or session file) or whose model recorded no interval
    factor, with too few earlier images to set one, get none.
    """

    #: areas of the view (state.AREAS) this panel draws
    depends = ("synth", "rates")

    def __init__(self, plot: pg.PlotItem):
        self.plot = plot
        plot.setLabels(bottom="target (Hz)", left="response (Hz)")
        plot.addLegend(offset=(5, 5), labelTextSize="8pt")
        self.identity = IdentityLine(plot)
        # one item, given new arrays on each update: no items pile up while the loop runs
        self.interval = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), height=np.zeros(0), pen=pg.mkPen(*PREDICTED, 160))
        self.predicted = pg.ScatterPlotItem(size=7, pen=pg.mkPen(PREDICTED), brush=None, name="promised, 95 % interval")
        self.measured = pg.ScatterPlotItem(size=7, pen=None, brush=pg.mkBrush(*MEASURED, 200), name="measured")
        self.older = pg.ScatterPlotItem(size=5, pen=None, brush=pg.mkBrush(*MUTED, 120))
        for item in (self.older, self.interval, self.predicted, self.measured):
            plot.addItem(item)

    def update(self, view: MonitorView) -> None:
        s = view.synthesized
        # "maximise" targets (NaN) are drawn at their promised rate
        promised = s["promised_hz"]
        target = np.where(np.isfinite(s["target_hz"]), s["target_hz"], promised)
        newest = s["iteration"] == (s["iteration"].max() if s["iteration"].size else 0)
        self.predicted.setData(*finite_xy(target[newest], promised[newest]))
        x, y, half = target[newest], promised[newest], s["interval_hz"][newest]
        barred = np.isfinite(x) & np.isfinite(y) & np.isfinite(half)
        self.interval.setData(x=x[barred], y=y[barred], height=2 * half[barred])  # height spans y ± half
        self.measured.setData(*finite_xy(target[newest], s["measured_hz"][newest]))
        self.older.setData(*finite_xy(target[~newest], s["measured_hz"][~newest]))
        self.identity.span(target, s["measured_hz"], promised)
        measured = int(np.isfinite(s["measured_hz"][newest]).sum())
        status = view.block_status
        block = f", block {status.block} {status.kind} {status.state}" if status is not None else ""
        k = s["interval_sds"][newest]
        factor = f", bars ± {k[np.isfinite(k)].max():.1f}·√(sd²+se²)" if np.isfinite(k).any() else ""
        titled(
            self.plot,
            f"loop iteration {view.iteration}{block}: {int(newest.sum())} synthesized, {measured} measured{factor}",
        )
