"""A lazy package's ``TYPE_CHECKING`` imports (what mypy reads) name exactly its ``_EXPORTS``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "closedloop"


def _lazy_packages() -> dict[str, ast.Module]:
    trees = {}
    for path in sorted(ROOT.rglob("__init__.py")):
        text = path.read_text(encoding="utf-8")
        if "lazy_exports(" in text:
            trees[str(path.relative_to(ROOT.parent))] = ast.parse(text)
    return trees


def _exports(tree: ast.Module) -> dict[str, str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("no _EXPORTS")


def _typed(tree: ast.Module) -> dict[str, str]:
    names = {}
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.module
                for alias in statement.names:
                    assert alias.asname == alias.name, f"{alias.name}: re-export it as itself"
                    names[alias.name] = statement.module
    return names


def test_lazy_packages_type_their_exports():
    packages = _lazy_packages()
    assert packages
    for path, tree in packages.items():
        assert _typed(tree) == _exports(tree), f"{path}: the TYPE_CHECKING imports differ from _EXPORTS"
