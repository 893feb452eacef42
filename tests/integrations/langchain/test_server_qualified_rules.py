"""Silent skip (issue 9): a server-qualified rule (``exchange/withdraw: deny``) must apply without ``server=``.

Each LangChain adapter finds the MCP server of a langchain-mcp-adapters tool by itself (the interceptor from
its request, ``wrap_tools`` and ``GuardMiddleware`` from the tool), so the rule is never skipped. The judge is
the recording FastMCP server over stdio: ``withdraw`` must never run. (The Agents SDK adapters take the name
of the ``MCPServer`` they guard: see ``tests/integrations/agents/test_hidden_tools.py``.)
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent

from mcp_guard import Guard
from mcp_guard.integrations.langchain import GuardInterceptor, GuardMiddleware, wrap_tools
from tests.support.langchain_helpers import RecordingSession, call, script, tool_messages, violation

pytestmark = pytest.mark.asyncio(loop_scope="module")

POLICY: dict[str, Any] = {"version": "1", "default": "allow", "tools": {"exchange/withdraw": {"action": "deny"}}}
WITHDRAW = {"asset": "BTC", "amount": 1.0}


async def refused(recording_session: RecordingSession, tools: list[Any], middleware: list[Any]) -> dict[str, Any]:
    before = len(recording_session.record())
    agent = create_agent(script(call("withdraw", WITHDRAW, "w1")), tools, middleware=middleware)
    state = await agent.ainvoke({"messages": [("user", "go")]})
    assert [r["tool"] for r in recording_session.record()[before:]] == []
    (message,) = tool_messages(state["messages"])
    payload = violation(message)
    assert payload is not None
    return payload


async def test_wrap_tools_hides_the_denied_tool_and_refuses_a_call(recording_session: RecordingSession) -> None:
    tools = await recording_session.tools()
    assert "withdraw" not in [t.name for t in wrap_tools(tools, POLICY)]
    payload = await refused(recording_session, wrap_tools(tools, POLICY, hide_denied=False), [])
    assert (payload["code"], payload["server"]) == ("denied", "exchange")


async def test_interceptor(recording_session: RecordingSession) -> None:
    tools = await recording_session.tools(tool_interceptors=[GuardInterceptor(Guard(POLICY))])
    payload = await refused(recording_session, tools, [])
    assert (payload["code"], payload["server"]) == ("denied", "exchange")


async def test_middleware(recording_session: RecordingSession) -> None:
    payload = await refused(recording_session, await recording_session.tools(), [GuardMiddleware(POLICY)])
    assert (payload["code"], payload["server"]) == ("denied", "exchange")
