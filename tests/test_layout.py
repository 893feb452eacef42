"""The import picture of ``src/mcp_guard`` has no circle (issue 11): no module imports a module that imports it
back. Read from the source: every import a module runs, at module level (under ``try``/``if`` too) or lazily inside
a function; ``if TYPE_CHECKING:`` blocks are never run and do not count. The one lazy back-edge allowed is named
in ``LAZY_BACK_EDGES`` with why."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mcp_guard"

# ``mcp-guard inbox`` (in _inbox_web) builds the Inbox whose ``Inbox.app()`` serves _inbox_web's page: the command
# and the page live together so that ``import mcp_guard`` loads no web framework.
LAZY_BACK_EDGES = {("mcp_guard._inbox_web", "mcp_guard._inbox")}


def _runtime_imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            pending += node.orelse  # the block itself never runs
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        pending += ast.iter_child_nodes(node)
    return {name for name in found if name == "mcp_guard" or name.startswith("mcp_guard.")}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        parts = ("mcp_guard", *path.relative_to(SRC).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        imports = _runtime_imports(ast.parse(path.read_text(encoding="utf-8")))
        graph[name] = {dep for dep in imports if (name, dep) not in LAZY_BACK_EDGES}
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
    source = "if TYPE_CHECKING:\n    import mcp_guard._x\nimport mcp_guard._y\ndef f():\n    from mcp_guard import _z"
    assert _runtime_imports(ast.parse(source)) == {"mcp_guard._y", "mcp_guard"}
