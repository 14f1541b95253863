"""Package layering: no import cycle between the modules of one package.

Counts every ``from closedloop… import`` of a module, at the top or inside a function
(an import moved into a function to dodge a cycle is still a cycle), ``TYPE_CHECKING``
blocks included.  A package's ``__init__`` is left out: it only names what its modules hold.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "closedloop"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] != "__init__":
            modules[".".join(parts)] = path
    return modules


def _package(module: str) -> str:
    return module.rsplit(".", 1)[0]


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("closedloop"):
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
                targets.update(name for name in names if name in modules and name != module)
        graph[module] = {t for t in targets if _package(t) == _package(module)}
    return graph


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    stack = [(start, [start])]
    seen = set()
    while stack:
        module, path = stack.pop()
        for target in graph[module]:
            if target == start:
                return path + [start]
            if target not in seen:
                seen.add(target)
                stack.append((target, path + [target]))
    return None


def test_no_import_cycle_inside_a_package():
    graph = _imports(_modules())
    cycles = {" -> ".join(cycle) for module in graph if (cycle := _cycle_from(module, graph))}
    assert not cycles, "import cycles inside packages:\n" + "\n".join(sorted(cycles))


def test_the_check_sees_a_cycle():
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": set()}
    assert _cycle_from("p.a", graph) == ["p.a", "p.b", "p.c", "p.a"] and _cycle_from("p.d", graph) is None
