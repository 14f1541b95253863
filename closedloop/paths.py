"""Where the files shipped beside the package (rigs/, protocols/, sim/) are found."""

from __future__ import annotations

from pathlib import Path

#: The checkout the package was installed from (editable installs), which holds rigs/, sim/, ...
REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def shipped_file(relative: str | Path) -> Path:
    """Resolve a shipped file such as ``sim/default.yaml``.

    A path that exists relative to the working directory wins (so users can keep their
    own copies); otherwise the copy in the closedloop checkout is used.  If neither
    exists the working-directory path is returned, so the error names what was looked for.
    """
    relative = Path(relative)
    if relative.is_absolute() or relative.exists():
        return relative
    candidate = REPOSITORY_ROOT / relative
    return candidate if candidate.exists() else relative
