"""The import picture of ``src/mcp_guard`` has no circle (issue 11): no module imports, when it is imported, a
module that imports it back. Read from the source: module-level imports, including those under ``try``/``if``,
except ``if TYPE_CHECKING:`` blocks (never run). Imports inside functions are lazy on purpose and not counted."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mcp_guard"


def _runtime_imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                pending += node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody
            for handler in node.handlers:
                pending += handler.body
    return {name for name in found if name == "mcp_guard" or name.startswith("mcp_guard.")}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        parts = ("mcp_guard", *path.relative_to(SRC).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = _runtime_imports(ast.parse(path.read_text(encoding="utf-8")))
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if dep == module or dep not in graph:
                continue
            if state.get(dep) == 1:
                found.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = _graph()
    assert len(graph) > 40  # the whole package was read
    assert _circles(graph) == []


def test_the_check_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import mcp_guard._x\nimport mcp_guard._y"
    tree = ast.parse(source)
    assert _runtime_imports(tree) == {"mcp_guard._y"}
