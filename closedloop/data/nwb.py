"""Export a session file to NWB, so it opens in the field's usual tools and DANDI accepts it.

`export_nwb` reads the committed part of a session (a session still being written is
exported as far as it has been committed, and the summary says so), builds the NWB file
(`closedloop.data.nwb_content` lists what goes where) and writes it to a temporary file
next to the output, which is renamed only once complete: a failed or interrupted export
never leaves a file that looks finished.  Who, where and what (subject, experimenter,
institution, ...) come from the ``session:`` sections of the stored rig and protocol and
of an optional ``--metadata`` file (`closedloop.config.session_info`).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, UTC
from pathlib import Path

import numpy as np
import yaml

from closedloop.acquisition.openephys_units import UnitSource
from closedloop.config.session_info import SessionInfo, load_metadata, merge, section_in_text
from closedloop.config.yaml_loader import safe_load_bounded
from closedloop.data import session_lock
from closedloop.data.nwb_clock import block_clocks
from closedloop.data.nwb_content import SessionContents, build_nwbfile, kept_trials
from closedloop.data.output_files import write_via_temporary
from closedloop.data.session_reader import SessionReader
from closedloop.errors import DataFileError

#: pvc-8 spike trains are 1 ms bins; replayed spikes sit at bin centres.
PVC8_RESOLUTION_S = 0.001

#: What `writer_state` reports.
CLOSED, BEING_WRITTEN, WRITER_STOPPED = "closed", "being written", "writer stopped without closing"


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote, for the terminal and for JSON."""

    session: str
    out: str
    session_id: str
    writer_state: str
    n_units: int
    n_trials: int
    n_stimuli: int
    n_spikes: int
    n_sync_events: int
    n_blocks: int
    n_flagged_blocks: int
    n_trials_left_out: int
    stimulus_durations: str
    warnings: list[str]
    file_mb: float
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        """One line, plus a second when the session was not closed normally."""
        flagged = f" ({self.n_flagged_blocks} flagged)" if self.n_flagged_blocks else ""
        line = (
            f"wrote {self.out} ({self.file_mb:.1f} MB) in {self.seconds:.1f} s: {self.n_units} units, "
            f"{self.n_trials} trials in {self.n_blocks} blocks{flagged}, {self.n_stimuli} stimuli, "
            f"{self.n_spikes:,} spikes, {self.n_sync_events} sync events"
        )
        if self.writer_state == BEING_WRITTEN:
            line += (
                f"\n  note: {self.session} is still being written; exported its {self.n_blocks} "
                "committed blocks, export again when the session has ended"
            )
        elif self.writer_state == WRITER_STOPPED:
            line += (
                f"\n  note: the writer of {self.session} stopped without closing it; exported its "
                f"{self.n_blocks} committed blocks (a block cut short is not included)"
            )
        if self.n_trials_left_out:
            line += (
                f"\n  note: {self.n_trials_left_out} trial(s) of flagged blocks left out: their onsets are on "
                "the presenter's clock (see the blocks table's onset_clock column)"
            )
        return line + "".join(f"\n  warning: {warning}" for warning in self.warnings)


def export_nwb(
    session_path: str | Path, out_path: str | Path, *, overwrite: bool = False, metadata: str | Path | None = None
) -> ExportSummary:
    """Write the session file ``session_path`` as the NWB file ``out_path``.

    Parameters
    ----------
    session_path
        A closedloop session ``.h5`` file (closed, or still being written).
    out_path
        The ``.nwb`` file to write; its folder must exist.
    overwrite
        Replace ``out_path`` if it exists instead of refusing.
    metadata
        A YAML file with a ``session:`` section (subject, experimenter, ...), overriding
        the stored rig's and protocol's key by key.

    Returns
    -------
    ExportSummary
        Counts of what was exported and whether the session was still being written.

    Raises
    ------
    DataFileError
        If the session is missing, not a session file, truncated or damaged; if
        ``out_path`` exists (without ``overwrite``), is the session itself, or its folder
        is missing; or if the NWB file cannot be written.
    ConfigError
        If the metadata file, or a stored ``session:`` section, is invalid.
    """
    started = time.perf_counter()
    session_path, out_path = Path(session_path), Path(out_path)
    extra = load_metadata(metadata) if metadata is not None else None
    _check_out(session_path, out_path, overwrite)
    state = writer_state(session_path)
    with SessionReader(session_path) as reader:
        contents = read_contents(reader, extra)
    nwbfile = build_nwbfile(contents, exported_by=f"closedloop export-nwb {session_path}")
    _write_atomically(nwbfile, out_path)
    n_left_out = int(contents.trials.size - kept_trials(contents).size)
    return ExportSummary(
        session=str(session_path),
        out=str(out_path),
        session_id=contents.session_id,
        writer_state=state,
        n_units=int(contents.unit_ids.size),
        n_trials=int(contents.trials.size),
        n_stimuli=int(contents.stimuli.size),
        n_spikes=int(np.isin(contents.spikes["unit_id"], contents.unit_ids).sum()),
        n_sync_events=int(contents.sync.size),
        n_blocks=int(contents.blocks.size),
        n_flagged_blocks=int(np.count_nonzero(contents.blocks["flagged"])),
        n_trials_left_out=n_left_out,
        warnings=dandi_warnings(contents),
        stimulus_durations=contents.duration_source,
        file_mb=out_path.stat().st_size / 1e6,
        seconds=time.perf_counter() - started,
    )


def read_contents(reader: SessionReader, extra: SessionInfo | None = None) -> SessionContents:
    """The committed part of an open session, read once, with the facts derived from it.

    ``extra`` (a ``--metadata`` file's section) overrides the stored rig's and protocol's.
    """
    trials, metadata = reader.trials, reader.metadata
    rig, protocol = _yaml_mapping(reader.rig_yaml), _yaml_mapping(reader.protocol_yaml)
    durations, duration_source = stimulus_durations(trials, rig, protocol)
    rig_name, kind = _get(rig, "name"), _get(rig, "acquisition", "kind")
    name = reader.path.name
    info = merge(
        section_in_text(reader.rig_yaml, f"{name} (its stored rig file)"),
        section_in_text(reader.protocol_yaml, f"{name} (its stored protocol file)"),
        extra,
    )
    spikes, sync, blocks = reader.spikes, reader.sync, reader.blocks
    data_times = np.concatenate([spikes["time_s"], sync["time_s"]])
    found = metadata.get("runner")
    runner: dict = found if isinstance(found, dict) else {}
    clocks = block_clocks(reader.path, runner.get("journal"), blocks, trials, data_times)
    resolution, resolution_source = spike_time_resolution(rig, spikes["time_s"])
    return SessionContents(
        session_id=reader.session_id,
        created_utc=reader.created_utc,
        closedloop_version=reader.closedloop_version,
        rig_yaml=reader.rig_yaml,
        protocol_yaml=reader.protocol_yaml,
        seeds=reader.seeds,
        metadata=metadata,
        response_window_s=reader.response_window_s,
        unit_ids=reader.unit_ids,
        channels=reader.channels,
        stimuli=reader.stimuli,
        pixels=reader.stimulus_pixels,
        trials=trials,
        blocks=blocks,
        spikes=spikes,
        sync=sync,
        responses=reader.responses,
        start_time=session_start_time(metadata.get("session_start_time"), reader.created_utc),
        durations_s=durations,
        duration_source=duration_source,
        rig_name=rig_name if isinstance(rig_name, str) else None,
        acquisition_kind=kind if isinstance(kind, str) else None,
        sample_rate_hz=_positive(_get(rig, "acquisition", "sample_rate_hz")),
        info=info,
        block_clocks=clocks,
        resolution_s=resolution,
        resolution_source=resolution_source,
        unit_sources=recorded_unit_sources(metadata, reader.unit_ids),
    )


def recorded_unit_sources(metadata: dict, unit_ids: np.ndarray) -> tuple[UnitSource, ...] | None:
    """Each unit's Open Ephys source as the runner recorded it (``metadata['unit_sources']``).

    Parameters
    ----------
    metadata
        The session file's metadata.
    unit_ids
        The session's units, in unit-table order.

    Returns
    -------
    tuple of UnitSource or None
        One source per unit, in ``unit_ids`` order; ``None`` when none were recorded (other
        rigs, older files) or some unit has no well-formed row (the export then derives
        electrodes from the unit ids, as for older files).
    """
    sources = _get(metadata, "unit_sources", "units")
    if not isinstance(sources, list) or unit_ids.size == 0:
        return None
    by_unit = {}
    for row in sources:
        source = _unit_source(row)
        if source is not None:
            by_unit[row["unit_id"]] = source
    units = [int(unit) for unit in unit_ids.tolist()]
    return tuple(by_unit[unit] for unit in units) if all(unit in by_unit for unit in units) else None


def _unit_source(row: object) -> UnitSource | None:
    """One row ``{unit_id, stream, electrode, sorted_id}`` as a `UnitSource`; ``None`` if malformed."""
    if not isinstance(row, dict):
        return None
    integers = [row.get(key) for key in ("unit_id", "sorted_id")]
    if any(isinstance(value, bool) or not isinstance(value, int) for value in integers):
        return None
    stream, electrode = row.get("stream"), row.get("electrode")
    if not isinstance(stream, str) or not isinstance(electrode, str) or not electrode:
        return None
    return UnitSource(stream, electrode, row["sorted_id"])


def spike_time_resolution(rig: dict, spike_times: np.ndarray) -> tuple[float | None, str]:
    """The smallest possible difference between two spike times (NWB ``units.resolution``), and why.

    Open Ephys: one sample (``acquisition.sample_rate_hz``, 30 kHz when not written);
    a replayed pvc-8 archive: its 1 ms bins; a simulation: spike times are drawn in
    continuous time, so the float64 spacing at the last spike; otherwise unknown.
    """
    kind = _get(rig, "acquisition", "kind")
    if kind == "openephys":
        rate = _positive(_get(rig, "acquisition", "sample_rate_hz")) or 30000.0
        return 1.0 / rate, f"one sample at {rate:g} Hz (rig acquisition.sample_rate_hz)"
    archive = _get(rig, "acquisition", "archive")
    if kind == "replay" and isinstance(archive, str) and archive.lower().endswith(".mat"):
        return PVC8_RESOLUTION_S, "the 1 ms bins of the replayed pvc-8 archive"
    if kind == "sim":
        last = float(np.max(np.abs(spike_times))) if spike_times.size else 1.0
        return float(np.spacing(max(last, 1.0))), "simulated spikes in continuous time: float64 spacing"
    return None, "unknown (not an Open Ephys, pvc-8 replay or simulated session)"


def dandi_warnings(contents: SessionContents) -> list[str]:
    """What a DANDI upload would refuse in this export, and how to add it."""
    subject = contents.info.subject
    missing = (
        []
        if subject is None
        else [name for name in ("subject_id", "species", "sex", "age") if getattr(subject, name) is None]
    )
    if subject is None:
        missing = ["subject"]
    hint = "add a session: section with them (rig, protocol, or export-nwb --metadata META.yaml)"
    warnings = (
        [f"no {', '.join(missing)}: DANDI needs the subject's id, species, sex and age; {hint}"] if missing else []
    )
    if contents.resolution_s is None:
        warnings.append("spike time resolution unknown: units.resolution not set")
    return warnings


def session_start_time(recorded: object, created_utc: str) -> datetime:
    """The start time the runner recorded (``metadata['session_start_time']``, ISO 8601) if
    any, else the session file's creation time; timezone-aware (UTC if no offset is given)."""
    for text in (recorded, created_utc):
        if not isinstance(text, str):
            continue
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            continue
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return datetime.fromtimestamp(0, UTC)  # neither readable: say so by the epoch


def stimulus_durations(trials: np.ndarray, rig: dict, protocol: dict) -> tuple[np.ndarray, str]:
    """Seconds each trial's image was on screen, and where that number came from.

    Frames drawn over the rig's refresh rate where both are known; otherwise the
    protocol's ``timing.stimulus_ms`` (or a simulated archive's recipe); otherwise 0.
    """
    refresh = _positive(_get(rig, "display", "refresh_hz"))
    frames = trials["n_frames"].astype(np.float64)
    fallback, fallback_source = _protocol_duration(protocol)
    durations = np.full(trials.size, fallback if fallback is not None else 0.0)
    from_frames = frames > 0 if refresh is not None else np.zeros(trials.size, dtype=bool)
    if refresh is not None:
        durations[from_frames] = frames[from_frames] / refresh
    if trials.size == 0:
        source = "no presentations"
    elif from_frames.all():
        source = f"stop_time = onset + frames drawn / {refresh:g} Hz (rig display.refresh_hz)"
    elif fallback is not None:
        source = f"stop_time = onset + {fallback:g} s ({fallback_source})"
        if from_frames.any():
            source += f" where frame counts were missing, else frames / {refresh:g} Hz"
    else:
        source = "stimulus duration unknown (no frame counts, refresh rate or protocol timing): stop_time = onset"
    return durations, source


def _protocol_duration(protocol: dict) -> tuple[float | None, str]:
    stimulus_ms = _positive(_get(protocol, "timing", "stimulus_ms"))
    if stimulus_ms is not None:
        return stimulus_ms / 1000.0, "protocol timing.stimulus_ms"
    stimulus_s = _positive(_get(protocol, "simulated_archive", "stimulus_s"))
    if stimulus_s is not None:
        return stimulus_s, "simulated archive recipe stimulus_s"
    return None, ""


def _yaml_mapping(text: str) -> dict:
    """The stored YAML text as a mapping; {} if empty or unreadable (only a few optional
    facts are looked up in it; the text itself is exported verbatim)."""
    try:
        value = safe_load_bounded(text) if text else None
    except yaml.YAMLError:
        return {}
    return value if isinstance(value, dict) else {}


def _get(mapping: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _positive(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if np.isfinite(value) and value > 0 else None


def writer_state(session_path: Path) -> str:
    """`CLOSED`, `BEING_WRITTEN` or `WRITER_STOPPED`, from the writer's lock sidecar.

    The sidecar holds the writer's pid and is removed when the writer closes; it is only
    read here (taking the lock, even briefly, could make a starting writer fail).
    """
    sidecar = session_lock.lock_path(session_path)
    try:
        text = sidecar.read_text().strip()
    except FileNotFoundError:
        return CLOSED
    except OSError:
        return BEING_WRITTEN  # unreadable: assume a live writer, which is the cautious reading
    try:
        pid = int(text)
    except ValueError:
        return BEING_WRITTEN  # a writer between creating the sidecar and writing its pid
    return BEING_WRITTEN if _process_exists(pid) else WRITER_STOPPED


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def _check_out(session_path: Path, out_path: Path, overwrite: bool) -> None:
    """Refuse an output we must not or cannot write, before reading anything."""
    folder = out_path.parent
    if not folder.is_dir():
        raise DataFileError(out_path, f"cannot be written: folder {folder} does not exist; create it first")
    if out_path.is_dir():
        raise DataFileError(out_path, "is a folder; give the path of the .nwb file to write")
    if session_path.exists() and out_path.exists() and out_path.resolve() == session_path.resolve():
        raise DataFileError(out_path, "is the session file itself; choose another output name")
    if out_path.exists() and not overwrite:
        raise DataFileError(out_path, "already exists; pass --overwrite to replace it")


def _write_atomically(nwbfile, out_path: Path) -> None:
    """Write to a hidden temporary file next to ``out_path``, then rename it into place."""
    from pynwb import NWBHDF5IO

    def write(partial: Path) -> None:
        with NWBHDF5IO(str(partial), mode="w") as io:
            io.write(nwbfile)

    try:
        write_via_temporary(out_path, write, suffix=".partial.nwb")
    except OSError as error:
        raise DataFileError(out_path, f"cannot be written ({error})") from None
