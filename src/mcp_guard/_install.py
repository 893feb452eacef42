"""How this copy of mcp-guard was installed, so that an "install the extra" hint is a command that works.

mcp-guard is installed from a checkout (``pip install -e .``), from a URL (``pip install 'mcp-guard @ git+...'``),
or, once it is published, from an index. ``pip install 'mcp-guard[yaml]'`` is right only in the last case: for
the others it would fetch whatever an index calls mcp-guard (not this project, today). pip records a direct
install in the distribution's ``direct_url.json`` (PEP 610), and that record says which command adds an extra
to this same install:

* a checkout, editable: ``pip install -e '/path/to/mcp-guard[yaml]'``;
* a local folder or archive, or a URL: ``pip install 'mcp-guard[yaml] @ file:///...'`` (``git+https://...@commit``
  for a VCS install, so the extra is added to the same commit);
* no record (an index), or no installed distribution at all but a source tree around the package (run from a
  checkout with ``PYTHONPATH=src``): the index form, or the checkout's editable form.

Only the standard library is imported here: the hint is needed exactly when something is missing.
"""

from __future__ import annotations

import functools
import json
import shlex
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

DIST = "mcp-guard"
_PACKAGE_DIR = Path(__file__).resolve().parent


def install_hint(extra: str) -> str:
    """The ``pip install`` command that adds ``extra`` to this installation of mcp-guard."""
    return pip_command(_origin(), extra)


def pip_command(origin: dict[str, Any] | Path | None, extra: str) -> str:
    """``pip install`` for ``extra``, given a PEP 610 ``direct_url.json`` record, a checkout folder, or None.

    None means an index install (or nothing known): the plain ``mcp-guard[extra]`` requirement.
    """
    if isinstance(origin, Path):
        return f"pip install -e {shlex.quote(f'{origin}[{extra}]')}"
    if origin is None or not isinstance(origin.get("url"), str):
        return f"pip install {shlex.quote(f'{DIST}[{extra}]')}"
    url: str = origin["url"]
    dir_info = origin.get("dir_info")
    if isinstance(dir_info, dict) and dir_info.get("editable") and url.startswith("file:"):
        return pip_command(_file_path(url), extra)
    vcs = origin.get("vcs_info")
    if isinstance(vcs, dict) and isinstance(vcs.get("vcs"), str):
        revision = vcs.get("commit_id") or vcs.get("requested_revision")
        url = f"{vcs['vcs']}+{url}" + (f"@{revision}" if revision else "")
    return f"pip install {shlex.quote(f'{DIST}[{extra}] @ {url}')}"


@functools.lru_cache(maxsize=1)
def _origin() -> dict[str, Any] | Path | None:
    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        return _checkout()
    if not _is_this_package(dist):
        # Another project's distribution is called mcp-guard, or an old install lingers beside a checkout on
        # sys.path: its record says nothing about the code that is running.
        return _checkout()
    try:
        text = dist.read_text("direct_url.json")
        record = json.loads(text) if text else None
    except (OSError, ValueError):
        record = None
    return record if isinstance(record, dict) else None


def _is_this_package(dist: metadata.Distribution) -> bool:
    """True when ``dist`` is the install this module was imported from."""
    text = dist.read_text("direct_url.json")
    if text:
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if isinstance(record, dict) and (record.get("dir_info") or {}).get("editable"):
            url = record.get("url")
            if isinstance(url, str) and url.startswith("file:"):
                return _PACKAGE_DIR.is_relative_to(_file_path(url).resolve())
    files = dist.files or []
    for file in files:
        if file.name == "_install.py" and file.parent.name == "mcp_guard":
            return Path(str(dist.locate_file(file))).resolve() == Path(__file__).resolve()
    return False


def _checkout() -> Path | None:
    """The source tree around the running package (``src/mcp_guard`` in a folder whose pyproject names us)."""
    for folder in _PACKAGE_DIR.parents[:3]:
        pyproject = folder / "pyproject.toml"
        try:
            text = pyproject.read_text(encoding="utf-8")
        except OSError:
            continue
        if f'name = "{DIST}"' in text:
            return folder
    return None


def _file_path(url: str) -> Path:
    return Path(url2pathname(urlparse(url).path))


__all__ = ["install_hint", "pip_command"]
