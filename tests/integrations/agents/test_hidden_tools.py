"""Agents SDK: a call to a tool the policy hides or denies outright, and a plain ``state.reject()``.

Before 0.2 the first ended the run (``ModelBehaviorError``, tool not found) with no audit event (as a call to
a name no tool has did until 0.3), and the second wrote no audit event at all. Now the model gets the policy
JSON as the tool's result, the run goes on, hidden tools stay out of what the model is shown, and each refusal
is audited exactly once. Real parts: the recording FastMCP server over stdio (its record is the judge),
``Runner.run`` with a scripted model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agents import Runner, function_tool, set_tracing_disabled
from agents.mcp import MCPServerStdio
from agents.run_state import RunState

from mcp_guard import Guard, MemorySink
from mcp_guard.integrations.openai_agents import guard_mcp_server, guard_tools, unguard_mcp_server
from tests.support.agents_helpers import call, run, script, tool_outputs, tools_sent, violation
from tests.support.servers.recording_server import read_record

pytestmark = pytest.mark.asyncio(loop_scope="module")
set_tracing_disabled(True)

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "hide": ["admin_reset"],
    "tools": {
        "exchange/withdraw": {"action": "deny", "reason": "no withdrawals from agents"},
        "transfer": {"approve_if": {"args.amount": {"gt": 1000}}},
    },
}


@pytest.fixture(autouse=True)
def _reset(agents_recording_server: MCPServerStdio) -> Any:
    yield
    unguard_mcp_server(agents_recording_server)


def ran(agents_record: Path, before: int) -> list[str]:
    return [r["tool"] for r in read_record(agents_record)[before:]]


# -- hidden / denied tools: the run goes on ----------------------------------------------------------------


async def test_mcp_server_hidden_and_denied_calls_get_the_policy_answer(
    agents_recording_server: MCPServerStdio, agents_record: Path
) -> None:
    sink = MemorySink()
    guard_mcp_server(agents_recording_server, Guard(POLICY, audit=sink))
    before = len(read_record(agents_record))
    model = script(
        [call("admin_reset", {}, "h1"), call("withdraw", {"asset": "BTC", "amount": 1.0}, "d1")],
        call("get_balance", {"asset": "BTC"}, "ok1"),
    )

    _, result = await run(model, mcp_servers=[agents_recording_server])

    assert result.final_output == "done"  # the run survived both calls
    assert "admin_reset" not in tools_sent(model)
    assert "withdraw" not in tools_sent(model)
    assert "get_balance" in tools_sent(model)
    outputs = tool_outputs(model)
    assert (violation(outputs["h1"]) or {}).get("code") == "hidden"
    denied = violation(outputs["d1"]) or {}
    assert (denied.get("code"), denied.get("server")) == ("denied", "exchange")
    assert ran(agents_record, before) == ["get_balance"]  # neither refused call reached the server
    events = [(e["tool"], e["code"], e["outcome"]) for e in sink.events]
    assert events == [
        ("admin_reset", "hidden", "denied"),
        ("withdraw", "denied", "denied"),
        ("get_balance", None, "ok"),
    ]


async def test_guard_tools_hidden_and_denied_calls_get_the_policy_answer(
    agents_recording_server: MCPServerStdio, agents_record: Path
) -> None:
    call_tool = type(agents_recording_server).call_tool

    @function_tool
    async def admin_reset() -> str:
        """Reset the account."""
        result = await call_tool(agents_recording_server, "admin_reset", {})
        return str(result.content)

    @function_tool
    async def withdraw(asset: str, amount: float) -> str:
        """Withdraw funds."""
        result = await call_tool(agents_recording_server, "withdraw", {"asset": asset, "amount": amount})
        return str(result.content)

    @function_tool
    async def get_balance(asset: str) -> str:
        """Read a balance."""
        result = await call_tool(agents_recording_server, "get_balance", {"asset": asset})
        return str(result.content)

    sink = MemorySink()
    tools = guard_tools([admin_reset, withdraw, get_balance], Guard(POLICY, audit=sink), server="exchange")
    assert [t.name for t in tools] == ["get_balance"]
    before = len(read_record(agents_record))
    model = script([call("admin_reset", {}, "h1"), call("withdraw", {"asset": "BTC", "amount": 1.0}, "d1")])

    _, result = await run(model, tools=tools)

    assert result.final_output == "done"
    assert tools_sent(model) == ["get_balance"]
    outputs = tool_outputs(model)
    assert (violation(outputs["h1"]) or {}).get("code") == "hidden"
    assert (violation(outputs["d1"]) or {}).get("code") == "denied"
    assert ran(agents_record, before) == []
    assert [(e["tool"], e["code"]) for e in sink.events] == [("admin_reset", "hidden"), ("withdraw", "denied")]


async def test_an_unknown_tool_is_answered_too(agents_recording_server: MCPServerStdio) -> None:
    # Spec section 10: a name no tool has is answered by the agent's guard as well (before 0.3 it ended the run).
    # Every entry point and runner, with and without guard_run_config: tests/integrations/agents/test_unknown_tools.py.
    sink = MemorySink()
    guard_mcp_server(agents_recording_server, Guard(POLICY, audit=sink))
    model = script(call("no_such_tool", {}, "x1"))
    _, result = await run(model, mcp_servers=[agents_recording_server])
    assert result.final_output == "done"
    assert (violation(tool_outputs(model)["x1"]) or {}).get("code") == "hidden"
    assert [(e["tool"], e["code"]) for e in sink.events] == [("no_such_tool", "hidden")]


# -- a plain state.reject() is audited --------------------------------------------------------------------


@pytest.mark.parametrize("serialize", [False, True], ids=["in-memory", "to_string"])
@pytest.mark.parametrize("message", [None, "too much for a Friday"])
async def test_plain_state_reject_is_audited(
    agents_recording_server: MCPServerStdio, agents_record: Path, serialize: bool, message: str | None
) -> None:
    sink = MemorySink()
    guard_mcp_server(agents_recording_server, Guard(POLICY, audit=sink))
    before = len(read_record(agents_record))
    model = script(call("transfer", {"amount": 5000}, "t1"))
    agent, paused = await run(model, mcp_servers=[agents_recording_server], context={"user_id": "alice"})
    (item,) = paused.interruptions
    state = paused.to_state()
    if serialize:
        state = await RunState.from_string(agent, state.to_string())
        (item,) = state.get_interruptions()

    state.reject(item, rejection_message=message)  # the SDK's own call, no helper
    result = await Runner.run(agent, state)

    assert result.final_output == "done"
    assert ran(agents_record, before) == []
    payload = violation(tool_outputs(model)["t1"]) or {}
    assert payload.get("code") == "approval_denied"
    assert payload.get("reason") == (message or "a human declined this call")
    (event,) = sink.events
    assert (event["tool"], event["code"], event["outcome"], event["identity"]) == (
        "transfer",
        "approval_denied",
        "denied",
        "alice",
    )
    assert event["rule"] == "/tools/transfer/approve_if/args.amount-gt"
