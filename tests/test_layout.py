"""The import picture of ``src/mcp_guard``: the layers read bottom-up in ``ls src/mcp_guard`` and imports only go
down them, and no module imports a module that imports it back.

Read from the source: every import a module runs, at module level (under ``try``/``if`` too) or lazily inside a
function. ``if TYPE_CHECKING:`` blocks never run: they do not count for circles, but they must go down the layers
too, except the one edge named in ``TYPE_ONLY_UP`` (with why).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mcp_guard"

#: The packages, bottom-up: a module may import its own layer and the ones below, never one above.
LAYERS: list[set[str]] = [
    {"_errors", "_compat", "_version", "_install"},  # the base: errors, framework shims, install hints
    {"_policy"},  # the pure core: a document in, a Decision out
    {"_calls"},  # one call, a human's answer, the steps' I/O
    {"_stores"},  # rate-limit, grant and session-memory backends
    {"_audit"},  # events, sinks, metrics, the audit summary
    {"_guard"},  # the runtime
    {"_inbox"},  # the approval inbox
    {"_proxy"},  # the MCP proxy
    {"integrations"},  # LangChain and the Agents SDK
    {"_cli"},  # the command line
    {"__init__", "__main__", "testing"},  # the public surface
]

#: Type-only imports that go up a layer. The exception tree names the Decision a PolicyViolation carries, for
#: its readers' types (as httpx's _exceptions names its models); at run time it holds whatever it was given.
TYPE_ONLY_UP = {("mcp_guard._errors", "mcp_guard._policy.decision")}


def _module_name(path: Path) -> str:
    parts = ("mcp_guard", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p) for p in SRC.rglob("*.py")}


def _imports(tree: ast.AST, *, type_only: bool) -> set[str]:
    """The mcp_guard modules ``tree`` imports at run time (``type_only``: only those under TYPE_CHECKING)."""
    found: set[str] = set()
    pending: list[tuple[ast.AST, bool]] = [(tree, False)]
    while pending:
        node, typing_block = pending.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            pending += [(n, True) for n in node.body] + [(n, typing_block) for n in node.orelse]
            continue
        if typing_block == type_only:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:  # `from pkg import module` imports the module
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in MODULES else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        pending += [(child, typing_block) for child in ast.iter_child_nodes(node)]
    return {name for name in found if name in MODULES}


def _graph(*, type_only: bool = False) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        name = _module_name(path)
        imports = _imports(ast.parse(path.read_text(encoding="utf-8")), type_only=type_only)
        graph[name] = {dep for dep in imports if dep != name}
    return graph


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


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


def test_the_top_level_shows_the_layers() -> None:
    listed = {p.stem if p.is_file() else p.name for p in SRC.iterdir() if not p.name.startswith((".", "__pycache__"))}
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == {"_policy", "_calls", "_stores", "_audit", "_guard", "_inbox", "_proxy", "integrations", "_cli"}
    modules = {p.stem for p in SRC.glob("*.py")}
    assert modules == {"__init__", "__main__", "_errors", "_compat", "_version", "_install", "testing"}
    assert listed >= packages | modules


def test_imports_only_go_down_the_layers() -> None:
    upward = []
    for graph, allowed in ((_graph(), set()), (_graph(type_only=True), TYPE_ONLY_UP)):
        for module, deps in sorted(graph.items()):
            for dep in sorted(deps):
                if _layer(dep) > _layer(module) and (module, dep) not in allowed:
                    upward.append(f"{module} -> {dep}")
    assert upward == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = _graph()
    assert len(graph) > 60  # the whole package was read
    assert _circles(graph) == []


def test_the_checks_find_a_circle_and_read_imports_as_python_runs_them() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    source = (
        "if TYPE_CHECKING:\n    import mcp_guard._errors\nimport mcp_guard._compat\n"
        "def f():\n    from mcp_guard._policy import policy"
    )
    assert _imports(ast.parse(source), type_only=False) == {"mcp_guard._compat", "mcp_guard._policy.policy"}
    assert _imports(ast.parse(source), type_only=True) == {"mcp_guard._errors"}
    assert _layer("mcp_guard._cli.main") > _layer("mcp_guard._guard.guard") > _layer("mcp_guard._policy.policy")


def test_the_inbox_and_its_page_import_one_way() -> None:
    # Within the inbox, type-only imports count too: the page (web) knows the inbox, the inbox never the page.
    run, typed = _graph(), _graph(type_only=True)
    inbox = {
        module: {dep for dep in run[module] | typed[module] if dep.startswith("mcp_guard._inbox.")}
        for module in run
        if module.startswith("mcp_guard._inbox.")
    }
    assert {"mcp_guard._inbox.inbox", "mcp_guard._inbox.web", "mcp_guard._inbox.stores"} <= set(inbox)
    assert _circles(inbox) == []
    assert [m for m, deps in sorted(inbox.items()) if "mcp_guard._inbox.web" in deps] == []
