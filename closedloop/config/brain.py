"""The ``acquisition.brain:`` section of a simulated rig: what the simulated array's neurons are.

Three kinds, told apart by ``kind``:

``population``
    A simulated V1 population from a scenario file (``sim/*.yaml``), optionally with
    another unit count or seed.
``callable``
    Any Python object that maps (n, H, W) images in [0, 1] to (n, n_units) rates in
    Hz, named ``package.module:callable`` (a class is instantiated with no
    arguments); ``import_path`` lists folders (relative to the rig file) to import from.
``twin``
    A digital twin: a fitted model checkpoint (``model.pt``) and the archive it was
    fitted on (its noise and spontaneous rates).

Relative paths are taken from the folder of the rig file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from closedloop.config.schema import Where, path_setting, setting

_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


@dataclass(frozen=True)
class PopulationBrain:
    """A simulated population from a scenario file."""

    kind: Literal["population"]
    scenario: str = path_setting("sim/default.yaml")
    n_units: int | None = setting(None, ge=1)
    seed: int | None = None


@dataclass(frozen=True)
class CallableBrain:
    """``package.module:callable``, imported (from ``import_path`` first) and checked on probe images."""

    kind: Literal["callable"]
    target: str = setting()
    import_path: tuple[str, ...] = path_setting((), folder=True)

    def check(self, where: Where) -> None:
        if not _TARGET.fullmatch(self.target):
            raise where.error(
                "target", f"write it as package.module:callable (e.g. mylab.v1:Twin), got {self.target!r}"
            )


@dataclass(frozen=True)
class TwinBrain:
    """A digital twin: a fitted checkpoint and the archive it was fitted on."""

    kind: Literal["twin"]
    checkpoint: str = path_setting()
    archive: str = path_setting()


BrainSettings = PopulationBrain | CallableBrain | TwinBrain
