"""The two on-disk layouts of a simulated archive (see `closedloop.sim.archive`).

Each writer takes the population and the spec, writes the file, and returns the
numbers the summary reports: stimuli, trials and spikes written, the measured rate
of each unit's best natural image, and the median window Fano factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from closedloop.config.rig import PHOTODIODE_LINE
from closedloop.data.pvc8 import write_pvc8 as write_pvc8_file
from closedloop.data.responses import counts_to_rates, window_counts_from_spike_times
from closedloop.data.session import SessionWriter
from closedloop.paths import shipped_file
from closedloop.sim.aperture import aperture_mask, fit_to_grid
from closedloop.sim.archive_spec import (
    CENTRED_WITHIN_DEG,
    PHOTODIODE_LAG_S,
    RESPONSE_WINDOW_S,
    ArchiveSpec,
    Progress,
    window_fano,
)
from closedloop.sim.gratings import orientation_grating_set, pvc8_grating_sets
from closedloop.sim.population import SimulatedV1
from closedloop.sim.stimuli import stimulus_set

GREY = 0.5
PVC8_CANVAS_PX = 320
#: Refresh rate of the simulated display; flips and frame counts are on its grid.
SIM_REFRESH_HZ = 60.0
#: Pause between blocks (the runner fits or synthesizes there in a real session).
BLOCK_GAP_S = 0.5
SIM_RIG = shipped_file("rigs/sim.yaml")


def images_seed(seed: int, image_seed: int | None = None) -> int:
    """The seed `stimulus_set` draws an archive's natural images with.

    Derived from ``image_seed`` when given, else from the population ``seed``, the same
    way either time, so ``image_seed == seed`` gives the images of an archive without one.
    """
    return int(np.random.SeedSequence([seed if image_seed is None else image_seed, 10]).generate_state(1)[0])


def _streams(population: SimulatedV1, spec: ArchiveSpec) -> tuple[int, np.random.Generator]:
    """Seeds for the image set (`images_seed`) and for trial order + spikes (the population seed)."""
    trials = np.random.default_rng(np.random.SeedSequence([population.seed, 11]))
    return images_seed(population.seed, spec.image_seed), trials


def write_session(
    path: Path,
    population: SimulatedV1,
    spec: ArchiveSpec,
    recipe: str,
    progress: Progress = lambda stage, done, total: None,
) -> dict:
    """Write a closedloop session file: natural-image blocks, then orientation-grating blocks."""
    image_set_seed, rng = _streams(population, spec)
    stimulus_s, blank_s = spec.durations_s
    size = population.size_px
    aperture = population.spec.aperture_diameter_px
    naturals = stimulus_set(
        population.spec.images, spec.n_images, size_px=size, aperture_diameter_px=aperture, seed=image_set_seed
    )
    gratings, params = orientation_grating_set(
        canvas_px=size, pixels_per_degree=population.pixels_per_degree, aperture_diameter_px=aperture
    )
    natural_rates = np.empty((spec.n_images, spec.n_repeats, population.n_units), dtype=np.float32)
    n_trials = n_spikes = 0
    with SessionWriter(
        path,
        session_id=f"sim-seed{population.seed}",
        unit_ids=population.unit_ids,
        channels=population.channels,
        stimulus_shape=(size, size),
        response_window_s=RESPONSE_WINDOW_S,
        rig_yaml=SIM_RIG.read_text() if SIM_RIG.exists() else "",
        protocol_yaml=recipe,
        seeds=_seeds(population.seed, image_set_seed, spec.image_seed),
        metadata={"simulated": True, "unit_types": population.unit_types.tolist()},
    ) as writer:
        natural_ids = writer.add_stimuli(naturals, "natural", source_index=np.arange(spec.n_images))
        grating_ids = writer.add_stimuli(
            gratings,
            "grating",
            source_index=np.arange(len(gratings)),
            **{name: params[name] for name in ("orientation_deg", "phase_deg", "sf_cpd", "radius_px")},
            annulus=params["annulus"].astype(np.int64),
        )
        clock = 1.0  # acquisition starts a second before the first stimulus
        plan = [("natural", natural_ids, naturals)] * spec.n_repeats + [
            ("grating", grating_ids, gratings)
        ] * spec.n_repeats
        for block, (repeat_in_kind, (kind, ids, pixels)) in enumerate(_enumerate_by_kind(plan)):
            progress("simulating blocks", block, len(plan))
            order = rng.permutation(len(ids))
            onsets = np.arange(len(ids)) * (stimulus_s + blank_s)
            t_stop = onsets[-1] + stimulus_s + blank_s + BLOCK_GAP_S
            unit_index, times = population.sample_spike_times(
                pixels[order], onsets, duration_s=stimulus_s, t_stop_s=t_stop, rng=rng
            )
            onsets, times = onsets + clock, times + clock
            spike_units = population.unit_ids[unit_index]
            rates = counts_to_rates(
                window_counts_from_spike_times(spike_units, times, onsets, RESPONSE_WINDOW_S, population.unit_ids),
                RESPONSE_WINDOW_S,
            )
            writer.append_block(
                kind,
                stimulus_ids=ids[order],
                onsets_s=onsets,
                flip_s=onsets - PHOTODIODE_LAG_S,
                n_frames=np.full(len(ids), round(stimulus_s * SIM_REFRESH_HZ)),
                spike_unit_ids=spike_units,
                spike_times_s=times,
                sync_times_s=np.column_stack([onsets, onsets + stimulus_s]).ravel(),
                sync_lines=PHOTODIODE_LINE,
                sync_states=np.tile([1, 0], len(ids)),
                responses_hz=rates,
            )
            if kind == "natural":
                natural_rates[order, repeat_in_kind] = rates
            clock += t_stop
            n_trials += len(ids)
            n_spikes += len(times)
        progress("simulating blocks", len(plan), len(plan))
        n_stimuli = writer.n_stimuli
    return _stats(n_stimuli, n_trials, n_spikes, natural_rates)


def _seeds(population_seed: int, image_set_seed: int, image_seed: int | None) -> dict[str, int]:
    """The session file's record of its seeds.

    ``image_seed`` is listed only when one was given, so archives made without it keep the
    record they always had.
    """
    seeds = {"population": population_seed, "images": image_set_seed}
    if image_seed is not None:
        seeds["image_seed"] = image_seed
    return seeds


def _enumerate_by_kind(plan: list[tuple]) -> list[tuple[int, tuple]]:
    """Pair each block with its repeat number among blocks of the same kind."""
    seen: dict[str, int] = {}
    numbered = []
    for block in plan:
        numbered.append((seen.get(block[0], 0), block))
        seen[block[0]] = seen.get(block[0], 0) + 1
    return numbered


@dataclass(frozen=True)
class Pvc8Arrays:
    """The variables of a simulated pvc-8 file, before they are written."""

    resp_train: np.ndarray
    resp_train_blk: np.ndarray
    images: np.ndarray
    indcent: np.ndarray


def simulate_pvc8(
    population: SimulatedV1, spec: ArchiveSpec, progress: Progress = lambda stage, done, total: None
) -> Pvc8Arrays:
    """Simulate pvc-8's experiment: small/large natural images interleaved, then the 416 gratings."""
    progress("making the images", 0, 3)
    image_set_seed, rng = _streams(population, spec)
    stimulus_s, blank_s = spec.durations_s
    aperture = population.spec.aperture_diameter_px
    # Large = the photograph over the whole canvas; small = the same image seen through the
    # population's aperture, as pvc-8 showed each natural image at two sizes.
    large = stimulus_set(
        population.spec.images,
        spec.n_images,
        size_px=PVC8_CANVAS_PX,
        aperture_diameter_px=PVC8_CANVAS_PX,
        seed=image_set_seed,
    )
    small = GREY + aperture_mask(PVC8_CANVAS_PX, aperture) * (large - GREY)
    natural = np.stack([small, large], axis=1).reshape(-1, PVC8_CANVAS_PX, PVC8_CANVAS_PX)
    del small, large
    progress("making the images", 1, 3)
    gratings, _ = pvc8_grating_sets(
        canvas_px=PVC8_CANVAS_PX, pixels_per_degree=population.pixels_per_degree, aperture_diameter_px=aperture
    )
    progress("making the images", 2, 3)
    images = np.concatenate([_to_uint8(natural), _to_uint8(gratings)])
    centre = fit_to_grid(np.concatenate([natural, gratings]), population.size_px)
    del natural, gratings
    progress("making the images", 3, 3)
    n_bins, n_blank_bins = round(stimulus_s * 1000), round(blank_s * 1000)
    stage = f"spike trains of {len(centre)} stimuli x {spec.n_repeats} repeats (on, then blank)"
    progress(stage, 0, 2)
    resp_train = population.sample_binned_counts(centre, spec.n_repeats, duration_s=stimulus_s, n_bins=n_bins, rng=rng)
    progress(stage, 1, 2)
    resp_blank = population.sample_binned_counts(
        centre, spec.n_repeats, duration_s=stimulus_s, n_bins=n_blank_bins, t_start_s=stimulus_s, rng=rng
    )
    progress(stage, 2, 2)
    distance = np.hypot(population.parameters["x_deg"], population.parameters["y_deg"])
    # a plugin brain does not say where its RFs are (NaN): count its units as centred, so fits keep them
    centred = np.isnan(distance) | (distance <= CENTRED_WITHIN_DEG)
    return Pvc8Arrays(resp_train, resp_blank, images, centred.astype(np.float64))


def write_pvc8(
    path: Path,
    population: SimulatedV1,
    spec: ArchiveSpec,
    recipe: str,
    progress: Progress = lambda stage, done, total: None,
) -> dict:
    """Simulate pvc-8's experiment and write it as a MATLAB v5 file with the real variables."""
    arrays = simulate_pvc8(population, spec, progress)
    progress("writing the MATLAB file", 0, 1)
    write_pvc8_file(
        path,
        resp_train=arrays.resp_train,
        resp_train_blk=arrays.resp_train_blk,
        images=arrays.images,
        indcent=arrays.indcent,
        extra={"closedloop_recipe": recipe},
    )
    progress("writing the MATLAB file", 1, 1)
    start, stop = (round(t * 1000) for t in RESPONSE_WINDOW_S)
    small_counts = arrays.resp_train[:, 0 : 2 * spec.n_images : 2, :, start:stop].sum(axis=3, dtype=np.float32)
    natural_rates = counts_to_rates(small_counts.transpose(1, 2, 0), RESPONSE_WINDOW_S)
    n_spikes = int(arrays.resp_train.sum(dtype=np.int64) + arrays.resp_train_blk.sum(dtype=np.int64))
    n_stimuli = len(arrays.images)
    return _stats(n_stimuli, n_stimuli * spec.n_repeats, n_spikes, natural_rates)


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def _stats(n_stimuli: int, n_trials: int, n_spikes: int, natural_rates: np.ndarray) -> dict:
    return {
        "n_stimuli": int(n_stimuli),
        "n_trials": int(n_trials),
        "n_spikes": int(n_spikes),
        "peak_hz": natural_rates.mean(axis=1).max(axis=0),
        "median_fano": window_fano(natural_rates),
    }
