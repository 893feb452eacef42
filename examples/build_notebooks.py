"""Build the example notebooks: execute each jupytext source (``examples/0*.py``) and write its ``.ipynb``.

The ``.py`` files are the sources: plain Python in jupytext's percent format (``# %%`` starts a cell), so ruff
sees them and a diff reads as code. The ``.ipynb`` files are what a reader opens: built from the sources,
executed, committed with their outputs. Cells tagged ``remove-cell`` are the notebook's own checks: they run
(here and in ``tests/test_notebooks.py``) but are left out of the ``.ipynb``.

    python examples/build_notebooks.py            # rebuild every notebook (or: make notebooks)
    python examples/build_notebooks.py 05         # only those whose name starts with 05
    python examples/build_notebooks.py --check    # exit 1 if a built notebook no longer matches its source

The outputs are those of the scripted models: the build ignores ``OPENAI_API_KEY``, so a rebuild is the same
run everyone else gets.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHECK_TAG = "remove-cell"
CELL_TIMEOUT_S = 120


def sources() -> list[Path]:
    return sorted(HERE.glob("0*.py"))


def built_path(source: Path) -> Path:
    return source.with_suffix(".ipynb")


def read_source(source: Path) -> Any:
    """The notebook a source describes, checks included, not executed."""
    import jupytext

    return jupytext.read(source, fmt="py:percent")


def is_check(cell: Any) -> bool:
    return CHECK_TAG in cell.get("metadata", {}).get("tags", [])


@contextmanager
def _scripted_environment() -> Iterator[None]:
    """The kernel inherits this process's environment: run it as the scripted, Jupyter-like run.

    No OPENAI_API_KEY (the committed outputs and the checks follow the scripts). No PYTEST_CURRENT_TEST: under
    pytest, ipykernel does not capture file descriptors, so sys.stderr in the kernel has no fileno() and an MCP
    stdio client cannot hand it to a server process; in Jupyter it does.
    """
    saved = {k: os.environ.pop(k) for k in ("OPENAI_API_KEY", "PYTEST_CURRENT_TEST") if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def execute(nb: Any) -> Any:
    """Run every cell in a fresh kernel whose working folder is ``examples/`` (as when opened from there)."""
    from nbclient import NotebookClient

    with _scripted_environment():
        NotebookClient(
            nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
        ).execute()
    return nb


def reader_view(nb: Any) -> Any:
    """The notebook without its check cells; execution counts 1, 2, 3... as a straight run shows."""
    view = copy.deepcopy(nb)
    view.cells = [cell for cell in view.cells if not is_check(cell)]
    count = 0
    for index, cell in enumerate(view.cells):
        cell.id = f"cell-{index:02d}"  # stable ids: a rebuild changes outputs, not every cell's id
        if cell.cell_type != "code":
            continue
        count += 1
        cell.execution_count = count
        for output in cell.outputs:
            if "execution_count" in output:
                output["execution_count"] = count
        cell.metadata.pop("execution", None)
    view.metadata.pop("jupytext", None)
    view.metadata["language_info"] = {"name": "python"}
    return view


def build(source: Path) -> Path:
    import nbformat

    nb = reader_view(execute(read_source(source)))
    nbformat.validate(nb)
    path = built_path(source)
    nbformat.write(nb, path)  # type: ignore[no-untyped-call]
    return path


def stale(source: Path) -> str | None:
    """Why the built notebook does not match its source (None when it does)."""
    import nbformat

    path = built_path(source)
    if not path.exists():
        return "not built"
    built = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    want = [(c.cell_type, c.source) for c in reader_view(read_source(source)).cells]
    have = [(c.cell_type, c.source) for c in built.cells]
    if have != want:
        return "cells differ from the source"
    if any(c.cell_type == "code" and c.execution_count is None for c in built.cells):
        return "not executed"
    return None


def main(argv: list[str]) -> int:
    check = "--check" in argv
    prefixes = [a for a in argv if not a.startswith("--")]
    chosen = [s for s in sources() if not prefixes or s.name.startswith(tuple(prefixes))]
    if check:
        problems = [f"{built_path(s).name}: {why}" for s in chosen if (why := stale(s))]
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("rebuild with: make notebooks", file=sys.stderr)
        return 1 if problems else 0
    for source in chosen:
        print(f"==> executing {source.relative_to(HERE.parent)}", flush=True)
        print(f"    wrote {build(source).relative_to(HERE.parent)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
