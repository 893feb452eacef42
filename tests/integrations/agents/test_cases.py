"""The shared table of cases (``support/cases.py``) through the Agents SDK adapters: the same decisions as LangChain.

Each case runs on a fresh ``Guard(CASES_POLICY)`` (no approver) against the real counter server, server
name ``"exchange"``, twice:

- through :func:`guard_mcp_server` (the SDK's own MCP tools). Two outcomes take the SDK's native form
  there: a tool the policy hides or denies outright is not shown to the model at all (and a direct
  ``call_tool`` gets the code), and ``approval_required`` is the run pausing for a human;
- through a bare :func:`policy_guardrail` bound to ``server="exchange"`` on function tools that forward
  to the same server: every code arrives as the violation payload, exactly as in LangChain.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from agents import FunctionTool, set_tracing_disabled
from agents.mcp import MCPServerStdio

from mcp_guard import Guard
from mcp_guard._compat import result_is_error, tool_input_schema
from mcp_guard.integrations.openai_agents import guard_mcp_server, policy_guardrail, unguard_mcp_server
from tests.support.agents_helpers import call, run, script, tool_outputs, tools_sent, violation
from tests.support.cases import CASES, CASES_POLICY, SERVER, Case
from tests.support.servers.counter_server import read_counts

pytestmark = pytest.mark.asyncio(loop_scope="module")

set_tracing_disabled(True)


def calls_of(agents_counter: Path, tool: str) -> int:
    return read_counts(agents_counter)[tool]


def turns(case: Case) -> list[Any]:
    return [call(case.tool, case.args, f"{case.id}-{i}") for i in range(case.repeat)]


def assert_outcome(model: Any, agents_counter: Path, case: Case, before: int) -> dict[str, Any] | None:
    """Every call but the last went through; the last got ``case.expect``; the server saw exactly the admitted ones.

    Returns the last call's violation payload (None when it was allowed).
    """
    outputs = [tool_outputs(model, i + 1)[f"{case.id}-{i}"] for i in range(case.repeat)]
    assert [violation(o) for o in outputs[:-1]] == [None] * (case.repeat - 1)
    last = violation(outputs[-1])
    if case.expect == "allow":
        assert last is None
        assert calls_of(agents_counter, case.tool) == before + case.repeat
    else:
        assert last is not None
        assert last["code"] == case.expect
        assert calls_of(agents_counter, case.tool) == before + case.repeat - 1
    return last


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_case_through_guard_mcp_server(
    agents_counter_server: MCPServerStdio, agents_counter: Path, case: Case
) -> None:
    guard = Guard(CASES_POLICY)
    guard_mcp_server(agents_counter_server, guard)
    try:
        before = calls_of(agents_counter, case.tool)
        listing = script()
        await run(listing, mcp_servers=[agents_counter_server])
        if case.tool not in tools_sent(listing):
            # Hidden or denied outright: the model is never shown the tool; calling it anyway is refused.
            assert case.expect in ("hidden", "default_deny", "denied")
            result = await agents_counter_server.call_tool(case.tool, dict(case.args))
            assert result_is_error(result)  # isError on mcp 1, is_error on mcp 2
            payload = violation(result.content[0].text)  # type: ignore[union-attr]
            assert payload is not None
            assert payload["code"] == case.expect
            assert calls_of(agents_counter, case.tool) == before
            return
        model = script(*turns(case))
        _, result = await run(model, mcp_servers=[agents_counter_server])
        if case.expect == "approval_required":
            assert [i.tool_name for i in result.interruptions] == [case.tool]
            assert calls_of(agents_counter, case.tool) == before
            return
        last = assert_outcome(model, agents_counter, case, before)
        if last is not None:
            assert last["server"] == SERVER
    finally:
        unguard_mcp_server(agents_counter_server)


def forwarding_tool(agents_counter_server: MCPServerStdio, name: str, schema: dict[str, Any]) -> FunctionTool:
    """A function tool that forwards to the server, past any guard on it (so only the guardrail decides)."""

    async def invoke(ctx: Any, input_json: str) -> str:
        result = await MCPServerStdio.call_tool(agents_counter_server, name, json.loads(input_json or "{}"))
        return "".join(getattr(part, "text", "") for part in result.content)

    return FunctionTool(
        name=name,
        description=name,
        params_json_schema={**schema, "additionalProperties": True},
        on_invoke_tool=invoke,
        strict_json_schema=False,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_case_through_policy_guardrail(
    agents_counter_server: MCPServerStdio, agents_counter: Path, case: Case
) -> None:
    mcp_tools = {t.name: t for t in await agents_counter_server.list_tools()}
    tool = forwarding_tool(agents_counter_server, case.tool, dict(tool_input_schema(mcp_tools[case.tool]) or {}))
    guarded = dataclasses.replace(tool, tool_input_guardrails=[policy_guardrail(Guard(CASES_POLICY), server=SERVER)])
    before = calls_of(agents_counter, case.tool)
    model = script(*turns(case))
    _, result = await run(model, tools=[guarded])
    assert result.final_output == "done"
    assert_outcome(model, agents_counter, case, before)
