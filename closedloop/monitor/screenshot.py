"""Render the monitor window to a PNG (offscreen works: no display needed)."""

from __future__ import annotations

from pathlib import Path

from pyqtgraph.Qt import QtWidgets

from closedloop.errors import DataFileError

SIZE = (1500, 1000)


def save_screenshot(window: QtWidgets.QWidget, path: str | Path, size: tuple[int, int] = SIZE) -> Path:
    """Redraw ``window`` at ``size`` and save it as a PNG at ``path``.

    Raises
    ------
    DataFileError
        If the PNG cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    window.resize(*size)
    window.show()
    app = QtWidgets.QApplication.instance()
    for _ in range(3):  # layout, then a redraw at the final size
        app.processEvents()
        if hasattr(window, "refresh"):
            window.refresh(force=True)
    if not window.grab().save(str(path), "PNG"):
        raise DataFileError(path, "could not write the screenshot (check the folder exists and is writable)")
    return path
