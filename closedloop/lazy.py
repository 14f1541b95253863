"""Package names imported when first used, so importing one module of a package is cheap.

A package ``__init__`` lists its public names and the module each lives in; importing
``closedloop.runner.journal`` then loads the journal, not the whole loop (acquisition,
presenter, simulator) that other names of the package need.

    __getattr__, __dir__ = lazy_exports(__name__, {"Runner": "closedloop.runner.runner"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` for ``package`` that import ``exports[name]`` on first use."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
