"""The example notebooks: their jupytext sources run top to bottom with their check cells, and the built
``.ipynb`` files a reader opens match the sources, carry the outputs a run gives today (times and ids aside),
show the plot inline, and hold no checks."""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
import build_notebooks  # noqa: E402  (examples/ is not a package)

SOURCES = [s.name for s in build_notebooks.sources()]


def test_there_are_five_notebooks_each_built_from_its_source() -> None:
    assert SOURCES == [
        "01_quickstart_langchain.py",
        "02_openai_agents_mcp.py",
        "03_human_approval.py",
        "04_rate_limits.py",
        "05_policy_authoring.py",
    ]
    assert sorted(p.name for p in EXAMPLES.glob("0*.ipynb")) == [s.replace(".py", ".ipynb") for s in SOURCES]
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "build_notebooks.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("name", SOURCES)
def test_the_built_notebook_is_what_a_reader_should_see(name: str) -> None:
    source = build_notebooks.read_source(EXAMPLES / name)
    assert any(build_notebooks.is_check(c) for c in source.cells), f"{name} checks nothing"
    nb = nbformat.read(EXAMPLES / name.replace(".py", ".ipynb"), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not any(build_notebooks.is_check(c) for c in nb.cells)
    # No assertion clutter in what a reader sees, no failed cell, and something shown for most cells.
    assert not [c.source for c in code if "assert " in c.source or "SCRIPTED" in c.source]
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert sum(1 for c in code if c.outputs) >= len(code) - 3
    # Nothing printed points into a temp folder, or into the machine that built the notebook.
    text = "".join(o.get("text", "") for c in code for o in c.outputs)
    assert "/tmp/" not in text
    assert str(EXAMPLES.parent) not in text
    assert "/.venv/" not in text


def test_the_audit_plot_is_inline() -> None:
    nb = nbformat.read(EXAMPLES / "05_policy_authoring.ipynb", as_version=4)
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1
    assert len(images[0]["data"]["image/png"]) > 5_000  # base64 of a real chart, not an empty figure


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts}


@pytest.mark.notebook
@pytest.mark.parametrize("name", SOURCES)
def test_notebook_runs_with_its_checks(name: str) -> None:
    before = files_under(EXAMPLES)
    nb = build_notebooks.read_source(EXAMPLES / name)
    try:
        build_notebooks.execute(nb)
    except CellExecutionError as exc:
        pytest.fail(f"{name}: a cell failed:\n{exc}")
    # The check cells ran (they are where a wrong output fails), and the notebook left no files behind.
    assert all(c.execution_count is not None for c in nb.cells if build_notebooks.is_check(c))
    assert files_under(EXAMPLES) == before
    # What the committed notebook shows is what this run shows (policy hashes, tables, payloads), times,
    # durations and random ids aside: a stale output fails here, and `make notebooks` rewrites it.
    fresh = build_notebooks.outputs_of(build_notebooks.reader_view(nb))
    if any("no redis-server here" in text for _, text in fresh):
        pytest.skip("no redis-server: this run took the memory:// path, the committed notebook the Redis one")
    committed = build_notebooks.outputs_of(nbformat.read(EXAMPLES / name.replace(".py", ".ipynb"), as_version=4))
    if fresh != committed:
        diff = difflib.unified_diff(
            [f"[{n}] {line}" for n, text in committed for line in text.splitlines()],
            [f"[{n}] {line}" for n, text in fresh for line in text.splitlines()],
            "committed",
            "this run",
            lineterm="",
            n=1,
        )
        pytest.fail(f"{name}: the committed outputs are stale; rebuild with: make notebooks\n" + "\n".join(diff))
