"""Test support for pinning behind each adapter: the rug-pull server's files, its lock, and sync LangChain tools.

The upstream is ``rugpull_server.py`` over stdio; what it lists changes when a test writes ``pull``
(``description``: ``send_note`` gains hidden instructions and a ``bcc`` parameter; ``shadow``: a new
``send_note_v2``). The lock is written by the real ``mcp-guard pin`` (``main([...])``). The judge is what the
server recorded it ran, and the raw audit bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal
from langchain_core.tools import BaseTool, StructuredTool
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from mcp_guard import Guard, Policy
from mcp_guard._cli.main import main

SERVER = Path(__file__).parent / "servers" / "rugpull_server.py"


class Rug:
    """One rug-pull server's files: what it lists (``pull``), what it ran (``record``), the lock and the audit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pull_file = root / "pull"
        self.record_file = root / "record.jsonl"
        self.lock = root / "mcp-guard.lock"
        self.audit = root / "audit.jsonl"

    @property
    def env(self) -> dict[str, str]:
        return {"PULL_FILE": str(self.pull_file), "RECORD_FILE": str(self.record_file), "PATH": os.environ["PATH"]}

    def pull(self, what: str) -> None:
        self.pull_file.write_text(what, encoding="utf-8")

    def ran(self) -> list[str]:
        if not self.record_file.exists():
            return []
        return [json.loads(line)["tool"] for line in self.record_file.read_text().splitlines()]

    def pin(self) -> None:
        """``mcp-guard pin`` of the server as it lists now (in this process, with the server's environment)."""
        argv = ["pin", "--server", "notes", "--lock", str(self.lock), "--", sys.executable, str(SERVER)]
        saved = {k: os.environ.get(k) for k in ("PULL_FILE", "RECORD_FILE")}
        os.environ.update({k: v for k, v in self.env.items() if k != "PATH"})
        try:
            assert main(argv) == 0
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def policy(self, on_change: str = "deny", on_new: str = "deny") -> Policy:
        doc = {
            "version": "1",
            "default": "allow",
            "pins": {"file": self.lock.name, "on_change": on_change, "on_new": on_new},
        }
        path = self.root / "policy.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        return Policy.load(path)

    def guard(self, **pins: str) -> Guard:
        return Guard(self.policy(**pins), audit=str(self.audit))

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_bytes().splitlines()] if self.audit.exists() else []

    def params(self) -> StdioServerParameters:
        return StdioServerParameters(command=sys.executable, args=[str(SERVER)], env=self.env)

    def connection(self) -> dict[str, Any]:
        """A ``MultiServerMCPClient`` stdio connection to the server."""
        return {"transport": "stdio", "command": sys.executable, "args": [str(SERVER)], "env": self.env}


@contextlib.asynccontextmanager
async def _session(params: StdioServerParameters) -> AsyncIterator[ClientSession]:
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


class SyncServer:
    """The rug-pull server as a blocking client (a session in a worker thread's event loop), for sync tools."""

    def __init__(self, portal: BlockingPortal, session: ClientSession) -> None:
        self.portal, self.session = portal, session

    def tools(self) -> list[BaseTool]:
        """The server's tools as it lists them now, as sync-only LangChain tools carrying what was listed (the
        description, the ``inputSchema`` as ``args_schema``, the annotations as ``metadata``), like
        langchain-mcp-adapters' tools but with a ``func`` and no ``coroutine``."""
        listed = self.portal.call(self.session.list_tools).tools
        return [
            StructuredTool(
                name=t.name,
                description=t.description or "",
                args_schema=dict(t.inputSchema),
                func=self._caller(t.name),
                metadata=t.annotations.model_dump(exclude_none=True) if t.annotations else None,
            )
            for t in listed
        ]

    def _caller(self, name: str) -> Any:
        def call(**args: Any) -> str:
            result = self.portal.call(self.session.call_tool, name, args)
            return "".join(getattr(part, "text", "") for part in result.content)

        return call


@contextlib.contextmanager
def sync_server(rug: Rug) -> Iterator[SyncServer]:
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(_session(rug.params())) as session:
        yield SyncServer(portal, session)
