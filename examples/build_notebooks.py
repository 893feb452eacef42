"""Build the example notebooks: execute each jupytext source (``examples/0*.py``) and write its ``.ipynb``.

The ``.py`` files are the sources: plain Python in jupytext's percent format (``# %%`` starts a cell), so ruff
sees them and a diff reads as code. The ``.ipynb`` files are what a reader opens: built from the sources,
executed, committed with their outputs. Cells tagged ``remove-cell`` are the notebook's own checks: they run
(here and in ``tests/examples/test_notebooks.py``) but are left out of the ``.ipynb``.

    python examples/build_notebooks.py            # rebuild every notebook (or: make notebooks)
    python examples/build_notebooks.py 05         # only those whose name starts with 05
    python examples/build_notebooks.py --check    # exit 1 if a built notebook no longer matches its source

The outputs are those of the scripted models: the build ignores ``OPENAI_API_KEY``, so a rebuild is the same
run everyone else gets.
"""

from __future__ import annotations

import copy
import os
import re
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


# What legitimately changes from one run to the next, and what it is replaced by before outputs are compared.
# Everything else, policy hashes and table contents included, must match the committed notebook exactly.
_VOLATILE = [
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z| UTC|[+-]\d\d:\d\d)?"), "<time>"),
    (re.compile(r"\b\d\d:\d\d(?::\d\d)?\b"), "<time>"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"(latency_ms|retry_after_s|next_free_in_s|next_free_at)(['\"]?:\s*)-?[0-9.e+-]+"), r"\1\2<n>"),
    (re.compile(r"\b\d+(?:\.\d+)?(?: |\xa0)?(?:ms|s|µs)\b"), "<duration>"),  # waits, latencies, timings
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),  # a free port picked per run
    (re.compile(r"(\"tx\\?\":\s*\\?\")[0-9a-f]+"), r"\1<tx>"),  # the demo exchange's random transaction ids
    (re.compile(r"listen-key-\d+"), "listen-key-<n>"),  # and its random listen keys
    (re.compile(r"worker-[ab]"), "worker-<x>"),  # two workers race for one budget: either may win
    (re.compile(r"saved state: \d+ characters"), "saved state: <n> characters"),  # holds ids and times
    (re.compile(r" at 0x[0-9a-f]+>"), " at <address>>"),
    (re.compile(r"[─━═┄]+"), "─"),  # table rules and padding follow the widest cell, which may be a duration
    (re.compile(r"[ \t]+"), " "),
]


def _normalised(text: str) -> str:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return "\n".join(line.rstrip() for line in text.splitlines())


def outputs_of(nb: Any) -> list[tuple[int, str]]:
    """(code cell number, what it shows) for every output of a notebook, with what changes run to run replaced
    (times, durations, ids, ports; see ``_VOLATILE``). An image counts as present, not pixel by pixel."""
    shown: list[tuple[int, str]] = []
    cells = [c for c in nb.cells if c.cell_type == "code"]
    for number, cell in enumerate(cells, 1):
        stream: list[str] = []  # a print may arrive in several stream messages, cut differently each run
        for output in [*cell.outputs, {"output_type": "end"}]:
            if output.get("output_type") == "stream":
                stream.append(str(output.get("text", "")))
                continue
            if stream:
                shown.append((number, _normalised("".join(stream))))
                stream = []
            if "data" in output:
                data = output["data"]
                if "image/png" in data:
                    shown.append((number, "<image/png>"))
                elif "text/plain" in data:
                    shown.append((number, _normalised(str(data["text/plain"]))))
            elif output.get("output_type") == "error":
                shown.append((number, f"error: {output.get('ename')}: {output.get('evalue')}"))
    return shown


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
