"""closedloop: close the loop between a visual-neuroscience rig and a deep network."""

__version__ = "0.1.0"
