"""A replay's outputs: the per-block table, the online-vs-offline lines, JSON and a figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from closedloop.errors import DataFileError
from closedloop.replay.pipeline import ReplayOutcome
from closedloop.replay.rows import BlockRow

REPLAY_FORMAT = "closedloop-replay"


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def block_table(rows: list[BlockRow]) -> str:
    """One line per block: data so far and the online model after it."""
    header = [
        "block",
        "source",
        "trials",
        "fit trials",
        "images",
        "model",
        "r mean",
        "r median",
        "r/rmax",
        "refit s",
        "warm",
        "state",
    ]
    lines = []
    for row in rows:
        fitted = row.state == "fitted"
        lines.append(
            [
                str(row.block),
                row.label,
                str(row.n_trials),
                str(row.trials_so_far),
                str(row.images_so_far),
                f"v{row.version}" if row.version else "-",
                _number(row.metric("r_mean")) if fitted else "-",
                _number(row.metric("r_median")) if fitted else "-",
                _number(row.metric("r_over_rmax_mean")) if fitted else "-",
                _number(row.metric("refit_seconds"), 1) if fitted else "-",
                ("yes" if row.metrics.get("warm_start") else "no") if fitted else "-",
                row.state,
            ]
        )
    widths = [
        max(len(header[k]), *(len(line[k]) for line in lines)) if lines else len(header[k]) for k in range(len(header))
    ]

    def line(cells: list[str]) -> str:
        text = "  ".join(c.ljust(w) if k in (1, 11) else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))
        return text.rstrip()

    return "\n".join([line(header)] + [line(cells) for cells in lines])


def final_lines(outcome: ReplayOutcome) -> list[str]:
    """The end: online final vs offline, and whether both saw identical inputs."""
    lines = []
    c = outcome.comparison
    if c is not None:
        lines.append(
            f"final online model v{outcome.final_version} vs offline batch fit of the same data "
            f"({c.n_heldout} held-out images, the server's split; seed {c.seed}):"
        )
        lines.append(f"  {'':<24}{'online':>9}{'offline':>9}")
        for name, attribute in (
            ("r mean", "r_mean"),
            ("r median", "r_median"),
            ("r/rmax (reliable units)", "r_over_rmax_mean"),
            ("CCnorm mean", "cc_norm_mean"),
        ):
            lines.append(
                f"  {name:<24}{_number(getattr(c.online, attribute)):>9}{_number(getattr(c.offline, attribute)):>9}"
            )
        lines.append(
            f"  per-unit held-out r, online vs offline: correlation {_number(c.unit_r_correlation)} over "
            f"{c.n_common_units} units; offline fit {c.offline_fit_seconds:.1f} s ({c.offline_epochs} epochs)"
        )
    elif outcome.final_version:
        metrics = outcome.models[outcome.final_version].metrics
        lines.append(
            f"final online model v{outcome.final_version}: held-out r mean {_number(metrics.get('r_mean'))}, "
            f"r/rmax {_number(metrics.get('r_over_rmax_mean'))} (no offline comparison)"
        )
    if outcome.inputs is not None:
        lines.append(outcome.inputs.text())
    return lines


def summary_dict(outcome: ReplayOutcome, *, protocol: str | None, rig: str | None, options: dict) -> dict:
    """Everything printed, as JSON-ready data (NaN is made null by the writer)."""
    server = outcome.server
    final = outcome.models.get(outcome.final_version)
    return {
        "format": REPLAY_FORMAT,
        "archive": str(outcome.plan.path),
        "layout": outcome.plan.layout,
        "protocol": protocol,
        "rig": rig,
        "options": options,
        "units": outcome.plan.unit_ids.tolist(),
        "server": {
            "seed": server.seed,
            "device": server.device,
            "model": server.model.to_dict(),
            "preprocessing": server.preprocessing.to_dict(),
            "stimulus_size_px": server.stimulus_size_px,
            "holdout_fraction": server.holdout_fraction,
            "stop_fraction": server.stop_fraction,
        },
        "online_seconds": outcome.online_seconds,
        "blocks": [row.to_dict() for row in outcome.rows],
        "final": None if final is None else {"version": final.version, "metrics": dict(final.metrics)},
        "comparison": None if outcome.comparison is None else outcome.comparison.to_dict(),
        "inputs": None if outcome.inputs is None else {**vars(outcome.inputs), "ok": outcome.inputs.ok},
        "notes": list(outcome.notes),
    }


def replay_figure(outcome: ReplayOutcome, path: str | Path) -> Path:
    """Online held-out r after each block with the offline level as a line; per-unit r online vs offline."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    figure = Figure(figsize=(10, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    ax_blocks, ax_units = figure.subplots(1, 2, width_ratios=(1.6, 1))
    fitted = [row for row in outcome.rows if row.state == "fitted"]
    x = [row.trials_so_far for row in fitted]
    ax_blocks.plot(x, [row.metric("r_mean") for row in fitted], "o-", color="tab:blue", label="online r mean")
    ax_blocks.plot(
        x, [row.metric("r_median") for row in fitted], "s--", color="tab:blue", alpha=0.5, label="online r median"
    )
    c = outcome.comparison
    if c is not None:
        ax_blocks.axhline(
            c.offline.r_mean, color="black", linestyle=":", label=f"offline batch fit, r mean {c.offline.r_mean:.2f}"
        )
    ax_blocks.set(xlabel="fitting trials so far", ylabel="held-out r", title="online fit after each block")
    ax_blocks.legend(fontsize=8)
    if c is not None:
        common, a, b = np.intersect1d(c.online.unit_ids, c.offline.unit_ids, return_indices=True)
        ax_units.scatter(c.offline.r[b], c.online.r[a], s=14, color="tab:blue")
        ax_units.plot([-1, 1], [-1, 1], color="0.6", linewidth=1)
        finite = np.concatenate([c.online.r[a], c.offline.r[b]])
        finite = finite[np.isfinite(finite)]
        low = min(-0.1, float(finite.min()) - 0.05) if finite.size else -0.1
        ax_units.set(
            xlim=(low, 1),
            ylim=(low, 1),
            xlabel="offline r",
            ylabel=f"online r (v{outcome.final_version})",
            title=f"per unit, {c.n_heldout} held-out images",
        )
    else:
        ax_units.text(0.5, 0.5, "no offline comparison", ha="center", va="center", transform=ax_units.transAxes)
    figure.suptitle(f"replay of {outcome.plan.path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=110)
    except OSError as error:
        raise DataFileError(
            path, f"cannot write the figure ({error.strerror or error}); choose a writable folder"
        ) from None
    return path
