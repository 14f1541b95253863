"""Simulated archived recordings: a session file or a pvc-8 file with known ground truth.

`make_archive` runs a seeded `SimulatedV1` through a natural-image and grating
experiment and writes it in one of two layouts:

``session``
    A closedloop session HDF5 file, as the runner writes it during a real session:
    one block per pass over the natural images (each image once per block, in seeded
    random order), then one block of pvc-8's 64 orientation gratings per repeat;
    continuous spike times, photodiode edges, trials with onsets on the acquisition
    clock and per-trial responses in the 50–100 ms window.
``pvc8``
    A MATLAB v5 file with the real pvc-8 variables (`closedloop.data.pvc8`): each
    natural image small (the population's aperture) and large (the whole canvas),
    interleaved small/large, then the 416 gratings; 1 ms binned counts during the
    stimulus (106 bins) and the blank after it (211 bins).

The population is rebuilt exactly from the recorded scenario, unit count and seed
(`population_for`), so tests and benchmarks can compare what fitting and synthesis
recover with the truth.  The natural images come from the seed too, or from
``ArchiveSpec.image_seed`` when given, so that several sessions can show one image set
to different populations, as pvc-8's sessions do.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from closedloop.config.yaml_loader import safe_load_bounded
from closedloop.data.formats import detect_format
from closedloop.data.session import SessionReader
from closedloop.errors import ClosedLoopError, DataFileError
from closedloop.paths import shipped_file
from closedloop.sim import archive_layouts
from closedloop.sim.archive_spec import DEFAULT_SCENARIO, RESPONSE_WINDOW_S, ArchiveSpec, Progress
from closedloop.sim.population import SimulatedV1
from closedloop.sim.scenario import load_scenario


@dataclass(frozen=True)
class ArchiveSummary:
    """What was written, for the terminal and for JSON."""

    path: str
    layout: str
    seed: int
    image_seed: int | None
    n_units: int
    unit_types: dict[str, int]
    n_stimuli: int
    n_trials: int
    n_repeats: int
    n_spikes: int
    file_mb: float
    seconds: float
    spontaneous_hz: float
    median_peak_hz: float
    median_fano: float

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        types = ", ".join(f"{n} {t}" for t, n in self.unit_types.items() if n)
        images = "" if self.image_seed is None else f" (natural images from image seed {self.image_seed})"
        return "\n".join(
            [
                f"wrote {self.path} ({self.layout} layout, {self.file_mb:.1f} MB) in {self.seconds:.1f} s",
                f"  population: {self.n_units} units (seed {self.seed}): {types}",
                f"  stimuli: {self.n_stimuli}{images}, trials: {self.n_trials} ({self.n_repeats} repeats), "
                f"spikes: {self.n_spikes:,}",
                f"  rates: spontaneous {self.spontaneous_hz:.1f} Hz (mean), best natural image "
                f"{self.median_peak_hz:.1f} Hz (median over units); window Fano factor {self.median_fano:.2f} (median)",
            ]
        )


def population_for(spec: ArchiveSpec) -> SimulatedV1:
    """The ground-truth population an archive with this spec was (or will be) made from."""
    scenario = shipped_file(spec.scenario if spec.scenario is not None else DEFAULT_SCENARIO)
    if not Path(scenario).exists():
        raise ClosedLoopError(
            f"scenario file {scenario} not found; pass --scenario PATH or run from the closedloop "
            "checkout, where sim/default.yaml lives"
        )
    return SimulatedV1(load_scenario(scenario), n_units=spec.n_units, seed=spec.seed)


def make_archive(
    path: str | Path, spec: ArchiveSpec, *, overwrite: bool = False, progress: Progress | None = None
) -> ArchiveSummary:
    """Simulate a recording and write it; returns a summary of what was written.

    ``progress(stage, done, total)`` is called as the work advances (a command's bar or log).

    Raises
    ------
    DataFileError
        If ``path`` exists and ``overwrite`` is false, or cannot be written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise DataFileError(path, "already exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    progress = progress or _no_progress
    progress("building the simulated population", 0, 1)
    population = population_for(spec)
    progress("building the simulated population", 1, 1)
    write = archive_layouts.write_session if spec.layout == "session" else archive_layouts.write_pvc8
    # write to a temporary name so an interrupted run never leaves a file that looks complete
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        stats = write(partial, population, spec, recipe_yaml(spec, population), progress)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return ArchiveSummary(
        path=str(path),
        layout=spec.layout,
        seed=population.seed,
        image_seed=spec.image_seed,
        n_units=population.n_units,
        unit_types=population.type_counts(),
        n_stimuli=stats["n_stimuli"],
        n_trials=stats["n_trials"],
        n_repeats=spec.n_repeats,
        n_spikes=stats["n_spikes"],
        file_mb=path.stat().st_size / 1e6,
        seconds=time.perf_counter() - started,
        spontaneous_hz=float(np.mean(population.spontaneous_hz)),
        median_peak_hz=float(np.median(stats["peak_hz"])),
        median_fano=float(stats["median_fano"]),
    )


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def recipe_yaml(spec: ArchiveSpec, population: SimulatedV1) -> str:
    """The recipe stored in the file, enough to rebuild the ground truth."""
    stimulus_s, blank_s = spec.durations_s
    recipe = {
        "simulated_archive": {
            "layout": spec.layout,
            "seed": population.seed,
            "n_units": population.n_units,
            "n_images": spec.n_images,
            "n_repeats": spec.n_repeats,
            "scenario": str(spec.scenario if spec.scenario is not None else DEFAULT_SCENARIO),
            "stimulus_s": stimulus_s,
            "blank_s": blank_s,
            "response_window_s": list(RESPONSE_WINDOW_S),
        }
    }
    # only when given: a recipe without it (every archive made before it existed) means "from seed"
    if spec.image_seed is not None:
        recipe["simulated_archive"]["image_seed"] = spec.image_seed
    return yaml.safe_dump(recipe, sort_keys=False)


def spec_from_archive(path: str | Path) -> ArchiveSpec:
    """The `ArchiveSpec` a simulated archive was made with, read from its stored recipe.

    Together with `population_for` this rebuilds the exact ground-truth population of a
    file written by `make_archive`, in either layout.

    Raises
    ------
    DataFileError
        If the file is not a simulated archive (no recipe) or the recipe is unreadable.
    """
    path = Path(path)
    if detect_format(path) == "session":
        with SessionReader(path) as reader:
            text = reader.protocol_yaml
    else:
        import scipy.io

        try:
            text = str(
                np.asarray(
                    scipy.io.loadmat(str(path), variable_names=["closedloop_recipe"]).get("closedloop_recipe", [""])
                ).ravel()[0]
            )
        except (OSError, ValueError, IndexError) as error:
            raise DataFileError(path, f"cannot read the simulation recipe: {error}") from None
    try:
        recipe = safe_load_bounded(text) or {}
        fields = recipe["simulated_archive"]
        return ArchiveSpec(
            layout=fields["layout"],
            seed=int(fields["seed"]),
            n_units=int(fields["n_units"]),
            n_images=int(fields["n_images"]),
            n_repeats=int(fields["n_repeats"]),
            scenario=Path(fields["scenario"]),
            stimulus_s=float(fields["stimulus_s"]),
            blank_s=float(fields["blank_s"]),
            image_seed=None if fields.get("image_seed") is None else int(fields["image_seed"]),
        )
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as error:
        raise DataFileError(path, f"not a simulated archive made by closedloop (no usable recipe: {error})") from None
