"""The window, offscreen (pytest-qt): what each panel plots, picking units, repaints, screenshot."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyqtgraph")

from pyqtgraph.Qt import QtCore, QtGui  # noqa: E402

from closedloop.monitor.screenshot import save_screenshot  # noqa: E402
from closedloop.monitor.state import MonitorState  # noqa: E402
from closedloop.monitor.window import MonitorWindow  # noqa: E402


@pytest.fixture
def window(qtbot, synthetic_messages):
    state = MonitorState(unit=4)
    for stream, message in synthetic_messages:
        state.ingest(stream, message)
    window = MonitorWindow(state, refresh_ms=50)
    qtbot.addWidget(window)
    window.resize(1200, 800)
    window.show()
    return window


def scatter_xy(item) -> tuple[np.ndarray, np.ndarray]:
    x, y = item.getData()
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def test_panels_plot_the_state(window):
    view = window.refresh(force=True)
    x, y = scatter_xy(window.unit_scatter.points)
    np.testing.assert_allclose(x, view.unit_points["measured"])
    np.testing.assert_allclose(y, view.unit_points["predicted"])
    assert x.size > 10 and "unit 4: r = " in window.unit_scatter.plot.titleLabel.text
    x, y = scatter_xy(window.population.points)
    assert x.size == view.population_points["measured"].size == view.n_pairs
    edges, rate = window.psth.curve.getData()
    np.testing.assert_allclose(edges, view.spikes.edges)
    np.testing.assert_allclose(rate, view.spikes.counts / (view.spikes.n_onsets * 0.01))
    assert view.spikes.counts.sum() > 0
    np.testing.assert_allclose(window.raster.ticks.getData()[0], view.spikes.raster_times)
    np.testing.assert_allclose(window.image.image.image, view.image)
    np.testing.assert_allclose(window.model.bars.opts["height"], np.nan_to_num(view.heldout_r))
    assert f"model v{view.model_version}" in window.model.plot.titleLabel.text
    s = view.synthesized
    x, y = scatter_xy(window.synthesis.measured)
    np.testing.assert_allclose(np.sort(y), np.sort(s["measured_hz"][np.isfinite(s["measured_hz"])]))
    assert "loop iteration 1" in window.synthesis.plot.titleLabel.text
    # every image of the newest iteration was shown and its model recorded an interval factor:
    # each prediction has its 95 % interval bar
    newest = s["iteration"] == s["iteration"].max()
    bars = window.synthesis.interval.opts
    assert bars["x"].size == newest.sum() > 0
    half = s["interval_sds"] * np.hypot(s["spread_hz"], s["measured_se_hz"])
    np.testing.assert_allclose(np.sort(bars["height"]), np.sort(2 * half[newest]))
    assert f"bars ± {s['interval_sds'][newest].max():.1f}·√(sd²+se²)" in window.synthesis.plot.titleLabel.text
    assert "presenter:" in window.status.text() and "dropped frames:" in window.status.text()


def test_units_are_picked_by_typing_or_clicking(window, qtbot):
    assert window.unit_entry.text() == "4"  # the unit shown first
    window.unit_entry.clear()
    qtbot.keyClicks(window.unit_entry, "7")
    qtbot.keyClick(window.unit_entry, QtCore.Qt.Key.Key_Return)
    assert window.state.unit == 7 and "unit 7:" in window.unit_scatter.plot.titleLabel.text
    window.unit_entry.setText("seven")
    qtbot.keyClick(window.unit_entry, QtCore.Qt.Key.Key_Return)
    assert window.state.unit == 7 and "not a unit id" in window.unit_hint.text()
    view = window.refresh(force=True)
    spots = window.population.points.points()
    window.population._clicked(window.population.points, [spots[-1]])
    assert window.state.unit == view.population_points["unit_id"][-1]
    # a click on the third bar of the held-out r panel picks the third unit
    box = window.model.plot.vb
    scene_pos = box.mapViewToScene(QtCore.QPointF(2.0, 0.1))
    window.model._clicked(type("Click", (), {"scenePos": lambda self: scene_pos})())
    assert window.state.unit == view.unit_ids[2]
    window.pick_unit(999)
    assert "no data for it yet" in window.unit_hint.text()


def test_hundreds_of_repaints_while_data_arrives(qtbot, synthetic_messages):
    state = MonitorState()
    window = MonitorWindow(state, refresh_ms=10_000)
    qtbot.addWidget(window)
    window.show()
    for stream, message in synthetic_messages * 2:  # PySide6 6.12 crashed pyqtgraph after ~100 repaints
        state.ingest(stream, message)
        window.refresh()
        window.graphics.repaint()
    assert window.redraws > 500
    assert window.refresh().counts["trials"] == 120


def test_screenshot_is_written_and_not_blank(window, tmp_path):
    path = save_screenshot(window, tmp_path / "shot.png", size=(900, 600))
    image = QtGui.QImage(str(path))
    assert (image.width(), image.height()) == (900, 600)
    colours = {image.pixel(x, y) for x in range(0, 900, 7) for y in range(0, 600, 7)}
    assert len(colours) > 20  # panels, points, text and the stimulus, not one flat colour


def test_synthesis_panel_bars_are_the_95_percent_interval_and_absent_without_a_spread(qtbot, rng):
    import pyqtgraph as pg

    from closedloop.messages import types as msg
    from closedloop.monitor.panels.loop import SynthesisPanel

    widget = pg.GraphicsLayoutWidget()
    qtbot.addWidget(widget)
    panel = SynthesisPanel(widget.addPlot())
    state = MonitorState()
    state.ingest("model_events", msg.ModelUpdated(version=1, metrics={"heldout_interval_sds": 2.5}))

    def result(spread, iteration, first_id):
        images = rng.uniform(0, 1, (3, 8, 8))
        ids = np.arange(first_id, first_id + 3)
        state.ingest("responses", msg.BlockStatus(block=0, kind="synthesize", state="finished", iteration=iteration))
        state.ingest(
            "model_events",
            msg.SynthesizeResult(
                unit_ids=np.array([7, 7, 3]),
                targets=np.array([5.0, 10.0, np.nan]),  # NaN: "max", drawn at its prediction
                images=images,
                achieved=np.array([6.0, 9.0, 30.0]),
                model_version=1,
                spread=spread,
            ),
        )
        state.ingest(
            "responses",
            msg.BlockRequest(block=1, kind="present_synthesized", stimulus_ids=ids, image_ids=ids, pixels=images),
        )
        rates = np.array([[4.0, 0.0], [6.0, 0.0], [12.0, 0.0], [0.0, 27.0], [0.0, 35.0]])  # 2, 1 and 2 trials
        state.ingest(
            "responses",
            msg.Responses(
                block=1,
                trial_ids=np.arange(5) + 10 * iteration,
                stimulus_ids=ids[[0, 0, 1, 2, 2]],
                rates=rates,
                unit_ids=np.array([7, 3]),
            ),
        )
        panel.update(state.view())
        return panel.interval.opts

    bars = result(np.array([1.5, np.nan, 4.0]), 1, 0)  # no bar for the image without a spread
    np.testing.assert_allclose(bars["x"], [5.0, 30.0])
    np.testing.assert_allclose(bars["y"], [6.0, 30.0])
    # ± 2.5 √(sd² + se²), se of two trials 4 and 6 Hz: 1; of 27 and 35 Hz: 4
    np.testing.assert_allclose(bars["height"], 2 * 2.5 * np.hypot([1.5, 4.0], [1.0, 4.0]))
    assert "promised, 95 % interval" in [label.text for _, label in panel.plot.legend.items]
    assert "bars ± 2.5·√(sd²+se²)" in panel.plot.titleLabel.text
    items = len(panel.plot.items)
    bars = result(None, 2, 3)  # the next iteration, from a server that sends no spread: the bars go
    assert bars["x"].size == bars["height"].size == 0 and len(panel.plot.items) == items
