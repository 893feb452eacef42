"""Test support for the LangChain adapter tests: a scripted chat model, a real MCP session, message helpers.

The model is LangChain's own ``GenericFakeChatModel`` fed a script of ``AIMessage``s; it records the tools it
was bound with and the messages it received on every turn, so a test can see what the model was shown.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatResult
from langchain_core.tools import BaseTool
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.interceptors import ToolCallInterceptor
from langchain_mcp_adapters.tools import load_mcp_tools
from mcp import ClientSession
from pydantic import Field

from tests.support.servers.counter_server import read_counts, server_params


class ScriptedModel(GenericFakeChatModel):
    """Plays back a script of AI messages; records what it was bound with and what it was sent."""

    bound: list[list[str]] = Field(default_factory=list)
    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedModel:  # type: ignore[override]
        self.bound.append([getattr(t, "name", None) or t.get("name") for t in tools])
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def call(name: str, args: dict[str, Any] | None = None, call_id: str = "call_1") -> AIMessage:
    """An AI turn that calls one tool."""
    return AIMessage("", tool_calls=[{"name": name, "args": args or {}, "id": call_id, "type": "tool_call"}])


def script(*turns: AIMessage | str) -> ScriptedModel:
    """A model that plays ``turns`` and then says ``done``."""
    return ScriptedModel(messages=iter([*turns, AIMessage("done")]))


def tool_call(name: str, args: dict[str, Any] | None = None, call_id: str = "call_1") -> dict[str, Any]:
    """The tool_call dict form: ``tool.ainvoke(tool_call(...))`` returns a ToolMessage."""
    return {"type": "tool_call", "name": name, "args": args or {}, "id": call_id}


def text_of(message: ToolMessage) -> str:
    """A ToolMessage's text, whether its content is a string or a list of content blocks (MCP tools)."""
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(b["text"] if isinstance(b, dict) else str(b) for b in content if isinstance(b, (dict, str)))


def violation(message: ToolMessage) -> dict[str, Any] | None:
    """The violation payload a ToolMessage carries, or None when it is an ordinary result."""
    try:
        payload = json.loads(text_of(message))
    except ValueError:
        return None
    return payload if isinstance(payload, dict) and payload.get("error") == "policy_violation" else None


def tool_messages(messages: Iterable[BaseMessage]) -> list[ToolMessage]:
    return [m for m in messages if isinstance(m, ToolMessage)]


class ExchangeServer:
    """One counter-server process and one MCP session, shared by the tests of a module.

    The session lives in a task of its own: anyio's cancel scopes must be entered and left in one task, and
    pytest-asyncio runs a fixture's setup and teardown in different tasks. Tests on the same event loop call
    the session from their own tasks, which the MCP client supports.
    """

    def __init__(self, counter_file: Path) -> None:
        self.counter_file = counter_file
        self.session: ClientSession | None = None
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _hold(self) -> None:
        client = MultiServerMCPClient({"exchange": server_params(self.counter_file)})  # type: ignore[dict-item]
        async with client.session("exchange") as session:
            self.session = session
            self._ready.set()
            await self._stop.wait()

    async def start(self) -> ExchangeServer:
        self._task = asyncio.create_task(self._hold())
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait([ready, self._task], return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.is_set():
            ready.cancel()
            await self._task  # raises the reason the server did not start
        return self

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def tools(
        self, *, server_name: str = "exchange", tool_interceptors: list[ToolCallInterceptor] | None = None
    ) -> list[BaseTool]:
        assert self.session is not None
        return await load_mcp_tools(self.session, server_name=server_name, tool_interceptors=tool_interceptors)

    def counts(self) -> collections.Counter[str]:
        return read_counts(self.counter_file)


@contextlib.asynccontextmanager
async def exchange_tools(
    counter_file: Path, *, tool_interceptors: list[ToolCallInterceptor] | None = None
) -> AsyncIterator[list[BaseTool]]:
    """The counter server's tools on one persistent stdio session (one server process)."""
    client = MultiServerMCPClient({"exchange": server_params(counter_file)})  # type: ignore[dict-item]
    async with client.session("exchange") as session:
        yield await load_mcp_tools(session, server_name="exchange", tool_interceptors=tool_interceptors)


class RecordingSession(ExchangeServer):
    """The recording server (``support/servers/recording_server.py``) on one MCP session, like :class:`ExchangeServer`.

    What the server ran is read back with :meth:`record`: the judge of every attack test.
    """

    def __init__(self, record_file: Path, *, server_name: str = "exchange") -> None:
        super().__init__(record_file)
        self.server_name = server_name

    async def _hold(self) -> None:
        from tests.support.servers.recording_server import server_params as recording_params

        client = MultiServerMCPClient({self.server_name: recording_params(self.counter_file)})  # type: ignore[dict-item]
        async with client.session(self.server_name) as session:
            self.session = session
            self._ready.set()
            await self._stop.wait()

    async def tools(
        self, *, server_name: str | None = None, tool_interceptors: list[ToolCallInterceptor] | None = None
    ) -> list[BaseTool]:
        return await super().tools(server_name=server_name or self.server_name, tool_interceptors=tool_interceptors)

    def record(self) -> list[dict[str, Any]]:
        from tests.support.servers.recording_server import read_record

        return read_record(self.counter_file)


class ThreadedSession:
    """The recording server on an MCP session held by a thread of its own, for sync tools (``call_sync``).

    A sync LangChain tool cannot await the test's session; this one lives on a private event loop and is
    called with ``asyncio.run_coroutine_threadsafe``, from any thread.
    """

    def __init__(self, record_file: Path) -> None:
        self.inner = RecordingSession(record_file)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="recording-session", daemon=True)

    def start(self) -> ThreadedSession:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.inner.start(), self.loop).result(60)
        return self

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.inner.close(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def call_sync(self, tool: str, args: dict[str, Any]) -> str:
        session = self.inner.session
        assert session is not None
        result = asyncio.run_coroutine_threadsafe(session.call_tool(tool, args), self.loop).result(60)
        return "".join(getattr(part, "text", "") for part in result.content)

    async def call(self, tool: str, args: dict[str, Any]) -> str:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._acall(tool, args), self.loop))

    async def _acall(self, tool: str, args: dict[str, Any]) -> str:
        session = self.inner.session
        assert session is not None
        result = await session.call_tool(tool, args)
        return "".join(getattr(part, "text", "") for part in result.content)
