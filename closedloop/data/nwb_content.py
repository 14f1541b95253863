"""Build the in-memory NWB file for one session (used by `closedloop.data.nwb`).

Where each part of a session goes (NWB 2.x names; times in seconds on the
acquisition clock, which is the file's time reference)::

    /general/subject, experimenter, institution, lab   from the session: sections
    /units                              one row per unit: spike_times, channel, electrodes; on an Open
                                        Ephys rig also stream, electrode_name, sorted_id (as recorded)
    /general/devices/recording_array    with one electrode group per Open Ephys (stream, electrode)
    /general/extracellular_ephys/...    (older files: per electrode in the unit id; other rigs: one,
                                        "array") and one electrode per group or known channel
    /intervals/trials                   one row per presentation: onset, stimulus, block, flag
                                        (trials whose onsets are on the presenter's clock are
                                        left out; `closedloop.data.nwb_clock`)
    /intervals/blocks                   one row per block: kind, flag, onset clock, trial range
    /stimulus/templates/stimulus_images Images, one GrayscaleImage per stimulus + order_of_images
    /stimulus/presentation/stimulus_presentations   IndexSeries into those images, at the onsets
    /stimulus/presentation/stimuli      per-stimulus provenance (kind, grating parameters, ...)
    /events/sync                        photodiode / TTL edges (line, state)
    /processing/responses/trial_responses   rates (trials x units, Hz) in the response window
"""

from __future__ import annotations

from enum import IntEnum

import json
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from hdmf.common import DynamicTable, DynamicTableRegion, ElementIdentifiers, VectorData, VectorIndex
from pynwb import NWBFile
from pynwb.base import ImageReferences, Images
from pynwb.device import Device
from pynwb.ecephys import ElectrodeGroup
from pynwb.epoch import TimeIntervals
from pynwb.event import EventsTable, TimestampVectorData
from pynwb.file import Subject
from pynwb.image import GrayscaleImage, IndexSeries
from pynwb.misc import Units

from closedloop.acquisition.openephys_units import UnitSource
from closedloop.config.session_info import SessionInfo
from closedloop.data.nwb_clock import on_acquisition_clock
from closedloop.data.session_format import BlockFlag, BlockKind, StimulusKind

UNKNOWN_LOCATION = "unknown"
DEFAULT_KEYWORDS = ("V1", "closed loop", "natural images", "stimulus synthesis")
#: Open Ephys unit ids are electrode × 1000 + sorted id (`closedloop.acquisition.openephys_format`).
OPENEPHYS_UNITS_PER_ELECTRODE = 1000
#: Characters an NWB object name must not hold (HDF5 paths; nwbinspector's name checks).
NAME_FORBIDDEN = ("/", "\\", ":")


@dataclass(frozen=True)
class SessionContents:
    """The committed part of a session as read once, plus the facts the export derives
    from it (start time, stimulus durations, a few rig settings)."""

    session_id: str
    created_utc: str
    closedloop_version: str
    rig_yaml: str
    protocol_yaml: str
    seeds: dict
    metadata: dict
    response_window_s: tuple[float, float]
    unit_ids: np.ndarray
    channels: np.ndarray
    stimuli: np.ndarray
    pixels: np.ndarray
    trials: np.ndarray
    blocks: np.ndarray
    spikes: np.ndarray
    sync: np.ndarray
    responses: np.ndarray
    start_time: datetime
    durations_s: np.ndarray
    duration_source: str
    rig_name: str | None
    acquisition_kind: str | None
    sample_rate_hz: float | None
    info: SessionInfo
    block_clocks: list[str]
    resolution_s: float | None
    resolution_source: str
    unit_sources: tuple[UnitSource, ...] | None = None  # per unit, in unit order (Open Ephys rigs)


def build_nwbfile(session: SessionContents, exported_by: str) -> NWBFile:
    """The NWB file for ``session``, in memory (``exported_by`` goes into the notes)."""
    info = session.info
    nwbfile = NWBFile(
        session_description=info.description or _session_description(session),
        identifier=f"closedloop:{session.session_id}:{session.created_utc}",
        session_id=session.session_id,
        session_start_time=session.start_time,
        experiment_description=(
            "Closed-loop V1 experiment run by closedloop: images were presented, spikes "
            "recorded, a CNN fitted to the responses online, and new images synthesized from it."
        ),
        notes=_notes(session, exported_by),
        stimulus_notes=f"Grayscale images in [0, 1] (0.5 = mean grey); {session.duration_source}.",
        was_generated_by=[("closedloop", session.closedloop_version)],
        keywords=list(info.keywords or DEFAULT_KEYWORDS),
        experimenter=list(info.experimenter) if info.experimenter else None,
        institution=info.institution,
        lab=info.lab,
        subject=_subject(session),
    )
    kept = kept_trials(session)
    _add_units(nwbfile, session)
    _add_trials(nwbfile, session, kept)
    _add_blocks(nwbfile, session)
    if session.stimuli.size:  # NWB has no empty image container (a session just started)
        images = _add_stimuli(nwbfile, session)
        if kept.size:
            _add_presentations(nwbfile, session, images, kept)
    if session.sync.size:  # an empty events table is not readable by every tool: left out (see notes)
        _add_sync(nwbfile, session)
    if kept.size and not np.all(np.isnan(session.responses[kept])):
        _add_responses(nwbfile, session, kept)
    return nwbfile


def _subject(session: SessionContents) -> Subject | None:
    subject = session.info.subject
    if subject is None:
        return None
    fields = ("subject_id", "species", "sex", "age", "description", "strain", "genotype", "weight")
    return Subject(**{name: getattr(subject, name) for name in fields if getattr(subject, name) is not None})


def kept_trials(session: SessionContents) -> np.ndarray:
    """Rows of the session's trials that go into the NWB file: those on the acquisition clock."""
    good = [int(b["index"]) for b, clock in zip(session.blocks, session.block_clocks) if on_acquisition_clock(clock)]
    return np.flatnonzero(np.isin(session.trials["block"], good))


def _session_description(session: SessionContents) -> str:
    where = f" on rig {session.rig_name}" if session.rig_name else ""
    simulated = " (simulated V1)" if session.metadata.get("simulated") else ""
    return (
        f"closedloop session {session.session_id}{where}{simulated}: {session.trials.size} "
        f"presentations of {session.stimuli.size} images, {session.unit_ids.size} units"
    )


def _notes(session: SessionContents, exported_by: str) -> str:
    """Everything needed to rerun the session, as text: versions, seeds, YAML verbatim."""
    return "\n".join(
        [
            f"exported by: {exported_by}",
            f"closedloop_version: {session.closedloop_version}",
            f"seeds: {json.dumps(session.seeds, sort_keys=True)}",
            f"metadata: {json.dumps(session.metadata, sort_keys=True)}",
            f"response_window_s: {list(session.response_window_s)}",
            "time reference: the acquisition clock (seconds); session_start_time is when the session file was created",
            f"spike time resolution: {session.resolution_source}",
            *_left_out(session),
            "--- rig.yaml ---",
            session.rig_yaml,
            "--- protocol.yaml ---",
            session.protocol_yaml,
        ]
    )


def _left_out(session: SessionContents) -> list[str]:
    """Notes on what the export left out, and why."""
    notes = [
        f"left out: the trials of block {int(block['index'])} ({clock})"
        for block, clock in zip(session.blocks, session.block_clocks)
        if not on_acquisition_clock(clock)
    ]
    if not session.sync.size:
        notes.append("left out: /events/sync (no photodiode or TTL edge was recorded)")
    kept = kept_trials(session)
    if kept.size and np.all(np.isnan(session.responses[kept])):
        notes.append("left out: /processing/responses (no trial has a computed response)")
    return notes


# ----------------------------------------------------------------------------- units
def unit_channels(session: SessionContents) -> np.ndarray:
    """Each unit's channel; on an Open Ephys rig an unknown one (-1) is the electrode in its id."""
    channels = session.channels.astype(np.int64).copy()
    if session.acquisition_kind == "openephys":
        unknown = (channels < 0) & (session.unit_ids >= OPENEPHYS_UNITS_PER_ELECTRODE)
        channels[unknown] = session.unit_ids[unknown] // OPENEPHYS_UNITS_PER_ELECTRODE
    return channels


def _add_units(nwbfile: NWBFile, session: SessionContents) -> None:
    unit_ids, channels = session.unit_ids, unit_channels(session)
    spikes = session.spikes
    order = np.lexsort((spikes["time_s"], spikes["unit_id"]))  # by unit, then time
    unit_of_spike = spikes["unit_id"][order]
    ends = np.searchsorted(unit_of_spike, unit_ids, side="right")
    starts = np.searchsorted(unit_of_spike, unit_ids, side="left")
    # Spikes are grouped in unit-table order (unit ids need not be sorted).
    pieces = [spikes["time_s"][order][a:b] for a, b in zip(starts, ends)]
    times = np.concatenate(pieces) if pieces else np.empty(0)
    spike_times = VectorData(name="spike_times", description="spike times (s, acquisition clock)", data=times)
    columns = [
        spike_times,
        VectorIndex(
            name="spike_times_index", data=np.cumsum([p.size for p in pieces], dtype=np.int64), target=spike_times
        ),
        VectorData(name="channel", description="recording channel of the unit (-1: unknown)", data=channels),
    ]
    unit_types = session.metadata.get("unit_types")
    if isinstance(unit_types, list) and len(unit_types) == unit_ids.size:
        columns.append(
            VectorData(
                name="simulated_type",
                data=_text([str(t) for t in unit_types]),
                description="ground-truth cell type of the simulated unit",
            )
        )
    if session.unit_sources:
        columns += _source_columns(session.unit_sources)
    if session.unit_sources or np.any(channels >= 0):
        columns += _electrode_columns(nwbfile, channels, session)
    nwbfile.units = Units(
        name="units",
        description="units recorded in the closedloop session; id = closedloop unit id",
        id=ElementIdentifiers(name="id", data=unit_ids.astype(np.int64)),
        columns=columns,
        resolution=session.resolution_s,
    )


def _source_columns(sources: tuple[UnitSource, ...]) -> list[VectorData]:
    """The unit columns ``stream``, ``electrode_name`` and ``sorted_id``: each unit's Open Ephys source."""
    return [
        VectorData(
            name="stream",
            description="Open Ephys stream the unit's spikes came from (GUI name)",
            data=_text([s.stream for s in sources]),
        ),
        VectorData(
            name="electrode_name",
            description="Open Ephys spike electrode of the unit, as the GUI names it "
            "(e.g. 'Electrode 3', 'Tetrode 1'; numbered per stream)",
            data=_text([s.electrode for s in sources]),
        ),
        VectorData(
            name="sorted_id",
            description="the spike sorter's id of the unit on its electrode (0: unsorted)",
            data=np.asarray([s.sorted_id for s in sources], dtype=np.int64),
        ),
    ]


@dataclass(frozen=True)
class _Wiring:
    """Electrode groups and electrodes to create, and which of them each unit belongs to.

    Attributes
    ----------
    electrode_ids
        Id of each electrode (row of the electrodes table), in row order.
    electrode_groups
        Group of each electrode, in row order.
    unit_rows
        Per unit, its electrode's row, or ``None`` when unknown.
    unit_groups
        Per unit, its electrode group.
    """

    electrode_ids: list[int]
    electrode_groups: list[ElectrodeGroup]
    unit_rows: list[int | None]
    unit_groups: list[ElectrodeGroup]


def _electrode_columns(nwbfile: NWBFile, channels: np.ndarray, session: SessionContents) -> list:
    """A device, electrode groups and electrodes; the unit columns ``electrodes`` (row of its
    electrode; empty if unknown) and ``electrode_group``.

    Where the session recorded each unit's Open Ephys source, each (stream, electrode) is a
    group with one electrode; otherwise see `_channel_wiring`.
    """
    kind = session.acquisition_kind or "unknown"
    device = nwbfile.create_device(
        name="recording_array",
        description=f"multielectrode array recorded through closedloop ({kind} acquisition)",
    )
    location = _location(session)
    if session.unit_sources:
        wiring = _source_wiring(nwbfile, session.unit_sources, device, location)
    else:
        wiring = _channel_wiring(nwbfile, channels, kind, device, location)
    for electrode_id, group in zip(wiring.electrode_ids, wiring.electrode_groups):
        nwbfile.add_electrode(id=electrode_id, group=group, location=location)
    rows = [[] if row is None else [row] for row in wiring.unit_rows]
    electrodes = DynamicTableRegion(
        name="electrodes",
        description="electrode (channel) the unit was recorded on",
        data=[row for unit_rows in rows for row in unit_rows],
        table=nwbfile.electrodes,
    )
    return [
        electrodes,
        VectorIndex(name="electrodes_index", data=np.cumsum([len(r) for r in rows], dtype=np.int64), target=electrodes),
        VectorData(name="electrode_group", description="electrode group of the unit", data=wiring.unit_groups),
    ]


def _location(session: SessionContents) -> str:
    """Brain area of the electrodes: the ``session:`` section's, else the metadata's, else unknown."""
    location = session.metadata.get("location")
    return session.info.location or (location if isinstance(location, str) else UNKNOWN_LOCATION)


def _source_wiring(nwbfile: NWBFile, sources: tuple[UnitSource, ...], device: Device, location: str) -> _Wiring:
    """One group, with one electrode (id = its row), per recorded (stream, electrode) pair.

    Two streams both have an ``Electrode 1``: the pair, not the electrode name, is the group.
    """
    pairs = list(dict.fromkeys((source.stream, source.electrode) for source in sources))
    names = _unique([_group_name(stream, electrode) for stream, electrode in pairs])
    groups = [
        nwbfile.create_electrode_group(
            name=name,
            location=location,
            device=device,
            description=f"Open Ephys spike electrode '{electrode}' of stream '{stream}' (names as in the Open Ephys "
            "GUI; units' stream, electrode_name and sorted_id columns)",
        )
        for name, (stream, electrode) in zip(names, pairs)
    ]
    row_of_pair = {pair: row for row, pair in enumerate(pairs)}
    rows = [row_of_pair[(source.stream, source.electrode)] for source in sources]
    return _Wiring(
        electrode_ids=list(range(len(pairs))),
        electrode_groups=groups,
        unit_rows=list[int | None](rows),
        unit_groups=[groups[row] for row in rows],
    )


def _group_name(stream: str, electrode: str) -> str:
    """``"<stream> - <electrode>"``, without the characters NWB names must not hold."""
    name = f"{stream} - {electrode}" if stream else electrode
    for character in NAME_FORBIDDEN:
        name = name.replace(character, "-")
    return name


def _unique(names: list[str]) -> list[str]:
    """``names`` with a repeated one (two names cleaned to the same text) suffixed `` (2)``, `` (3)``, ..."""
    seen: set[str] = set()
    unique = []
    for name in names:
        candidate, count = name, 1
        while candidate in seen:
            count += 1
            candidate = f"{name} ({count})"
        seen.add(candidate)
        unique.append(candidate)
    return unique


def _channel_wiring(nwbfile: NWBFile, channels: np.ndarray, kind: str, device: Device, location: str) -> _Wiring:
    """One electrode per known channel (id = the channel).

    On an Open Ephys rig each electrode (a spike channel, e.g. a tetrode) is its own
    group; otherwise the array is one group, which also holds units of unknown channel.
    """
    known = np.unique(channels[channels >= 0])
    groups = {}
    if kind == "openephys":
        for channel in known:
            groups[int(channel)] = nwbfile.create_electrode_group(
                name=f"electrode{int(channel)}",
                location=location,
                device=device,
                description=f"Open Ephys spike electrode {int(channel)} (unit ids {int(channel)}000-"
                f"{int(channel)}999: electrode × 1000 + sorted id)",
            )
    if kind != "openephys" or np.any(channels < 0):  # the array; or where units of unknown channel belong
        group = nwbfile.create_electrode_group(
            name="array",
            description="the recording array's channels (units of unknown channel included)",
            location=location,
            device=device,
        )
        groups = {**{int(channel): group for channel in known}, **groups, -1: group}
    return _Wiring(
        electrode_ids=[int(channel) for channel in known],
        electrode_groups=[groups[int(channel)] for channel in known],
        unit_rows=[int(np.searchsorted(known, c)) if c >= 0 else None for c in channels],
        unit_groups=[groups[int(c) if c >= 0 else -1] for c in channels],
    )


# --------------------------------------------------------------------------- stimuli
def _add_stimuli(nwbfile: NWBFile, session: SessionContents) -> Images:
    """The pixels of every stimulus, and a table of their provenance."""
    ids = session.stimuli["id"]
    pictures = [
        GrayscaleImage(
            name=f"stimulus_{int(i)}",
            data=session.pixels[row],
            description="float32 luminance in [0, 1], 0.5 = mean grey; row 0 at the top",
        )
        for row, i in enumerate(ids)
    ]
    images = Images(
        name="stimulus_images",
        images=pictures,
        description="every stimulus stored in the session, in stimulus-id order (order_of_images)",
        order_of_images=ImageReferences(name="order_of_images", data=pictures),
    )
    nwbfile.add_stimulus_template(images)
    stimuli = session.stimuli
    columns = [
        VectorData(
            name="kind",
            description="natural, grating, synthesized or other",
            data=_names(StimulusKind, stimuli["kind"]),
        ),
        VectorData(
            name="image_name",
            description="name of the image in /stimulus/templates/stimulus_images",
            data=_text([p.name for p in pictures]),
        ),
    ]
    described = {
        "source_index": "index in the image set or grating set it came from (-1: n/a)",
        "orientation_deg": "grating orientation (deg; NaN: n/a)",
        "phase_deg": "grating phase (deg; NaN: n/a)",
        "sf_cpd": "grating spatial frequency (cycles/deg; NaN: n/a)",
        "radius_px": "grating radius (px; NaN: n/a)",
        "annulus": "grating shape: 0 disc, 1 annulus, -1 n/a",
        "unit_id": "synthesized for this unit (-1: n/a)",
        "target_hz": "synthesis target rate (Hz; NaN: n/a)",
        "model_version": "model version the image was synthesized with (-1: n/a)",
        "seed": "synthesis seed (-1: n/a)",
        "achieved_hz": "rate the model predicted for the synthesized image (Hz; NaN: n/a)",
        "spread_hz": "std of the model ensemble members' predictions around achieved_hz (Hz; NaN: n/a)",
        "start_stimulus_id": "stimulus id the synthesized image's optimisation started from (-1: blank screen or n/a)",
    }
    columns += [
        VectorData(name=name, description=text, data=stimuli[name])
        for name, text in described.items()
        if not _all_nan(stimuli[name])
    ]
    nwbfile.add_stimulus(
        DynamicTable(
            name="stimuli",
            description="one row per stimulus; id = closedloop stimulus id",
            id=ElementIdentifiers(name="id", data=ids.astype(np.int64)),
            columns=columns,
        )
    )
    return images


def _add_presentations(nwbfile: NWBFile, session: SessionContents, images: Images, kept: np.ndarray) -> None:
    # Stimulus ids are consecutive from 0, so an id is also the index into order_of_images.
    trials = session.trials[kept]
    onsets = trials["onset_s"]
    steps = np.diff(onsets)
    # evenly spaced onsets (one block of a pvc-8 replay) are written as a start and a rate, as NWB prefers
    regular = onsets.size > 2 and steps[0] > 0 and np.unique(np.round(steps, 9)).size == 1
    timing = {"starting_time": float(onsets[0]), "rate": float(1.0 / steps[0])} if regular else {"timestamps": onsets}
    nwbfile.add_stimulus(
        IndexSeries(
            name="stimulus_presentations",
            data=trials["stimulus_id"].astype(np.uint32),
            **timing,
            indexed_images=images,
            unit="N/A",
            description="image shown at each onset (photodiode edge, acquisition clock); "
            "data index into stimulus_images.order_of_images",
        )
    )


# ---------------------------------------------------------------------- time intervals
def _add_trials(nwbfile: NWBFile, session: SessionContents, kept: np.ndarray) -> None:
    trials, blocks = session.trials[kept], session.blocks
    block_row = np.searchsorted(blocks["index"], trials["block"])
    flag_codes = blocks["flag_code"][block_row] if blocks.size else np.zeros(0, dtype=np.int32)
    onsets = trials["onset_s"]
    columns = {
        "start_time": (
            "onset: photodiode edge on the acquisition clock (s); a flagged block's are estimated "
            "(/intervals/blocks onset_clock)",
            onsets,
        ),
        "stop_time": ("onset + stimulus duration (s); see /general/stimulus", onsets + session.durations_s[kept]),
        "stimulus_id": ("closedloop stimulus id (row of /stimulus/presentation/stimuli)", trials["stimulus_id"]),
        "stimulus_kind": (
            "natural, grating, synthesized or other",
            _names(StimulusKind, session.stimuli["kind"][trials["stimulus_id"]]),
        ),
        "block": ("block index (row of /intervals/blocks)", trials["block"]),
        "repeat": ("how often this stimulus had been shown before in the session", trials["repeat"]),
        "flip_time": ("presenter flip time (s, presenter clock; NaN: not recorded)", trials["flip_s"]),
        "n_frames": ("frames the image was drawn for (-1: not recorded)", trials["n_frames"]),
        "dropped_frames": ("late frame intervals during the trial", trials["dropped_frames"]),
        "block_flagged": ("the trial's block was flagged (see block_flag)", flag_codes != int(BlockFlag.NONE)),
        "block_flag": (
            "why the block was flagged (none, photodiode_mismatch, dropped_frames, aborted, other)",
            _names(BlockFlag, flag_codes),
        ),
    }
    if _all_nan(trials["flip_s"]):
        del columns["flip_time"]
    nwbfile.trials = TimeIntervals(
        name="trials",
        description="one row per stimulus presentation (closedloop trial); id = the trial's "
        "row in the session file (trials on the presenter's clock are left out)",
        id=ElementIdentifiers(name="id", data=kept.astype(np.int64)),
        columns=[VectorData(name=name, description=text, data=data) for name, (text, data) in columns.items()],
    )


def _add_blocks(nwbfile: NWBFile, session: SessionContents) -> None:
    blocks, trials = session.blocks, session.trials
    starts, stops = np.full(blocks.size, np.nan), np.full(blocks.size, np.nan)
    for row, block in enumerate(blocks):
        a, b = int(block["trial_start"]), int(block["trial_stop"])
        times = trials["onset_s"][a:b]
        ends = times + session.durations_s[a:b]
        if times.size == 0 or not on_acquisition_clock(session.block_clocks[row]):
            # a block without trials (or with onsets on another clock) spans its spikes and sync events
            times = np.concatenate(
                [
                    session.spikes["time_s"][block["spike_start"] : block["spike_stop"]],
                    session.sync["time_s"][block["sync_start"] : block["sync_stop"]],
                ]
            )
            ends = times
        if times.size:
            starts[row], stops[row] = times.min(), ends.max()
    timed = np.isfinite(starts)  # a block with neither trials nor data has no time: left out
    if not timed.any():
        return
    columns = {
        "start_time": (
            "first onset of the block (s, acquisition clock), or its first spike or sync event "
            "when its trials are not exported",
            starts,
        ),
        "stop_time": ("end of the block's last presentation (s)", stops),
        "block_kind": ("natural, grating, synthesized, mixed or other", _names(BlockKind, blocks["kind"])),
        "flagged": ("the block was flagged by the runner", blocks["flagged"].astype(bool)),
        "flag": (
            "why (none, photodiode_mismatch, dropped_frames, aborted, other)",
            _names(BlockFlag, blocks["flag_code"]),
        ),
        "onset_clock": (
            "how the trial onsets were obtained: photodiode edges, estimated (flagged block), or "
            "the presenter's clock (trials then left out of /intervals/trials)",
            _text(list(session.block_clocks)),
        ),
        "trial_start": ("first trial (id in /intervals/trials) of this block", blocks["trial_start"]),
        "trial_stop": ("one past the last trial (id in /intervals/trials) of this block", blocks["trial_stop"]),
    }
    nwbfile.add_time_intervals(
        TimeIntervals(
            name="blocks",
            description="blocks of the session (committed ones), id = block index",
            id=ElementIdentifiers(name="id", data=blocks["index"][timed].astype(np.int64)),
            columns=[
                VectorData(name=name, description=text, data=data[timed]) for name, (text, data) in columns.items()
            ],
        )
    )


# ------------------------------------------------------------------ events, responses
def _add_sync(nwbfile: NWBFile, session: SessionContents) -> None:
    sync = session.sync
    nwbfile.add_events_table(
        EventsTable(
            name="sync",
            description="photodiode and TTL edges recorded by acquisition; a stimulus "
            "onset is a rising photodiode edge (state 1)",
            source_description="acquisition system (photodiode / TTL lines)",
            id=ElementIdentifiers(name="id", data=np.arange(sync.size, dtype=np.int64)),
            columns=[
                TimestampVectorData(
                    name="timestamp", description="edge time (s, acquisition clock)", data=sync["time_s"]
                ),
                VectorData(name="line", description="TTL / photodiode line", data=sync["line"]),
                VectorData(name="state", description="1 rising edge (on), 0 falling edge (off)", data=sync["state"]),
            ],
        )
    )


def _add_responses(nwbfile: NWBFile, session: SessionContents, kept: np.ndarray) -> None:
    start, stop = session.response_window_s
    onsets = session.trials["onset_s"][kept]
    module = nwbfile.create_processing_module(
        name="responses",
        description=f"spike rate of every unit {start * 1000:g}-{stop * 1000:g} ms after each onset, "
        "as computed online by closedloop",
    )
    module.add(
        DynamicTable(
            name="trial_responses",
            description="one row per exported trial (same id); rates[:, k] is the unit in row k of /units; "
            "NaN: not computed (flagged block)",
            id=ElementIdentifiers(name="id", data=kept.astype(np.int64)),
            columns=[
                DynamicTableRegion(
                    name="trial",
                    description="the trial (row of /intervals/trials)",
                    data=np.arange(onsets.size, dtype=np.int64),
                    table=nwbfile.trials,
                ),
                VectorData(name="window_start_time", description="onset + window start (s)", data=onsets + start),
                VectorData(name="window_stop_time", description="onset + window stop (s)", data=onsets + stop),
                VectorData(
                    name="rates",
                    description="(trials, units) spike rate in the window (Hz)",
                    data=session.responses[kept].astype(np.float32),
                ),
            ],
        )
    )


def _all_nan(values: np.ndarray) -> bool:
    """A float column with no value at all (left out: NWB best practice)."""
    return bool(np.issubdtype(values.dtype, np.floating) and values.size and np.all(np.isnan(values)))


def _names(enum: type[IntEnum], codes: np.ndarray) -> np.ndarray:
    """Lower-case enum member names for integer codes (unknown codes as 'code N')."""
    lookup = {int(member): member.name.lower() for member in enum}
    return _text([lookup.get(int(code), f"code {int(code)}") for code in codes])


def _text(values: list[str]) -> np.ndarray:
    # a numpy string array, so an empty column still has a dtype hdmf can write
    return np.asarray(values, dtype=str)
