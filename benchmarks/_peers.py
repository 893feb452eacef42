"""The pass-through MCP proxies ``proxy_overhead.py --peers`` measures beside ours, each in its own environment.

Every peer is installed on first use under ``.bench-venvs/`` (git-ignored), pinned, from its registry (PyPI or
npm) and nothing else, and reused afterwards (a ``.installed`` stamp marks a finished install). A peer whose
environment cannot be made is skipped with one line saying why; the run goes on without it.

- ``mcp-proxy`` from PyPI (server mode: streamable HTTP at ``/mcp`` in front of a stdio server);
- ``mcp-proxy`` from npm (the same, ``--server stream``);
- ``bonanza-mcp-guard`` from PyPI (a stdio gateway; configured with a deny list, a rate limit and its JSONL
  audit log, the nearest it has to our policy).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENVS = ROOT / ".bench-venvs"

PYPI_MCP_PROXY = "mcp-proxy==0.13.0"
NPM_MCP_PROXY = "mcp-proxy@6.7.19"
BONANZA = "bonanza-mcp-guard[yaml]==0.1.4"


@dataclass
class Peer:
    name: str
    transport: str  # "stdio" or "http"
    argv: list[str]  # for http: the command line without the port (see command)

    def command(self, port: int = 0) -> list[str]:
        """The peer's command line. Run without ``PYTHONPATH`` (``paired.py`` sets it to one side's ``src``, whose
        ``mcp_guard`` would shadow bonanza-mcp-guard's own package of that name); an HTTP peer's stdout goes to
        stderr, so that with ``--json`` stdout carries only the figures (``exec``: the same process)."""
        argv = [part.replace("{port}", str(port)) for part in self.argv]
        redirect = " 1>&2" if self.transport == "http" else ""
        return ["sh", "-c", f'unset PYTHONPATH; exec "$@"{redirect}', "sh", *argv]


def _run(argv: Sequence[str], log: Path) -> bool:
    with log.open("w") as out:
        return subprocess.run(list(argv), stdout=out, stderr=subprocess.STDOUT, check=False).returncode == 0


def _venv(name: str, requirement: str) -> tuple[Path | None, str]:
    """A venv under .bench-venvs/NAME with ``requirement`` installed: (its bin folder, "") or (None, why not)."""
    folder = VENVS / name
    stamp = folder / ".installed"
    if stamp.exists():
        return folder / "bin", ""
    print(f"==> creating {folder.relative_to(ROOT)} with {requirement} (once)", file=sys.stderr)
    VENVS.mkdir(exist_ok=True)
    log = VENVS / f"{name}.log"
    if not _run([sys.executable, "-m", "venv", "--clear", str(folder)], log):
        return None, f"python -m venv failed (see {log.relative_to(ROOT)})"
    if not _run([str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", requirement], log):
        return None, f"pip install {requirement} failed (see {log.relative_to(ROOT)})"
    stamp.touch()
    return folder / "bin", ""


def _npm(name: str, package: str) -> tuple[Path | None, str]:
    folder = VENVS / name
    stamp = folder / ".installed"
    if stamp.exists():
        return folder / "node_modules" / ".bin", ""
    if shutil.which("npm") is None or shutil.which("node") is None:
        return None, "node/npm are not installed"
    print(f"==> installing {package} into {folder.relative_to(ROOT)} (once)", file=sys.stderr)
    folder.mkdir(parents=True, exist_ok=True)
    log = VENVS / f"{name}.log"
    if not _run(["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund", package], log):
        return None, f"npm install {package} failed (see {log.relative_to(ROOT)})"
    stamp.touch()
    return folder / "node_modules" / ".bin", ""


def peers(upstream: Sequence[str], work: Path) -> tuple[list[Peer], list[str]]:
    """The peers that could be made, in front of ``upstream`` (a stdio command), and a line per one skipped."""
    found: list[Peer] = []
    skipped: list[str] = []

    bin_dir, why = _venv("pypi-mcp-proxy", PYPI_MCP_PROXY)
    if bin_dir is None:
        skipped.append(f"skipped mcp-proxy (PyPI): {why}")
    else:
        argv = [str(bin_dir / "mcp-proxy"), "--host", "127.0.0.1", "--port", "{port}", "--pass-environment"]
        found.append(Peer("mcp-proxy (PyPI)", "http", [*argv, "--log-level", "WARNING", "--", *upstream]))

    bin_dir, why = _npm("npm-mcp-proxy", NPM_MCP_PROXY)
    if bin_dir is None:
        skipped.append(f"skipped mcp-proxy (npm): {why}")
    else:
        argv = [str(bin_dir / "mcp-proxy"), "--host", "127.0.0.1", "--port", "{port}", "--server", "stream"]
        found.append(Peer("mcp-proxy (npm)", "http", [*argv, "--", *upstream]))

    bin_dir, why = _venv("bonanza-mcp-guard", BONANZA)
    if bin_dir is None:
        skipped.append(f"skipped bonanza-mcp-guard: {why}")
    elif any(" " in part for part in upstream):
        skipped.append("skipped bonanza-mcp-guard: its config splits the server command on spaces")
    else:
        config = work / "bonanza.yaml"  # JSON is YAML
        config.write_text(
            json.dumps(
                {
                    "servers": {"notes": {"command": " ".join(upstream)}},
                    "policies": {
                        "tool_denylist": ["purge"],
                        "rate_limit": {"requests_per_minute": 1_000_000},
                        "audit_log": str(work / "bonanza-audit.jsonl"),
                    },
                }
            )
        )
        found.append(Peer("bonanza-mcp-guard", "stdio", [str(bin_dir / "mcp-guard"), "serve", "--config", str(config)]))
    return found, skipped
