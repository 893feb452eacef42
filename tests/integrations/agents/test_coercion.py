"""Coercion bypass (issue 9) through the three Agents SDK adapters, judged by what the server ran.

A ``ScriptedModel`` sends the sixteen attacks of ``attack_cases.SENDS`` and one allowed control call in one
turn of ``Runner.run``; the recording FastMCP server (which coerces as pydantic does) must show the control
and nothing else. Paths: ``guard_mcp_server``; ``policy_guardrail`` on an MCP server's tools; ``guard_tools``
and ``policy_guardrail`` on a function tool that forwards to the server. The SDK has no sync tool path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agents import FunctionTool, function_tool, set_tracing_disabled
from agents.mcp import MCPServerStdio
from pydantic import BaseModel

from mcp_guard import Guard
from mcp_guard.integrations.openai_agents import guard_mcp_server, guard_tools, policy_guardrail, unguard_mcp_server
from tests.support.agents_helpers import call, run, script, tool_outputs, violation
from tests.support.attack_cases import CONTROL, REFUSED_CODES, SENDS, never_approve, policy, ran_attacks
from tests.support.servers.recording_server import read_record

pytestmark = pytest.mark.asyncio(loop_scope="module")
set_tracing_disabled(True)
KINDS = ["deny_if", "approve_if"]


@pytest.fixture(autouse=True)
def _reset(agents_recording_server: MCPServerStdio) -> Any:
    yield
    unguard_mcp_server(agents_recording_server)
    agents_recording_server.tool_input_guardrails = None


def guard_for(kind: str) -> Guard:
    return Guard(policy(kind), approver=never_approve if kind == "approve_if" else None)


def attack_model() -> Any:
    calls = [call("transfer", json.dumps(args), label) for label, args in SENDS]
    calls.append(call("transfer", CONTROL, "control"))
    return script(calls)


async def attack(agents_record: Path, **agent: Any) -> None:
    before = len(read_record(agents_record))
    model = attack_model()
    _, result = await run(model, **agent)
    assert result.final_output == "done"
    new = read_record(agents_record)[before:]
    assert ran_attacks(new) == []
    assert [r["args"]["memo"] for r in new if r["tool"] == "transfer"] == ["control"]
    outputs = tool_outputs(model)
    assert violation(outputs["control"]) is None
    for label, _ in SENDS:
        payload = violation(outputs[label])
        assert payload is not None, (label, outputs[label])
        assert payload["code"] in REFUSED_CODES, (label, payload)


class Order(BaseModel):
    symbol: str
    qty: int


def forwarding_transfer(agents_recording_server: MCPServerStdio) -> FunctionTool:
    """A function tool that forwards to the recording server (not through any guard of that server)."""
    call_tool = type(
        agents_recording_server
    ).call_tool  # the class's own method: a guard_mcp_server patch is per instance

    @function_tool
    async def transfer(
        amount: int, force: bool = False, leverage: int = 1, order: Order | None = None, memo: str = ""
    ) -> str:
        """Move money."""
        args = {"amount": amount, "force": force, "leverage": leverage, "memo": memo}
        if order is not None:
            args["order"] = order.model_dump()
        result = await call_tool(agents_recording_server, "transfer", args)
        return "".join(getattr(part, "text", "") for part in result.content)

    return transfer


@pytest.mark.parametrize("kind", KINDS)
async def test_guard_mcp_server(agents_recording_server: MCPServerStdio, agents_record: Path, kind: str) -> None:
    guard_mcp_server(agents_recording_server, guard_for(kind))
    await attack(agents_record, mcp_servers=[agents_recording_server])


@pytest.mark.parametrize("kind", KINDS)
async def test_policy_guardrail_on_mcp_tools(
    agents_recording_server: MCPServerStdio, agents_record: Path, kind: str
) -> None:
    agents_recording_server.tool_input_guardrails = [policy_guardrail(guard_for(kind), server="exchange")]
    await attack(agents_record, mcp_servers=[agents_recording_server])


@pytest.mark.parametrize("kind", KINDS)
async def test_guard_tools(agents_recording_server: MCPServerStdio, agents_record: Path, kind: str) -> None:
    await attack(agents_record, tools=guard_tools([forwarding_transfer(agents_recording_server)], guard_for(kind)))


@pytest.mark.parametrize("kind", KINDS)
async def test_policy_guardrail_on_function_tool(
    agents_recording_server: MCPServerStdio, agents_record: Path, kind: str
) -> None:
    tool = forwarding_transfer(agents_recording_server)
    tool.tool_input_guardrails = [policy_guardrail(guard_for(kind))]
    await attack(agents_record, tools=[tool])
