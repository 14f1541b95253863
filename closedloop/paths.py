"""Where the files shipped with closedloop (rigs/, protocols/, sim/) are, and how a path
written inside a settings file is resolved.

In a checkout (or an editable install) the shipped files are the repository's own
``rigs/``, ``protocols/`` and ``sim/`` folders.  An installed package carries copies of
them under ``closedloop/shipped/`` (the build copies every ``*.yaml`` of those folders;
see ``setup.py``), in the same layout, so relative paths between them keep working.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The checkout the package was installed from (editable installs), which holds rigs/, sim/, ...
REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
#: The copies an installed (non-editable) package carries.
PACKAGED_ROOT = Path(__file__).resolve().parent / "shipped"
#: The folders whose YAML files are shipped.
SHIPPED_FOLDERS = ("rigs", "protocols", "sim")


def shipped_root() -> Path:
    """The folder holding ``rigs/``, ``protocols/`` and ``sim/``: the checkout, else the package's copy."""
    if (REPOSITORY_ROOT / "rigs").is_dir() and (REPOSITORY_ROOT / "sim").is_dir():
        return REPOSITORY_ROOT
    return PACKAGED_ROOT


def shipped_file(relative: str | Path) -> Path:
    """Resolve a shipped file such as ``sim/default.yaml``.

    A path that exists relative to the working directory wins (so users can keep their
    own copies); otherwise the copy shipped with closedloop is used.  If neither exists
    the working-directory path is returned, so the error names what was looked for.
    """
    relative = Path(relative)
    if relative.is_absolute() or relative.exists():
        return relative
    candidate = shipped_root() / relative
    return candidate if candidate.exists() else relative


def resolve_in_file(text: str, naming_file: str | Path) -> Path:
    """A path written inside ``naming_file``, resolved against that file's folder.

    ``~`` is expanded; an absolute path is kept.  A relative path is looked up next to
    the file that names it; if nothing is there, a file shipped with closedloop under
    that name (``sim/default.yaml``) is used, so shipped names work from any rig.  When
    neither exists the path next to the naming file is returned (for the error message).
    """
    path = Path(os.path.expanduser(text))
    if path.is_absolute():
        return path
    beside = Path(os.path.normpath(Path(naming_file).parent / path))
    if beside.exists():
        return beside
    shipped = shipped_root() / path
    return shipped if shipped.exists() else beside
