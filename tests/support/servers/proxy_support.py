"""Shared pieces of the proxy tests: the proxy's command line, HTTP processes on free ports, process checks.

Everything here starts real processes: the ``mcp-guard proxy`` command (this venv's interpreter), the
recording server (``proxy_upstream_server.py``) and, where installed, ``@modelcontextprotocol/server-filesystem``
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
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
# The CLI without relying on the console script being on PATH.
# python -m mcp_guard: the same command line for every version of src (benchmarks/paired.py runs old ones too).
PROXY = [sys.executable, "-m", "mcp_guard", "proxy"]


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


class HttpProcess:
    """A server process listening on ``port`` (started at once; :meth:`ready` waits for it to listen)."""

    def __init__(self, argv: Sequence[str], port: int, env: dict[str, str] | None = None) -> None:
        self.argv, self.port = list(argv), port
        self.url = f"http://127.0.0.1:{port}/mcp"
        self._errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by stop(), after the process ends
        self.proc = subprocess.Popen(self.argv, env={**os.environ, **(env or {})}, stderr=self._errors)

    def ready(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while not _accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._errors.seek(0)
                raise RuntimeError(f"{self.argv[:5]} is not listening (exit {self.proc.poll()}): {self._errors.read()}")
            time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._errors.close()


@contextlib.contextmanager
def http_processes(*specs: tuple[Sequence[str], int, dict[str, str] | None]) -> Iterator[list[str]]:
    """Start every ``(argv, port, env)`` at once, wait until all listen; yields their ``/mcp`` URLs."""
    procs: list[HttpProcess] = []
    try:
        for argv, port, env in specs:
            procs.append(HttpProcess(argv, port, env))
        yield [p.ready() for p in procs]
    finally:
        for p in procs:
            p.stop()


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
