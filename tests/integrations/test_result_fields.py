"""Trust per field of a structured result through an adapter, judged by what a real MCP server ran.

The ``calendar`` test server (``tests/support/servers/fixture_server.py``) returns its events as MCP
``structuredContent``: participants the calendar recorded, and a description in which an outsider names another
address. Under ``results: {result: untrusted, result.json.events.*.participants: trusted}`` a scripted model,
through LangChain's ``GuardInterceptor`` on the MCP tools, invites a recorded participant (the server runs it)
and the address from the description (refused, ``untrusted_argument``; the server never sees it). With the
plain label ``results: untrusted`` both are refused: the field labels are what lets the first one through.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from langchain.agents import create_agent
from langchain_core.messages import AIMessage

from mcp_guard import Guard
from mcp_guard.integrations.langchain import GuardInterceptor
from tests.support.langchain_helpers import RecordingSession, script, text_of, tool_messages
from tests.support.marks import module_loop
from tests.support.servers import fixture_server
from tests.support.servers.fixture_server import CALENDAR_ATTACKER

COLLEAGUE = "dana@partner.test"


def policy(results: object) -> dict[str, Any]:
    return {
        "version": "1",
        "default": "deny",
        "tools": {
            "read_calendar": {"results": results},
            "invite": {"require": {"args.emails": {"all": {"from": ["user", "trusted"]}}}},
        },
    }


FIELDS = policy({"result": "untrusted", "result.json.events.*.participants": "trusted"})
WHOLE = policy("untrusted")


class CalendarSession(RecordingSession):
    async def _hold(self) -> None:
        from langchain_mcp_adapters.client import MultiServerMCPClient

        params = fixture_server.server_params("calendar", self.counter_file)
        client = MultiServerMCPClient({self.server_name: params})  # type: ignore[dict-item]
        async with client.session(self.server_name) as session:
            self.session = session
            self._ready.set()
            await self._stop.wait()


@pytest_asyncio.fixture(loop_scope="module")
async def calendar(tmp_path: Path) -> AsyncIterator[CalendarSession]:
    session = await CalendarSession(tmp_path / "record.jsonl", server_name="calendar").start()
    yield session
    await session.close()


def turns() -> list[AIMessage]:
    def call(call_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "args": args, "id": call_id, "type": "tool_call"}

    return [
        AIMessage("", tool_calls=[call("read", "read_calendar", {})]),
        AIMessage("", tool_calls=[call("attacker", "invite", {"title": "Follow-up", "emails": [CALENDAR_ATTACKER]})]),
        AIMessage("", tool_calls=[call("colleague", "invite", {"title": "Follow-up", "emails": [COLLEAGUE]})]),
    ]


async def run(calendar: CalendarSession, doc: dict[str, Any]) -> dict[str, str]:
    tools = await calendar.tools(tool_interceptors=[GuardInterceptor(Guard(doc))])
    agent = create_agent(script(*turns()), tools)
    config: Any = {"configurable": {"thread_id": f"t-{uuid.uuid4().hex}"}}
    state = await agent.ainvoke({"messages": [("user", "Set up a follow-up of the quarterly review.")]}, config)
    return {m.tool_call_id: text_of(m) for m in tool_messages(state["messages"])}


def code(reply: str) -> str | None:
    try:
        payload = json.loads(reply)
    except ValueError:
        return None
    return payload.get("code") if isinstance(payload, dict) and payload.get("error") == "policy_violation" else None


@module_loop
async def test_a_recorded_participant_is_invited_the_described_address_is_not(calendar: CalendarSession) -> None:
    replies = await run(calendar, FIELDS)
    assert code(replies["attacker"]) == "untrusted_argument"
    assert code(replies["colleague"]) is None
    ran = [(r["tool"], r["args"]) for r in calendar.record()]
    assert ran == [("read_calendar", {}), ("invite", {"title": "Follow-up", "emails": [COLLEAGUE]})]


@module_loop
async def test_with_the_whole_result_untrusted_neither_is(calendar: CalendarSession) -> None:
    replies = await run(calendar, WHOLE)
    assert (code(replies["attacker"]), code(replies["colleague"])) == ("untrusted_argument", "untrusted_argument")
    assert [r["tool"] for r in calendar.record()] == ["read_calendar"]
