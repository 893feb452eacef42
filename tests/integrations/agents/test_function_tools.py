"""guard_tools and policy_guardrail on plain function tools, driven by the SDK's offline ScriptedModel."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from agents import FunctionTool, Runner, ToolInputGuardrailTripwireTriggered, function_tool, set_tracing_disabled
from agents.tool_context import ToolContext

from mcp_guard import ApprovalDecision, Guard, MemorySink
from mcp_guard.integrations.openai_agents import guard_tools, policy_guardrail, reject
from tests.support.agents_helpers import Clock, call, run, script, tool_outputs, tools_sent, violation

set_tracing_disabled(True)

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "hide": ["delete_api_key"],
    "tools": {
        "get_balance": {"args_schema": {"type": "object", "properties": {"asset": {"pattern": "^[A-Z]+$"}}}},
        "place_order": {
            "deny_if": {"args.amount": {"gt": 1000}},
            "approve_if": {"args.amount": {"gt": 100}},
            "limits": [{"counter": "orders", "window": "minute", "max": 1, "scope": "global"}],
        },
        "withdraw": {"action": "require_approval", "limits": [{"counter": "w", "window": "hour", "max": 1}]},
        "flaky": {"limits": [{"counter": "flaky", "window": "minute", "max": 1, "scope": "global"}]},
        "transfer": {"action": "deny", "reason": "transfers are disabled"},
    },
}

ran: list[tuple[str, dict[str, Any]]] = []


@function_tool
def get_balance(asset: str) -> str:
    """Balance of one asset."""
    ran.append(("get_balance", {"asset": asset}))
    return f"{asset}: 1.5"


@function_tool
def place_order(symbol: str, amount: float) -> str:
    """Place an order."""
    ran.append(("place_order", {"symbol": symbol, "amount": amount}))
    return f"ordered {amount:g} {symbol}"


@function_tool
def withdraw(asset: str, amount: float) -> str:
    """Withdraw funds."""
    ran.append(("withdraw", {"asset": asset, "amount": amount}))
    return f"withdrew {amount:g} {asset}"


@function_tool
def flaky() -> str:
    """Always fails."""
    ran.append(("flaky", {}))
    raise RuntimeError("upstream exploded")


@function_tool
def transfer(to: str) -> str:
    """Move funds."""
    ran.append(("transfer", {"to": to}))
    return "moved"


@function_tool
def delete_api_key(key_id: str) -> str:
    """Delete a key."""
    ran.append(("delete_api_key", {"key_id": key_id}))
    return "deleted"


ALL = [get_balance, place_order, withdraw, flaky, transfer, delete_api_key]


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


def by_name(tools: list[Any]) -> dict[str, FunctionTool]:
    return {t.name: t for t in tools}


def test_hidden_and_denied_tools_are_left_out_and_originals_untouched() -> None:
    guarded = guard_tools(ALL, POLICY)
    assert sorted(t.name for t in guarded) == ["flaky", "get_balance", "place_order", "withdraw"]
    assert all(t.tool_input_guardrails for t in guarded)
    assert get_balance.tool_input_guardrails is None
    # Only tools whose rule can hold a call for a human get a needs_approval callable.
    wired = {t.name: callable(t.needs_approval) for t in guarded}
    assert wired == {"flaky": False, "get_balance": False, "place_order": True, "withdraw": True}
    # With an inline approver, nothing pauses the run.
    assert not any(callable(t.needs_approval) for t in guard_tools(ALL, POLICY, approver=lambda r: True))


async def test_allowed_denied_and_malformed_calls_in_one_run() -> None:
    sink = MemorySink()
    tools = guard_tools(ALL, Guard(POLICY, audit=sink))
    model = script(
        [
            call("get_balance", {"asset": "BTC"}, "ok"),
            call("get_balance", {"asset": "btc"}, "schema"),
            call("get_balance", "{oops", "malformed"),
            call("place_order", {"symbol": "X", "amount": 5000}, "deny_if"),
        ]
    )
    _, result = await run(model, tools=tools)
    assert result.final_output == "done"
    assert "get_balance" in tools_sent(model)
    out = tool_outputs(model)
    assert out["ok"] == "BTC: 1.5"
    assert {k: (violation(v) or {}).get("code") for k, v in out.items() if k != "ok"} == {
        "schema": "invalid_arguments",
        "malformed": "invalid_arguments",
        "deny_if": "denied",
    }
    assert ran == [("get_balance", {"asset": "BTC"})]
    assert sorted((e["tool"], e["outcome"]) for e in sink.events) == [
        ("get_balance", "denied"),
        ("get_balance", "denied"),
        ("get_balance", "ok"),
        ("place_order", "denied"),
    ]


async def test_rate_limit_with_an_injected_clock() -> None:
    clock = Clock()
    tools = guard_tools([place_order], Guard(POLICY, clock=clock))
    model = script(
        call("place_order", {"symbol": "X", "amount": 1}, "c1"), call("place_order", {"symbol": "X", "amount": 2}, "c2")
    )
    await run(model, tools=tools)
    payload = violation(tool_outputs(model)["c2"])
    assert payload is not None
    assert (payload["code"], payload["retry_after_s"]) == ("rate_limited", 60.0)
    assert len(ran) == 1


async def test_failing_tool_gives_its_quota_back() -> None:
    guard = Guard(POLICY)
    tools = guard_tools([flaky], guard)
    model = script(call("flaky", {}, "c1"), call("flaky", {}, "c2"))
    await run(model, tools=tools)
    out = tool_outputs(model)
    assert violation(out["c2"]) is None  # not rate limited: the failed first call gave its unit back
    assert ran == [("flaky", {}), ("flaky", {})]
    assert guard.check("flaky", {}).allowed


async def test_approve_if_pauses_only_the_calls_it_fires_for_and_edits_apply() -> None:
    guard = Guard(POLICY)
    tools = guard_tools([place_order], guard)
    model = script(call("place_order", {"symbol": "X", "amount": 500}, "big"))
    agent, paused = await run(model, tools=tools)
    assert [i.call_id for i in paused.interruptions] == ["big"]
    assert ran == []
    state = paused.to_state()
    state.approve(paused.interruptions[0])
    await Runner.run(agent, state)
    assert ran == [("place_order", {"symbol": "X", "amount": 500.0})]
    assert guard.check("place_order", {"symbol": "X", "amount": 1}).code == "rate_limited"

    ran.clear()
    edited = guard_tools([place_order], POLICY, approver=lambda r: ApprovalDecision.edit({**r.args, "amount": 50}))
    model = script(call("place_order", {"symbol": "X", "amount": 500}, "big"))
    await run(model, tools=edited)
    assert tool_outputs(model)["big"] == "ordered 50 X"
    assert ran == [("place_order", {"symbol": "X", "amount": 50})]


async def test_an_approval_the_tool_already_required_is_kept() -> None:
    strict = FunctionTool(
        name=get_balance.name,
        description=get_balance.description,
        params_json_schema=get_balance.params_json_schema,
        on_invoke_tool=get_balance.on_invoke_tool,
        needs_approval=True,
    )
    (guarded,) = guard_tools([strict], POLICY)
    assert guarded.needs_approval is True
    model = script(call("get_balance", {"asset": "BTC"}, "c1"))
    _, paused = await run(model, tools=[guarded])
    assert len(paused.interruptions) == 1


def with_guardrail(tool: FunctionTool, guardrail: Any) -> FunctionTool:
    return dataclasses.replace(tool, tool_input_guardrails=[guardrail])


async def test_bare_guardrail() -> None:
    # No approver and no SDK pause: a call that needs a human is refused with approval_required.
    model = script(call("withdraw", {"asset": "BTC", "amount": 1}, "c1"))
    await run(model, tools=[with_guardrail(withdraw, policy_guardrail(POLICY))])
    assert (violation(tool_outputs(model)["c1"]) or {})["code"] == "approval_required"
    assert ran == []
    # An approver's yes lets it run.
    model = script(call("withdraw", {"asset": "BTC", "amount": 1}, "c1"))
    await run(model, tools=[with_guardrail(withdraw, policy_guardrail(POLICY, approver=lambda r: True))])
    assert tool_outputs(model)["c1"] == "withdrew 1 BTC"
    # A bare guardrail cannot apply edited arguments, so an edit is refused rather than ignored.
    editing = policy_guardrail(POLICY, approver=lambda r: ApprovalDecision.edit({"asset": "ETH", "amount": 1}))
    model = script(call("withdraw", {"asset": "BTC", "amount": 1}, "c1"))
    await run(model, tools=[with_guardrail(withdraw, editing)])
    payload = violation(tool_outputs(model)["c1"])
    assert payload is not None
    assert payload["code"] == "approval_denied"
    assert ran == [("withdraw", {"asset": "BTC", "amount": 1.0})]


async def test_bare_guardrail_with_a_server_applies_server_qualified_rules() -> None:
    policy = {"version": "1", "default": "allow", "tools": {"bank/withdraw": {"action": "deny"}}}
    model = script(
        call("withdraw", {"asset": "BTC", "amount": 1}, "c1"), call("withdraw", {"asset": "BTC", "amount": 2}, "c2")
    )
    await run(model, tools=[with_guardrail(withdraw, policy_guardrail(policy, server="bank"))])
    assert (violation(tool_outputs(model)["c2"]) or {})["code"] == "denied"
    model = script(call("withdraw", {"asset": "BTC", "amount": 1}, "c3"))
    await run(model, tools=[with_guardrail(withdraw, policy_guardrail(policy, server="other"))])
    assert tool_outputs(model)["c3"] == "withdrew 1 BTC"


async def test_raise_when_asked() -> None:
    tools = guard_tools([place_order], Guard(POLICY, on_violation="raise"))
    model = script(call("place_order", {"symbol": "X", "amount": 5000}, "c1"))
    with pytest.raises(ToolInputGuardrailTripwireTriggered) as info:
        await run(model, tools=tools)
    assert info.value.output.output_info["code"] == "denied"
    assert json.dumps(info.value.output.output_info)  # the payload travels as plain JSON data
    assert ran == []


def test_a_guard_and_an_approver_together_is_an_error() -> None:
    with pytest.raises(TypeError, match="approver"):
        guard_tools([get_balance], Guard(POLICY), approver=lambda r: True)


async def test_invoking_a_guarded_tool_outside_the_runner_still_goes_through_the_guard() -> None:
    tools = by_name(guard_tools(ALL, Guard(POLICY)))

    def ctx(args: str) -> ToolContext[Any]:
        return ToolContext(context=None, tool_name="x", tool_call_id="direct", tool_arguments=args)

    assert await tools["get_balance"].on_invoke_tool(ctx('{"asset": "BTC"}'), '{"asset": "BTC"}') == "BTC: 1.5"
    refused = await tools["place_order"].on_invoke_tool(ctx("{}"), '{"symbol": "X", "amount": 5000}')
    assert (violation(refused) or {})["code"] == "denied"
    held = await tools["withdraw"].on_invoke_tool(ctx("{}"), '{"asset": "BTC", "amount": 1}')
    assert (violation(held) or {})["code"] == "approval_required"
    broken = await tools["get_balance"].on_invoke_tool(ctx("{"), "{")
    assert (violation(broken) or {})["code"] == "invalid_arguments"
    assert ran == [("get_balance", {"asset": "BTC"})]


async def test_reject_helper_on_a_function_tool() -> None:
    sink = MemorySink()
    tools = guard_tools([withdraw], Guard(POLICY, audit=sink))
    model = script(call("withdraw", {"asset": "BTC", "amount": 1}, "c1"))
    agent, paused = await run(model, tools=tools)
    state = paused.to_state()
    reject(state, paused.interruptions[0])
    await Runner.run(agent, state)
    assert (violation(tool_outputs(model)["c1"]) or {})["code"] == "approval_denied"
    assert [(e["tool"], e["code"]) for e in sink.events] == [("withdraw", "approval_denied")]
    assert ran == []
