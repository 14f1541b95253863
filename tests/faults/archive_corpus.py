"""Damaged session and pvc-8 archives, each read by the fitting loader and the replay planner.

A damaged archive must be refused with `DataFileError` (one line naming the file);
anything else that escapes (IndexError, MemoryError…) is a crash, and a damaged file
that reads without complaint is silently accepted.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from closedloop.data.loader import load_dataset
from closedloop.errors import ClosedLoopError
from closedloop.replay.plan import read_plan
from closedloop.sim.archive import ArchiveSpec, make_archive

from .outcomes import Case, Outcome, one_line, timed

#: Reading a small damaged archive longer than this is a hang.
BOUND_S = 30.0


def _replay(path: Path) -> object:
    """What a replay reads: its plan (checked before anything starts), then the recording as a timeline."""
    from closedloop.acquisition.replay import pvc8_timeline, session_timeline

    plan = read_plan(path)
    if plan.layout == "pvc8":
        return pvc8_timeline(path, blank_s=0.2, refresh_hz=60.0, photodiode_line=1)
    return session_timeline(path)


# The fitting loader (`closedloop fit`) and a replay (`closedloop replay`).
READERS: dict[str, Callable[[Path], object]] = {"fit": load_dataset, "replay": _replay}
# Damage a reader never reads is no error for it: fitting uses the stored responses
# (not spikes or sync), a replay recounts responses from the spikes.
UNUSED = {
    "fit": {"spike time NaN", "spike of unit -1", "sync time NaN"},
    "replay": {"response rate NaN", "response rate -5"},
}


def base_archives(folder: Path) -> dict[str, Path]:
    """A small valid session file and pvc-8 file."""
    made = {"session": folder / "base_session.h5", "pvc8": folder / "base_pvc8.mat"}
    if not made["session"].exists():
        make_archive(made["session"], ArchiveSpec(layout="session", seed=3, n_units=4, n_images=12, n_repeats=2))
    if not made["pvc8"].exists():
        make_archive(made["pvc8"], ArchiveSpec(layout="pvc8", seed=2, n_units=4, n_images=8, n_repeats=2))
    return made


def _edit(column: str, row: int, value: float) -> Callable[[h5py.File], None]:
    def apply(file: h5py.File) -> None:
        dataset = file[column]
        dataset[row if row >= 0 else dataset.shape[0] + row] = value

    return apply


def _pixels(value: float) -> Callable[[h5py.File], None]:
    def apply(file: h5py.File) -> None:
        file["stimuli/pixels"][0, 3, 3] = value

    return apply


def _resize(name: str, rows: int) -> Callable[[h5py.File], None]:
    return lambda file: file[name].resize(rows, axis=0)


def _attr(name: str, value: object) -> Callable[[h5py.File], None]:
    def apply(file: h5py.File) -> None:
        file.attrs[name] = value

    return apply


def _delete(name: str) -> Callable[[h5py.File], None]:
    def apply(file: h5py.File) -> None:
        del file[name]

    return apply


SESSION_DAMAGE: dict[str, Callable[[h5py.File], None]] = {
    "trial points at stimulus 999999": _edit("trials/stimulus_id", 0, 999999),
    "trial points at stimulus -4": _edit("trials/stimulus_id", 1, -4),
    "last block's trial_stop is 1e9": _edit("blocks/trial_stop", -1, 10**9),
    "block's spike_stop is 1e12": _edit("blocks/spike_stop", 0, 10**12),
    "block's trial_start after its stop": _edit("blocks/trial_start", 0, 5),
    "trial of block 77": _edit("trials/block", 2, 77),
    "block kind 99": _edit("blocks/kind", 0, 99),
    "block flag code 77": _edit("blocks/flag_code", 0, 77),
    "trial onset NaN": _edit("trials/onset_s", 3, np.nan),
    "NaN pixels": _pixels(np.nan),
    "pixels 1e30": _pixels(1e30),
    "pixels -3": _pixels(-3.0),
    "spike time NaN": _edit("spikes/time_s", 5, np.nan),
    "spike of unit -1": _edit("spikes/unit_id", 7, -1),
    "sync time NaN": _edit("sync/time_s", 0, np.nan),
    "response rate NaN": _edit("responses", 4, np.nan),
    "response rate -5": _edit("responses", 4, -5.0),
    "trials table cut short": _resize("trials/onset_s", 2),
    "responses cut short": _resize("responses", 1),
    "pixels cut short": _resize("stimuli/pixels", 1),
    "format attribute wrong": _attr("format", "something-else"),
    "format version 99": _attr("format_version", 99),
    "seeds_json not JSON": _attr("seeds_json", "{not json"),
    "response window is text": _attr("response_window_s", "soon"),
    "stimulus_shape 5x5": _attr("stimulus_shape", np.array([5, 5])),
    "units/id missing": _delete("units/id"),
    "spikes table missing": _delete("spikes"),
}


def damaged_session(base: Path, folder: Path, name: str) -> Path:
    path = folder / f"session_{abs(hash(name)) % 10**8}.h5"
    shutil.copyfile(base, path)
    with h5py.File(path, "r+") as file:
        SESSION_DAMAGE[name](file)
    return path


def _byte_damage(base: Path, folder: Path) -> dict[str, Path]:
    data = base.read_bytes()
    made = {}
    for name, content in (
        ("session truncated to half", data[: len(data) // 2]),
        ("session with its middle zeroed", data[:4096] + bytes(len(data) // 2) + data[4096 + len(data) // 2 :]),
        ("HDF5 signature then random bytes", data[:8] + np.random.default_rng(1).bytes(8192)),
        ("empty file", b""),
    ):
        path = folder / f"bytes_{len(made)}.h5"
        path.write_bytes(content)
        made[name] = path
    return made


def _pvc8_damage(base: Path, folder: Path) -> dict[str, Path]:
    data = base.read_bytes()
    made = {}
    truncated = folder / "pvc8_truncated.mat"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    made["pvc-8 truncated"] = truncated
    header = folder / "pvc8_header.mat"
    header.write_bytes(b"not matlab" + data[10:])
    made["pvc-8 with a damaged header"] = header
    content = scipy.io.loadmat(str(base))
    content = {k: v for k, v in content.items() if not k.startswith("__")}

    def variant(name: str, change: Callable[[dict], None]) -> None:
        copy = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in content.items()}
        change(copy)
        path = folder / f"pvc8_{len(made)}.mat"
        scipy.io.savemat(str(path), copy, do_compression=True)
        made[name] = path

    def small_image(copy: dict) -> None:
        copy["images"][0, 0] = np.zeros((5, 5), np.uint8)

    variant("pvc-8 image of 5x5", small_image)
    made["pvc-8 declaring 2**124 values"] = _huge_declared(content, folder / "pvc8_huge.mat")
    variant("pvc-8 resp_train 3-D", lambda c: c.__setitem__("resp_train", c["resp_train"][..., 0]))
    variant("pvc-8 resp_train float", lambda c: c.__setitem__("resp_train", c["resp_train"].astype(float)))
    variant("pvc-8 INDCENT for other units", lambda c: c.__setitem__("INDCENT", np.ones((99, 1))))
    variant("pvc-8 without resp_train", lambda c: c.pop("resp_train"))
    variant("pvc-8 no INDCENT unit", lambda c: c.__setitem__("INDCENT", np.zeros_like(c["INDCENT"])))
    return made


def _huge_declared(content: dict, path: Path) -> Path:
    """An uncompressed pvc-8 copy whose resp_train header declares 4 dimensions of 2**31 - 1."""
    scipy.io.savemat(str(path), content, do_compression=False)
    data = bytearray(path.read_bytes())
    name = data.index(b"resp_train\x00")  # the name's data follows its 8-byte tag and the dimensions
    dims = name - 8 - 16
    data[dims : dims + 16] = np.full(4, 2**31 - 1, "<i4").tobytes()
    path.write_bytes(bytes(data))
    return path


def attempt(reader: Callable[[Path], object], path: Path) -> Outcome:
    """Read ``path`` and classify: every file here is damaged, so reading it cleanly is silent acceptance."""
    started = time.monotonic()
    try:
        reader(path)
    except ClosedLoopError as error:
        message = str(error)
        if not one_line(message) or str(path) not in message:
            return timed("crash", f"unclear error: {message[:200]!r}", started, BOUND_S)
        return timed("refused", message, started, BOUND_S)
    except Exception as error:
        return timed("crash", f"{type(error).__name__}: {str(error)[:200]}", started, BOUND_S)
    return timed("silently_accepted", "read without complaint", started, BOUND_S)


def damaged_archives(folder: Path) -> dict[str, Path]:
    """Every damaged archive by name."""
    bases = base_archives(folder)
    made = {name: damaged_session(bases["session"], folder, name) for name in SESSION_DAMAGE}
    made.update(_byte_damage(bases["session"], folder))
    made.update(_pvc8_damage(bases["pvc8"], folder))
    folder_path = folder / "a_folder.h5"
    folder_path.mkdir(exist_ok=True)
    made["a folder"] = folder_path
    return made


def archive_cases(folder: Path) -> list[Case]:
    """One case per damaged archive and reader."""
    return [
        Case("archives", f"{name} ({reader_name})", lambda r=reader, p=path: attempt(r, p))
        for name, path in damaged_archives(folder).items()
        for reader_name, reader in READERS.items()
        if name not in UNUSED[reader_name]
    ]
