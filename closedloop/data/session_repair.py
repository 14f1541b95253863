"""Copy the intact, committed part of a session into a new file (``closedloop repair``).

For a session whose writer was killed (HDF5 then refuses plain readers until ``h5clear -s``
is run), whose last block was cut short, or whose committed blocks hold data that never
reached the disk (an older writer on a full disk): the new file holds every committed
block before the first damaged one, the stimuli before the first damaged one, and the
data those blocks vouch for.  It is written under a temporary name, synced and renamed,
closed cleanly (plain ``h5py.File(path, "r")`` opens it), and the source is never changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from closedloop.data import session_lock
from closedloop.data.session_format import committed_lengths, table_datasets, validate
from closedloop.data.session_integrity import Integrity, check_committed
from closedloop.data.session_reader import SessionReader
from closedloop.data.session_recovery import copy_rows, open_read_only
from closedloop.data.session_space import storage_error
from closedloop.errors import DataFileError

_DAMAGE = (OSError, KeyError, ValueError, RuntimeError, TypeError)


@dataclass(frozen=True)
class RepairReport:
    """What `repair_session` kept and dropped."""

    source: str
    out: str
    integrity: Integrity
    uncommitted_rows: dict[str, int]  # rows per table after the committed part (a block cut short): dropped

    @property
    def kept_blocks(self) -> int:
        return self.integrity.good_blocks

    @property
    def kept_stimuli(self) -> int:
        return self.integrity.good_stimuli

    def text(self) -> str:
        i = self.integrity
        lines = [
            (
                f"{self.out}: {i.good_blocks} of {i.n_blocks} committed blocks and {i.good_stimuli} of "
                f"{i.n_stimuli} stimuli copied from {self.source}"
            )
        ]
        if self.uncommitted_rows:
            rows = ", ".join(f"{n} {table}" for table, n in sorted(self.uncommitted_rows.items()))
            lines.append(f"  dropped what was never committed (a block or stimuli cut short): rows of {rows}")
        lines.extend(f"  dropped: {problem}" for problem in i.problems)
        return "\n".join(lines)


def repair_session(source: str | Path, out: str | Path) -> RepairReport:
    """Write ``out`` with the intact committed part of session ``source``.

    Raises
    ------
    DataFileError
        If ``source`` is being written by a live process, or is too damaged for HDF5 to
        read (then nothing can be copied; the message says why).
    """
    source, out = Path(source), Path(out)
    lock = session_lock.acquire(source)  # refuses while a live writer has it
    try:
        with SessionReader(source, check_values=False) as reader:
            integrity = check_committed(reader)
        file = open_read_only(source)
        try:
            validate(file, source)
            lengths = committed_lengths(file)
            extra: dict[str, int] = {}
            for table, dataset in table_datasets(file):
                if dataset.shape[0] > lengths[table]:
                    extra[table] = max(extra.get(table, 0), dataset.shape[0] - lengths[table])
            attrs = dict(file.attrs)
            metadata = json.loads(attrs.get("metadata_json", "{}"))
            metadata["repaired"] = {
                "from": source.name,
                "blocks_kept": integrity.good_blocks,
                "blocks_committed": integrity.n_blocks,
                "dropped": integrity.problems,
            }
            attrs["metadata_json"] = json.dumps(metadata, sort_keys=True)
        except DataFileError:
            file.close()
            raise
        except (*_DAMAGE, json.JSONDecodeError) as error:
            file.close()
            raise DataFileError(source, f"cannot be repaired: the session file is damaged ({error})") from None
        try:
            copy_rows(file, out, integrity.good_blocks, integrity.good_stimuli, attrs)
        except Exception as error:  # noqa: BLE001 - h5py reports a failed write as OSError or RuntimeError
            raise storage_error(out, "the repaired copy", error, f"{source} is unchanged") from None
        finally:
            file.close()
    finally:
        session_lock.release(source, lock)
    return RepairReport(str(source), str(out), integrity, extra)
