"""Small helpers for the words of messages a user reads."""

from __future__ import annotations


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """``counted(1, "thread") == "1 thread"``, ``counted(4, "thread") == "4 threads"``."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"
