"""Coercion bypass (issue 9) through the three Agents SDK adapters, judged by what the server ran.

A ``ScriptedModel`` sends the sixteen attacks of ``attack_cases.SENDS`` and one allowed control call in one
turn of ``Runner.run``; the recording FastMCP server (which coerces as pydantic does) must show the control
and nothing else. Paths: ``guard_mcp_server``; ``policy_guardrail`` on an MCP server's tools; ``guard_tools``
and ``policy_guardrail`` on a function tool that forwards to the server. The SDK has no sync tool path.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from agents import FunctionTool, function_tool, set_tracing_disabled
from agents.mcp import MCPServerStdio
from pydantic import BaseModel

from mcp_guard import Guard
from mcp_guard.integrations.openai_agents import guard_mcp_server, guard_tools, policy_guardrail, unguard_mcp_server
from tests.support.agents_helpers import call, recording_server, run, script, tool_outputs, violation
from tests.support.attack_cases import CONTROL, REFUSED_CODES, SENDS, never_approve, policy, ran_attacks
from tests.support.servers.recording_server import read_record

pytestmark = pytest.mark.asyncio(loop_scope="module")
set_tracing_disabled(True)
KINDS = ["deny_if", "approve_if"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agents_coercion") / "record.jsonl"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(record: Path) -> AsyncIterator[MCPServerStdio]:
    async with recording_server(record) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _reset(server: MCPServerStdio) -> Any:
    yield
    unguard_mcp_server(server)
    server.tool_input_guardrails = None


def guard_for(kind: str) -> Guard:
    return Guard(policy(kind), approver=never_approve if kind == "approve_if" else None)


def attack_model() -> Any:
    calls = [call("transfer", json.dumps(args), label) for label, args in SENDS]
    calls.append(call("transfer", CONTROL, "control"))
    return script(calls)


async def attack(record: Path, **agent: Any) -> None:
    before = len(read_record(record))
    model = attack_model()
    _, result = await run(model, **agent)
    assert result.final_output == "done"
    new = read_record(record)[before:]
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


def forwarding_transfer(server: MCPServerStdio) -> FunctionTool:
    """A function tool that forwards to the recording server (not through any guard of that server)."""
    call_tool = type(server).call_tool  # the class's own method: a guard_mcp_server patch is per instance

    @function_tool
    async def transfer(
        amount: int, force: bool = False, leverage: int = 1, order: Order | None = None, memo: str = ""
    ) -> str:
        """Move money."""
        args = {"amount": amount, "force": force, "leverage": leverage, "memo": memo}
        if order is not None:
            args["order"] = order.model_dump()
        result = await call_tool(server, "transfer", args)
        return "".join(getattr(part, "text", "") for part in result.content)

    return transfer


@pytest.mark.parametrize("kind", KINDS)
async def test_guard_mcp_server(server: MCPServerStdio, record: Path, kind: str) -> None:
    guard_mcp_server(server, guard_for(kind))
    await attack(record, mcp_servers=[server])


@pytest.mark.parametrize("kind", KINDS)
async def test_policy_guardrail_on_mcp_tools(server: MCPServerStdio, record: Path, kind: str) -> None:
    server.tool_input_guardrails = [policy_guardrail(guard_for(kind), server="exchange")]
    await attack(record, mcp_servers=[server])


@pytest.mark.parametrize("kind", KINDS)
async def test_guard_tools(server: MCPServerStdio, record: Path, kind: str) -> None:
    await attack(record, tools=guard_tools([forwarding_transfer(server)], guard_for(kind)))


@pytest.mark.parametrize("kind", KINDS)
async def test_policy_guardrail_on_function_tool(server: MCPServerStdio, record: Path, kind: str) -> None:
    tool = forwarding_transfer(server)
    tool.tool_input_guardrails = [policy_guardrail(guard_for(kind))]
    await attack(record, tools=[tool])
