"""A raw JSON-RPC line client for the proxy's hardening tests, and the TypeScript recording server's command.

The smuggling tests must send what no SDK client sends (a bare CR inside a message, duplicate keys, bytes that
are not UTF-8, a message split across writes), so they speak bytes over the proxy process's stdin and read its
stdout line by line. Nothing is mocked: the proxy and its upstream are real processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.message import SessionMessage
from mcp.types import JSONRPCMessage

from .proxy_support import REPO

TIMEOUT = 20.0


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def initialize(rid: Any = 0, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
    params = {
        "protocolVersion": "2025-06-18",
        "capabilities": capabilities or {},
        "clientInfo": {"name": "raw", "version": "1"},
    }
    return {"jsonrpc": "2.0", "id": rid, "method": "initialize", "params": params}


INITIALIZED: dict[str, Any] = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def call(rid: Any, tool: str, **args: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": tool, "arguments": args}}


def cancel(rid: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": rid, "reason": "test"}}


class Messages:
    """A JSON-RPC peer spoken to message by message; every message read is kept in ``seen``."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _next(self) -> dict[str, Any]:
        raise NotImplementedError

    async def message(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        parsed = await asyncio.wait_for(self._next(), timeout)
        self.seen.append(parsed)
        return parsed

    async def answer_to(self, rid: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The answer to ``rid``, seen already or next (other messages in between are kept in ``seen``)."""
        for message in self.seen:
            if message.get("id") == rid and "method" not in message:
                return message
        while True:
            message = await self.message(timeout)
            if message.get("id") == rid and "method" not in message:
                return message

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.send(message)
        return await self.answer_to(message["id"])

    def answers(self, rid: Any) -> list[dict[str, Any]]:
        return [m for m in self.seen if m.get("id") == rid and "method" not in m]

    async def start(self, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        """initialize, initialized, tools/list: the session as an MCP client opens it; the listing's answer."""
        await self.request(initialize(capabilities=capabilities))
        await self.send(INITIALIZED)
        return await self.request({"jsonrpc": "2.0", "id": "list", "method": "tools/list"})


class Wire(Messages):
    """One process spoken to in raw JSON-RPC lines over its stdin/stdout (bytes may be sent as they are)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        super().__init__()
        self.proc = proc
        self.lines: list[bytes] = []  # every line read, as received

    async def send(self, message: dict[str, Any] | bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(message if isinstance(message, bytes) else line(message))
        await self.proc.stdin.drain()

    async def next_line(self, timeout: float = TIMEOUT) -> bytes:
        """The next line as received, unparsed (kept in ``lines``, not in ``seen``)."""
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        assert raw, "the process closed its stdout"
        self.lines.append(raw)
        return raw

    async def request_bytes(self, message: dict[str, Any] | bytes) -> bytes:
        """Send a request; its answer as the bytes received (the next line: nothing else may be in flight)."""
        await self.send(message)
        return await self.next_line()

    async def _next(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(await self.next_line())
        return parsed


class SdkWire(Messages):
    """JSON-RPC messages over an MCP SDK transport's streams (streamable HTTP, or in-memory), ids chosen here."""

    def __init__(self, read: Any, write: Any) -> None:
        super().__init__()
        self.read, self.write = read, write

    async def send(self, message: dict[str, Any]) -> None:
        await self.write.send(SessionMessage(JSONRPCMessage.model_validate(message)))

    async def _next(self) -> dict[str, Any]:
        item = await self.read.receive()
        if isinstance(item, Exception):
            raise item
        parsed: dict[str, Any] = item.message.model_dump(by_alias=True, mode="json", exclude_none=True)
        return parsed


@asynccontextmanager
async def spawn(argv: Sequence[str], env: dict[str, str]) -> AsyncIterator[Wire]:
    """Start ``argv`` with pipes; on leaving, close its stdin (the client leaves) and wait for it to end."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
        limit=1 << 26,
    )
    try:
        yield Wire(proc)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise


def typescript_server() -> list[str]:
    """The command line of ``ts_recording_server.mjs``, a recording MCP server on the npm TypeScript SDK.

    The SDK is the one npm installed into ``.mcp-servers`` as a dependency of server-filesystem. Skips the
    test when node or the SDK is missing, or fails when ``MCP_GUARD_REQUIRE_NPM=1`` (CI).
    """
    prefix = Path(os.environ.get("MCP_GUARD_NPM_PREFIX", REPO / ".mcp-servers"))
    sdk = prefix / "node_modules" / "@modelcontextprotocol" / "sdk"
    node = shutil.which("node")
    if node is None or not (sdk / "dist" / "esm" / "server" / "stdio.js").exists():
        message = f"the npm @modelcontextprotocol/sdk is not installed under {prefix} (or node is missing)"
        if os.environ.get("MCP_GUARD_REQUIRE_NPM") == "1":
            pytest.fail(message + " and MCP_GUARD_REQUIRE_NPM=1")
        pytest.skip(message)
    return [node, str(Path(__file__).with_name("ts_recording_server.mjs")), str(sdk)]
