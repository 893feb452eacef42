"""Shared pieces of the proxy tests: the proxy's command line, HTTP processes on free ports, process checks.

Everything here starts real processes: the ``mcp-guard proxy`` command (this venv's interpreter), the
recording server (``recording_server.py``) and, where installed, ``@modelcontextprotocol/server-filesystem``
from npm. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
# The CLI without relying on the console script being on PATH.
PROXY = [sys.executable, "-c", "import sys; from mcp_guard._cli import main; sys.exit(main())", "proxy"]


def proxy_command(policy: Path, *options: str, upstream: Sequence[str] = ()) -> list[str]:
    """``mcp-guard proxy --policy POLICY OPTIONS... [-- UPSTREAM...]`` as an argv list."""
    argv = [*PROXY, "--policy", str(policy), *options]
    return [*argv, "--", *upstream] if upstream else argv


def write_policy(path: Path, policy: dict[str, Any]) -> Path:
    path.write_text(json.dumps(policy), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def http_process(argv: Sequence[str], port: int, *, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``argv`` (a server listening on ``port``) until the block ends; yields its ``/mcp`` URL."""
    proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not _accepts(port):
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                raise RuntimeError(f"{argv[:4]} exited with {proc.returncode}: {err}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv[:4]} did not listen on {port} within 30 s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie waiting to be reaped counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def filesystem_server() -> list[str]:
    """The command line of the npm ``@modelcontextprotocol/server-filesystem`` (without its directory argument).

    Skips the test when node or the package is missing, or fails when ``MCP_GUARD_REQUIRE_NPM=1`` (CI, where
    ``.ci/run`` installs it).
    """
    prefix = Path(os.environ.get("MCP_GUARD_NPM_PREFIX", REPO / ".mcp-servers"))
    entry = prefix / "node_modules" / "@modelcontextprotocol" / "server-filesystem" / "dist" / "index.js"
    node = shutil.which("node")
    if node is None or not entry.exists():
        message = (
            f"@modelcontextprotocol/server-filesystem is not installed at {entry} (or node is missing): "
            f"npm install --prefix {prefix} @modelcontextprotocol/server-filesystem"
        )
        if os.environ.get("MCP_GUARD_REQUIRE_NPM") == "1":
            pytest.fail(message + " and MCP_GUARD_REQUIRE_NPM=1")
        pytest.skip(message)
    return [node, str(entry)]


def violation(result: Any) -> dict[str, Any] | None:
    """The section 5 payload of an MCP tool result, or None when the result is not a refusal."""
    if not result.isError or not result.content:
        return None
    try:
        payload = json.loads(result.content[0].text)
    except (ValueError, AttributeError):
        return None
    return payload if isinstance(payload, dict) and payload.get("error") == "policy_violation" else None


def text(result: Any) -> str:
    return "".join(getattr(part, "text", "") for part in result.content)
