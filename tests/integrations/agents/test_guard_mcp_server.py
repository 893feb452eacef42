"""guard_mcp_server against the real counter server over stdio, driven by the SDK's offline ScriptedModel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, RunConfig, Runner, RunState, ToolInputGuardrailTripwireTriggered, set_tracing_disabled
from agents.mcp import MCPServerStdio

from mcp_guard import ApprovalDecision, ApprovalRequest, Guard, MemorySink
from mcp_guard._compat import result_is_error
from mcp_guard.integrations.openai_agents import guard_mcp_server, reject, unguard_mcp_server
from tests.support.agents_helpers import Clock, call, run, script, tool_outputs, tools_sent, violation
from tests.support.cases import CASES_POLICY
from tests.support.servers.counter_server import read_counts

pytestmark = pytest.mark.asyncio(loop_scope="module")

set_tracing_disabled(True)

WITHDRAW = {"asset": "BTC", "amount": 1.0, "address": "addr1"}

# The shared policy plus a few rules for what the table does not cover: a budget on withdrawals (to watch
# quota across an approval pause), a failing tool with a budget, and a per-caller budget.
POLICY: dict[str, Any] = json.loads(json.dumps(CASES_POLICY))
POLICY["tools"]["exchange/withdraw"]["limits"] = [
    {"counter": "withdrawals", "window": "hour", "max": 1, "scope": "global"}
]
POLICY["tools"]["flaky"] = {"limits": [{"counter": "flaky", "window": "minute", "max": 1, "scope": "global"}]}
POLICY["tools"]["get_*"]["limits"] = [{"counter": "reads", "window": "minute", "max": 1, "scope": "identity"}]


@pytest.fixture
def calls(agents_counter: Path) -> Any:
    """How many calls each tool received since the test started (the server's own count)."""
    before = read_counts(agents_counter)

    def since() -> dict[str, int]:
        now = read_counts(agents_counter)
        return {k: now[k] - before[k] for k in now if now[k] - before[k]}

    return since


@pytest.fixture(autouse=True)
def _unguard(agents_counter_server: MCPServerStdio) -> Any:
    yield
    unguard_mcp_server(agents_counter_server)


def new_guard(**options: Any) -> tuple[Guard, MemorySink, Clock]:
    sink, clock = MemorySink(), Clock()
    return Guard(POLICY, audit=sink, clock=clock, **options), sink, clock


async def test_allowed_call_reaches_the_server_once(agents_counter_server: MCPServerStdio, calls: Any) -> None:
    guard, sink, _ = new_guard()
    guard_mcp_server(agents_counter_server, guard)
    model = script(call("get_balance", {"asset": "BTC"}, "c1"))
    _, result = await run(model, mcp_servers=[agents_counter_server], context={"user_id": "alice"})
    assert result.final_output == "done"
    assert tool_outputs(model)["c1"] == "BTC: 1.5"
    assert calls() == {"get_balance": 1}
    assert [(e["tool"], e["outcome"], e["identity"], e["server"]) for e in sink.events] == [
        ("get_balance", "ok", "alice", "exchange")
    ]


async def test_hidden_and_denied_tools_are_not_shown_to_the_model(agents_counter_server: MCPServerStdio) -> None:
    guard_mcp_server(agents_counter_server, Guard(POLICY))
    model = script()
    await run(model, mcp_servers=[agents_counter_server])
    # delete_api_key is hidden; nothing allows flaky in CASES_POLICY... but POLICY adds a rule for it.
    assert sorted(tools_sent(model)) == ["create_listen_key", "flaky", "get_balance", "place_order", "withdraw"]
    guard_mcp_server(agents_counter_server, Guard(CASES_POLICY))
    model = script()
    await run(model, mcp_servers=[agents_counter_server])
    assert sorted(tools_sent(model)) == ["create_listen_key", "get_balance", "place_order", "withdraw"]


async def test_existing_tool_filter_is_kept(agents_counter_server: MCPServerStdio) -> None:
    agents_counter_server.tool_filter = {"blocked_tool_names": ["place_order"]}
    try:
        guard_mcp_server(agents_counter_server, Guard(CASES_POLICY))
        model = script()
        await run(model, mcp_servers=[agents_counter_server])
        assert sorted(tools_sent(model)) == ["create_listen_key", "get_balance", "withdraw"]
    finally:
        unguard_mcp_server(agents_counter_server)
        agents_counter_server.tool_filter = None


async def test_denied_call_never_reaches_the_server_and_the_model_gets_the_violation(
    agents_counter_server: MCPServerStdio, calls: Any
) -> None:
    guard, sink, _ = new_guard()
    guard_mcp_server(agents_counter_server, guard)
    model = script(
        call("withdraw", {**WITHDRAW, "address": "bad-1"}, "c1"), call("get_balance", {"asset": "ETH"}, "c2")
    )
    _, result = await run(model, mcp_servers=[agents_counter_server])
    # The run goes on: the model is called again, with the violation as the tool's result.
    assert result.final_output == "done"
    payload = violation(tool_outputs(model, 1)["c1"])
    assert payload is not None
    assert payload["code"] == "denied"
    assert payload["tool"] == "withdraw"
    assert payload["server"] == "exchange"
    assert payload["rule"] == "/tools/exchange~1withdraw/deny_if/args.address-regex"
    assert payload["policy"] == guard.policy.hash
    assert "hint" in payload
    assert calls() == {"get_balance": 1}
    assert [(e["tool"], e["code"], e["outcome"]) for e in sink.events] == [
        ("withdraw", "denied", "denied"),
        ("get_balance", None, "ok"),
    ]


async def test_argument_violations(agents_counter_server: MCPServerStdio, calls: Any) -> None:
    guard_mcp_server(agents_counter_server, Guard(POLICY))
    model = script(
        [
            call("get_balance", {"asset": "btc!"}, "schema"),
            call("place_order", {"symbol": "X", "side": "buy", "amount": 5000}, "deny_if"),
            call("place_order", {"symbol": "X", "side": "short", "amount": 1}, "require"),
        ]
    )
    await run(model, mcp_servers=[agents_counter_server])
    out = tool_outputs(model)
    codes = {k: (violation(v) or {}).get("code") for k, v in out.items()}
    assert codes == {"schema": "invalid_arguments", "deny_if": "denied", "require": "requirement_failed"}
    assert "asset" in (violation(out["schema"]) or {})["reason"]
    assert calls() == {}


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"text"', "{" * 100_000])
async def test_malformed_argument_json_is_a_violation_not_a_crash(
    agents_counter_server: MCPServerStdio, calls: Any, raw: str
) -> None:
    guard, sink, _ = new_guard()
    guard_mcp_server(agents_counter_server, guard)
    model = script(call("place_order", raw, "c1"))
    _, result = await run(model, mcp_servers=[agents_counter_server])
    assert result.final_output == "done"
    payload = violation(tool_outputs(model)["c1"])
    assert payload is not None
    assert payload["code"] == "invalid_arguments"
    assert calls() == {}
    assert [e["code"] for e in sink.events] == ["invalid_arguments"]


async def test_rate_limited_with_retry_after_then_allowed_when_the_window_moves(
    agents_counter_server: MCPServerStdio, calls: Any
) -> None:
    guard, _, clock = new_guard()
    guard_mcp_server(agents_counter_server, guard)
    first = script(*(call("create_listen_key", {}, f"c{i}") for i in range(3)))
    await run(first, mcp_servers=[agents_counter_server])
    out = tool_outputs(first)
    assert out["c0"] == out["c1"] == "listen-key-0001"
    payload = violation(out["c2"])
    assert payload is not None
    assert payload["code"] == "rate_limited"
    assert payload["retry_after_s"] == 60.0
    assert payload["rule"] == "/tools/create_listen_key/limits/0"
    assert calls() == {"create_listen_key": 2}
    clock.advance(60.0)
    again = script(call("create_listen_key", {}, "c3"))
    await run(again, mcp_servers=[agents_counter_server])
    assert tool_outputs(again)["c3"] == "listen-key-0001"


async def test_identity_from_the_run_context_scopes_the_budget(agents_counter_server: MCPServerStdio) -> None:
    class Ctx:
        user_id = "bob"

    guard_mcp_server(agents_counter_server, Guard(POLICY))
    model = script(call("get_balance", {"asset": "BTC"}, "a1"), call("get_balance", {"asset": "BTC"}, "a2"))
    await run(model, mcp_servers=[agents_counter_server], context={"user_id": "alice"})
    assert violation(tool_outputs(model)["a2"]) is not None  # one read per identity per minute
    other = script(call("get_balance", {"asset": "BTC"}, "b1"))
    await run(other, mcp_servers=[agents_counter_server], context=Ctx())  # attribute lookup: a different caller
    assert tool_outputs(other)["b1"] == "BTC: 1.5"
    # An explicit identity overrides the context; a callable reads it.
    guard = Guard(POLICY)
    guard_mcp_server(agents_counter_server, guard, identity=lambda ctx: ctx["tenant"])
    model = script(call("get_balance", {"asset": "BTC"}, "t1"), call("get_balance", {"asset": "BTC"}, "t2"))
    await run(model, mcp_servers=[agents_counter_server], context={"tenant": "acme", "user_id": "x"})
    assert violation(tool_outputs(model)["t2"]) is not None
    assert guard.check("get_balance", {"asset": "BTC"}, identity="acme").code == "rate_limited"
    assert guard.check("get_balance", {"asset": "BTC"}, identity="x").allowed


async def test_failed_call_gives_its_quota_back(agents_counter_server: MCPServerStdio, calls: Any) -> None:
    guard, sink, _ = new_guard()
    guard_mcp_server(agents_counter_server, guard)
    model = script(call("flaky", {}, "c1"), call("flaky", {}, "c2"))
    await run(model, mcp_servers=[agents_counter_server])
    out = tool_outputs(model)
    # Both calls ran (budget of 1): the first failure gave its unit back.
    assert "upstream exploded" in out["c1"]
    assert "upstream exploded" in out["c2"]
    assert calls() == {"flaky": 2}
    assert [e["outcome"] for e in sink.events] == ["error", "error"]
    assert guard.check("flaky", {}, server="exchange").allowed


async def test_violation_raises_only_when_asked(agents_counter_server: MCPServerStdio, calls: Any) -> None:
    guard_mcp_server(agents_counter_server, Guard(POLICY, on_violation="raise"))
    model = script(call("place_order", {"symbol": "X", "side": "buy", "amount": 5000}, "c1"))
    with pytest.raises(ToolInputGuardrailTripwireTriggered) as info:
        await run(model, mcp_servers=[agents_counter_server])
    assert info.value.output.output_info["code"] == "denied"
    assert calls() == {}


async def test_direct_call_tool_goes_through_the_guard(agents_counter_server: MCPServerStdio, calls: Any) -> None:
    guard_mcp_server(agents_counter_server, Guard(POLICY))
    hidden = await agents_counter_server.call_tool("delete_api_key", {"key_id": "k1"})
    assert result_is_error(hidden)
    assert (violation(hidden.content[0].text) or {})["code"] == "hidden"  # type: ignore[union-attr]
    held = await agents_counter_server.call_tool("withdraw", dict(WITHDRAW))
    assert (violation(held.content[0].text) or {})["code"] == "approval_required"  # type: ignore[union-attr]
    ok = await agents_counter_server.call_tool("get_balance", {"asset": "BTC"})
    assert not result_is_error(ok)
    assert calls() == {"get_balance": 1}


# -- approvals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expect_output", "expect_calls"),
    [
        (True, "withdrew 1 BTC to addr1", {"withdraw": 1}),
        (ApprovalDecision.deny("not today"), "approval_denied", {}),
        (ApprovalDecision.edit({**WITHDRAW, "address": "addr-safe"}), "withdrew 1 BTC to addr-safe", {"withdraw": 1}),
        (ApprovalDecision.edit({**WITHDRAW, "address": "bad-edit"}), "denied", {}),
    ],
    ids=["yes", "no", "edit", "edit-to-forbidden"],
)
async def test_approval_by_callback(
    agents_counter_server: MCPServerStdio, calls: Any, answer: Any, expect_output: str, expect_calls: dict[str, int]
) -> None:
    asked: list[ApprovalRequest] = []

    def approver(request: ApprovalRequest) -> Any:
        asked.append(request)
        return answer

    guard_mcp_server(agents_counter_server, POLICY, approver=approver)
    model = script(call("withdraw", WITHDRAW, "c1"))
    _, result = await run(model, mcp_servers=[agents_counter_server], context={"user_id": "alice"})
    assert not result.interruptions  # decided inline: no SDK pause
    out = tool_outputs(model)["c1"]
    payload = violation(out)
    assert (payload["code"] if payload else out) == expect_output
    assert calls() == expect_calls
    assert [(r.tool, r.server, r.identity, dict(r.args)) for r in asked] == [
        ("withdraw", "exchange", "alice", WITHDRAW)
    ]


@pytest.mark.parametrize("serialize", [False, True], ids=["in-memory", "to_string"])
@pytest.mark.parametrize("pre_approval_guardrails", [False, True], ids=["default", "pre-approval-guardrails"])
async def test_approval_by_interruption_and_resume_uses_quota_once(
    agents_counter_server: MCPServerStdio, calls: Any, serialize: bool, pre_approval_guardrails: bool
) -> None:
    guard, sink, _ = new_guard()
    guard_mcp_server(agents_counter_server, guard)
    config = RunConfig(tool_execution={"pre_approval_tool_input_guardrails": pre_approval_guardrails})
    model = script(call("withdraw", WITHDRAW, "c1"))
    agent, paused = await run(model, mcp_servers=[agents_counter_server], run_config=config)
    assert [(i.tool_name, i.call_id) for i in paused.interruptions] == [("withdraw", "c1")]
    assert calls() == {}
    # Nothing is reserved while a human decides: the budget of one withdrawal is still whole.
    assert guard.check("withdraw", WITHDRAW, server="exchange").needs_approval
    assert sink.events == []
    state = paused.to_state()
    if serialize:
        state = await RunState.from_string(agent, state.to_string())
    for item in state.get_interruptions():
        state.approve(item)
    result = await Runner.run(agent, state, run_config=config)
    assert result.final_output == "done"
    assert tool_outputs(model)["c1"] == "withdrew 1 BTC to addr1"
    assert calls() == {"withdraw": 1}
    # Exactly one unit was used: the next withdrawal is over budget.
    assert guard.check("withdraw", WITHDRAW, server="exchange").code == "rate_limited"
    assert [(e["tool"], e["outcome"], e.get("approval")) for e in sink.events] == [("withdraw", "ok", "approve")]


async def test_rejected_interruption_uses_no_quota(agents_counter_server: MCPServerStdio, calls: Any) -> None:
    guard, _, _ = new_guard()
    guard_mcp_server(agents_counter_server, guard)
    model = script(call("withdraw", WITHDRAW, "c1"))
    agent, paused = await run(model, mcp_servers=[agents_counter_server])
    state = paused.to_state()
    state.reject(paused.interruptions[0], rejection_message="a human said no")
    result = await Runner.run(agent, state)
    assert result.final_output == "done"
    # 0.2: a plain state.reject() is answered in the policy's words, the human's message as the reason.
    payload = violation(tool_outputs(model)["c1"]) or {}
    assert (payload.get("code"), payload.get("reason")) == ("approval_denied", "a human said no")
    assert calls() == {}
    assert guard.check("withdraw", WITHDRAW, server="exchange").needs_approval  # budget untouched


async def test_no_pause_for_a_call_that_would_be_refused(agents_counter_server: MCPServerStdio, calls: Any) -> None:
    guard, _, _ = new_guard()
    guard_mcp_server(agents_counter_server, guard)
    # A bad address is denied before any human is asked: no interruption, the model gets the violation.
    model = script(call("withdraw", {**WITHDRAW, "address": "bad"}, "c1"))
    _, result = await run(model, mcp_servers=[agents_counter_server])
    assert not result.interruptions
    assert (violation(tool_outputs(model)["c1"]) or {})["code"] == "denied"
    assert calls() == {}


@pytest.mark.parametrize("serialize", [False, True], ids=["in-memory", "to_string"])
async def test_reject_helper_gives_the_model_the_violation_and_writes_one_audit_event(
    agents_counter_server: MCPServerStdio, calls: Any, serialize: bool
) -> None:
    guard, sink, _ = new_guard()
    guard_mcp_server(agents_counter_server, guard)
    model = script(call("withdraw", WITHDRAW, "c1"))
    agent, paused = await run(model, mcp_servers=[agents_counter_server], context={"user_id": "alice"})
    state = paused.to_state()
    if serialize:
        state = await RunState.from_string(agent, state.to_string())
    for item in state.get_interruptions():
        reject(state, item, "not before the audit")
    result = await Runner.run(agent, state)
    assert result.final_output == "done"
    payload = violation(tool_outputs(model)["c1"])
    assert payload is not None
    assert (payload["code"], payload["reason"], payload["server"]) == (
        "approval_denied",
        "not before the audit",
        "exchange",
    )
    assert calls() == {}
    assert [(e["tool"], e["code"], e["outcome"], e["identity"]) for e in sink.events] == [
        ("withdraw", "approval_denied", "denied", "alice")
    ]
    assert guard.check("withdraw", WITHDRAW, server="exchange").needs_approval  # budget untouched


async def test_parallel_calls_in_one_turn_are_admitted_exactly_to_the_budget(
    agents_counter_server: MCPServerStdio, calls: Any
) -> None:
    guard, sink, _ = new_guard()
    guard_mcp_server(agents_counter_server, guard)
    model = script([call("create_listen_key", {}, f"c{i}") for i in range(5)])
    await run(model, mcp_servers=[agents_counter_server])
    out = tool_outputs(model)
    codes = sorted((violation(v) or {}).get("code", "ok") for v in out.values())
    assert codes == ["ok", "ok", "rate_limited", "rate_limited", "rate_limited"]
    assert calls() == {"create_listen_key": 2}
    assert sorted(e["outcome"] for e in sink.events) == ["denied", "denied", "denied", "ok", "ok"]


async def test_server_prefixed_tool_names_still_meet_their_rules(
    agents_counter_server: MCPServerStdio, calls: Any
) -> None:
    # With include_server_in_tool_names the model sees mcp_exchange__withdraw; the rules name withdraw.
    guard, sink, _ = new_guard()
    guard_mcp_server(agents_counter_server, guard)
    model = script(
        [
            call("mcp_exchange__withdraw", {**WITHDRAW, "address": "bad"}, "c1"),
            call("mcp_exchange__get_balance", {"asset": "BTC"}, "c2"),
        ]
    )
    agent = Agent(
        name="t", model=model, mcp_servers=[agents_counter_server], mcp_config={"include_server_in_tool_names": True}
    )
    await Runner.run(agent, "go")
    assert "mcp_exchange__delete_api_key" not in tools_sent(model)
    out = tool_outputs(model)
    assert (violation(out["c1"]) or {})["rule"] == "/tools/exchange~1withdraw/deny_if/args.address-regex"
    assert out["c2"] == "BTC: 1.5"
    assert calls() == {"get_balance": 1}
    assert sorted(e["tool"] for e in sink.events) == ["get_balance", "withdraw"]


async def test_streamed_runs_are_guarded_the_same_way(agents_counter_server: MCPServerStdio, calls: Any) -> None:
    guard, _, _ = new_guard()
    guard_mcp_server(agents_counter_server, guard)
    model = script(
        [call("withdraw", {**WITHDRAW, "address": "bad"}, "c1"), call("get_balance", {"asset": "BTC"}, "c2")]
    )
    agent = Agent(name="s", model=model, mcp_servers=[agents_counter_server])
    streamed = Runner.run_streamed(agent, "go", context={"session_id": "s-1"})
    async for _ in streamed.stream_events():
        pass
    assert streamed.final_output == "done"
    out = tool_outputs(model)
    assert (violation(out["c1"]) or {})["code"] == "denied"
    assert out["c2"] == "BTC: 1.5"
    assert calls() == {"get_balance": 1}
