"""The shared table (``support/cases.py``) through all three LangChain adapters, each in a real ``create_agent`` loop
over the real counter server: every adapter gives the decision the table expects, with the same payload, and
only allowed calls reach the server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import ToolMessage

from mcp_guard import Guard
from mcp_guard.integrations.langchain import GuardInterceptor, GuardMiddleware, wrap_tools
from tests.support.cases import CASE_IDS, CASES, CASES_POLICY, SERVER, Case
from tests.support.langchain_helpers import ExchangeServer, call, script, tool_messages, violation
from tests.support.marks import module_loop


async def agent_with_wrap_tools(exchange_server: ExchangeServer, guard: Guard) -> Any:
    # hide_denied=False: the scripted model calls hidden tools anyway, and the call must meet the guard
    # (with hiding on, the tool would not exist and LangChain itself would answer "not a valid tool").
    tools = wrap_tools(await exchange_server.tools(), guard, server=SERVER, hide_denied=False)
    return lambda model: create_agent(model, tools)


async def agent_with_interceptor(exchange_server: ExchangeServer, guard: Guard) -> Any:
    tools = await exchange_server.tools(server_name=SERVER, tool_interceptors=[GuardInterceptor(guard)])
    return lambda model: create_agent(model, tools)


async def agent_with_middleware(exchange_server: ExchangeServer, guard: Guard) -> Any:
    tools = await exchange_server.tools()
    return lambda model: create_agent(model, tools, middleware=[GuardMiddleware(guard, server=SERVER)])


ADAPTERS: dict[str, Callable[[ExchangeServer, Guard], Any]] = {
    "wrap_tools": agent_with_wrap_tools,
    "interceptor": agent_with_interceptor,
    "middleware": agent_with_middleware,
}


def decision_of(message: ToolMessage) -> tuple[str, dict[str, Any] | None]:
    payload = violation(message)
    if payload is None:
        assert message.status == "success", message
        return "allow", None
    assert message.status == "error"
    return payload["code"], payload


@module_loop
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
async def test_every_adapter_gives_the_table_decision(exchange_server: ExchangeServer, case: Case) -> None:
    payloads: dict[str, dict[str, Any] | None] = {}
    for adapter, build in ADAPTERS.items():
        guard = Guard(CASES_POLICY, clock=lambda: 1_000.0)  # fresh budget per adapter, time standing still
        make_agent = await build(exchange_server, guard)
        turns = [call(case.tool, case.args, f"{case.id}-{i}") for i in range(case.repeat)]
        before = exchange_server.counts()

        state = await make_agent(script(*turns)).ainvoke({"messages": [("user", "go")]})

        assert state["messages"][-1].content == "done", adapter
        decisions = [decision_of(m) for m in tool_messages(state["messages"])]
        codes = [code for code, _ in decisions]
        assert codes == ["allow"] * (case.repeat - 1) + [case.expect], adapter
        payloads[adapter] = decisions[-1][1]
        reached = exchange_server.counts()[case.tool] - before[case.tool]
        assert reached == codes.count("allow"), adapter  # refused calls never reach the server

    # Not just the same code: the same rule, reason, hint and retry_after_s, whichever adapter enforced it.
    assert payloads["interceptor"] == payloads["wrap_tools"]
    assert payloads["middleware"] == payloads["wrap_tools"]
