"""pyqtgraph panels of the monitor window; each draws one part of a `MonitorView`."""
