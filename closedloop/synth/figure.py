"""A Fig. 4-style grid of synthesized images (Kindel et al. 2019): rows units, columns targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from closedloop.synth.library import StimulusLibrary


def library_figure(library: StimulusLibrary, path: str | Path, *, max_units: int = 40) -> Path:
    """Draw the library's images on a units × targets grid and save a PNG.

    Each cell is the first image of that (unit, target) at display resolution, titled
    with the target and the model's achieved rate (a ``*`` marks an image that did
    not reach its target's tolerance).  Rows beyond ``max_units`` are left out and
    the title says so.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    units = list(dict.fromkeys(int(u) for u in library.unit_id))
    labels = list(dict.fromkeys(str(t) for t in library.target_label))
    shown = units[:max_units]
    rows, cols = len(shown), len(labels)
    figure, axes = plt.subplots(rows, cols, figsize=(1.25 * cols + 0.8, 1.3 * rows + 0.6), squeeze=False)
    first: dict[tuple[int, str], int] = {}
    for index in range(len(library)):
        first.setdefault((int(library.unit_id[index]), str(library.target_label[index])), index)
    for r, unit in enumerate(shown):
        for c, label in enumerate(labels):
            axis = axes[r, c]
            axis.set_xticks([])
            axis.set_yticks([])
            found = first.get((unit, label))
            if found is None:
                axis.set_axis_off()
                continue
            index = found
            axis.imshow(library.images_display[index], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            target = library.target_hz[index]
            mark = "" if library.converged[index] or label == "max" else "*"
            wanted = "" if not np.isfinite(target) else f"{target:.1f}→"
            axis.set_title(f"{label}: {wanted}{library.achieved_hz[index]:.1f}{mark}", fontsize=7)
            if c == 0:
                axis.set_ylabel(f"unit {unit}", fontsize=8)
    dropped = len(units) - len(shown)
    note = f" (first {len(shown)} of {len(units)} units)" if dropped else ""
    figure.suptitle(f"synthesized images, predicted Hz{note}", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
