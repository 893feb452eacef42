"""Shadow mode: the would-be decision is audited exactly as enforcement would write it, and nothing is refused.

The judge of "the call went ahead" is the real MCP counter server's own record (agent test) or the tool
function's own list of calls (unit tests), never the guard's view.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent

from mcp_guard import ApprovalDecision, Guard, MemorySink, Policy, PolicyError
from mcp_guard.integrations.langchain import GuardInterceptor
from tests.support.clock import FakeClock
from tests.support.langchain_helpers import ExchangeServer, call, script, tool_messages, violation
from tests.support.marks import module_loop

AGENT_POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "hide": ["delete_api_key"],
    "tools": {
        "get_balance": {"limits": [{"counter": "balance", "window": "minute", "max": 2, "scope": "identity"}]},
        "place_order": {"require": {"args.side": {"in": ["buy", "sell"]}}},
        "withdraw": {"action": "require_approval"},
    },
}

# One scripted run: allowed, allowed, rate limited, hidden, requirement failed, approval required, default deny.
SCRIPT = [
    ("get_balance", {"asset": "BTC"}),
    ("get_balance", {"asset": "ETH"}),
    ("get_balance", {"asset": "SOL"}),
    ("delete_api_key", {"key_id": "k1"}),
    ("place_order", {"symbol": "BTCUSD", "side": "hold", "amount": 1}),
    ("withdraw", {"asset": "USD", "amount": 5, "address": "0xabc"}),
    ("create_listen_key", {}),
]
ENFORCED = [
    ("allow", None),
    ("allow", None),
    ("deny", "rate_limited"),
    ("deny", "hidden"),
    ("deny", "requirement_failed"),
    ("deny", "approval_required"),
    ("deny", "default_deny"),
]


async def run_agent(exchange_server: ExchangeServer, guard: Guard) -> list[Any]:
    tools = await exchange_server.tools(tool_interceptors=[GuardInterceptor(guard)])
    model = script(*(call(name, args, f"c{i}") for i, (name, args) in enumerate(SCRIPT)))
    state = await create_agent(model, tools).ainvoke({"messages": [("user", "go")]}, context={"user_id": "erin"})
    assert state["messages"][-1].content == "done"
    return tool_messages(state["messages"])


@module_loop
async def test_agent_run_under_shadow_audits_what_enforce_decides_and_every_call_reaches_the_server(
    exchange_server: ExchangeServer,
) -> None:
    enforce_sink, shadow_sink = MemorySink(), MemorySink()
    before = exchange_server.counts()
    enforced = await run_agent(exchange_server, Guard(AGENT_POLICY, audit=enforce_sink, clock=FakeClock()))
    middle = exchange_server.counts()
    shadowed = await run_agent(
        exchange_server, Guard(AGENT_POLICY, audit=shadow_sink, clock=FakeClock(), mode="shadow")
    )
    after = exchange_server.counts()

    # Enforced: the audit says what happened, and only the two allowed calls reached the server.
    assert [(e["decision"], e["code"]) for e in enforce_sink.events] == ENFORCED
    assert middle - before == {"get_balance": 2}
    assert [violation(m) is None for m in enforced] == [code is None for _, code in ENFORCED]

    # Shadow: the same decisions, codes and rules in the audit, marked; and every call reached the server.
    key = [(e["decision"], e["code"], e["rule"]) for e in enforce_sink.events]
    assert [(e["decision"], e["code"], e["rule"]) for e in shadow_sink.events] == key
    for enforced_event, event in zip(enforce_sink.events, shadow_sink.events, strict=True):
        assert event["shadow"] is True
        assert event["outcome"] == "ok"
        if enforced_event["code"] is not None:
            assert event["would_code"] == enforced_event["code"]
            assert event["would_rule"] == enforced_event["rule"]
        else:
            assert "would_code" not in event
    assert after - middle == {name: sum(1 for n, _ in SCRIPT if n == name) for name, _ in SCRIPT}
    assert all(violation(m) is None for m in shadowed)


class Tool:
    """A tool that records every call it receives (the judge of whether the call went ahead)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    def __call__(self, **args: Any) -> str:
        self.calls.append(args)
        if self.fail:
            raise RuntimeError("tool failed")
        return "ok"


def limit(counter: str, max_: int, scope: str = "identity") -> dict[str, Any]:
    return {"counter": counter, "window": "minute", "max": max_, "scope": scope}


def test_policy_level_shadow_runs_a_would_be_rate_limited_call_and_counts_what_fits(clock: FakeClock) -> None:
    sink, tool = MemorySink(), Tool()
    policy = {
        "version": "1",
        "default": "deny",
        "mode": "shadow",
        "tools": {"t": {"limits": [limit("small", 1), limit("big", 10)]}},
    }
    guard = Guard(policy, audit=sink, clock=clock)
    for _ in range(3):
        assert guard.invoke("t", {}, tool, identity="a") == "ok"
    assert len(tool.calls) == 3
    assert [e.get("would_code") for e in sink.events] == [None, "rate_limited", "rate_limited"]
    assert sink.events[1]["would_rule"] == "/tools/t/limits/0"
    assert sink.events[1]["would_retry_after_s"] == 60.0
    # "small" is full after the first call; "big" still counts every call that ran.
    used = {u.counter: u.used for u in guard.usage(identity="a", tool="t")}
    assert used == {"small": 1, "big": 3}


def test_rule_level_shadow_applies_only_to_decisions_made_by_that_rule(clock: FakeClock) -> None:
    sink, tool = MemorySink(), Tool()
    policy = {
        "version": "1",
        "default": "deny",
        "tools": {
            "new_rule": {"mode": "shadow", "deny_if": {"args.n": {"gt": 5}}},
            "old_rule": {"deny_if": {"args.n": {"gt": 5}}},
        },
    }
    guard = Guard(policy, audit=sink, clock=clock)
    assert guard.invoke("new_rule", {"n": 9}, tool) == "ok"
    refused = guard.invoke("old_rule", {"n": 9}, tool)
    assert refused["code"] == "denied"
    refused = guard.invoke("unknown", {}, tool)
    assert refused["code"] == "default_deny"
    assert tool.calls == [{"n": 9}]
    assert [(e["code"], e.get("shadow", False)) for e in sink.events] == [
        ("denied", True),
        ("denied", False),
        ("default_deny", False),
    ]


def test_all_tools_limit_in_shadow_while_the_tool_rule_enforces(clock: FakeClock) -> None:
    tool = Tool()
    policy = {
        "version": "1",
        "default": "allow",
        "all_tools": {"mode": "shadow", "limits": [limit("all", 1, "global")]},
        "tools": {"t": {"limits": [limit("own", 2)]}},
    }
    guard = Guard(policy, clock=clock)
    assert guard.invoke("t", {}, tool) == "ok"
    assert guard.invoke("t", {}, tool) == "ok"  # the all_tools limit is full, but in shadow
    refused = guard.invoke("t", {}, tool)  # the tool's own limit is enforced
    assert refused["code"] == "rate_limited"
    assert refused["rule"] == "/tools/t/limits/0"
    assert len(tool.calls) == 2


def test_a_full_limit_in_shadow_does_not_skip_an_enforced_approval(clock: FakeClock) -> None:
    # The approval rule enforces; only the all_tools limit is in shadow. Once that limit is full, the human
    # must still be asked (with the rule's own quota held meanwhile), and a "no" still refuses.
    sink, tool = MemorySink(), Tool()
    policy = {
        "version": "1",
        "default": "allow",
        "all_tools": {"mode": "shadow", "limits": [limit("all", 1, "global")]},
        "tools": {"w": {"action": "require_approval", "limits": [limit("own", 5)]}},
    }
    answers = [True, True, False]
    held: list[float] = []
    guard: Guard

    def approver(request: Any) -> ApprovalDecision:
        held.append({u.counter: u.used for u in guard.usage(identity="a", tool="w")}["own"])
        return ApprovalDecision.approve() if answers.pop(0) else ApprovalDecision.deny("no")

    guard = Guard(policy, audit=sink, approver=approver, clock=clock)
    assert guard.invoke("w", {}, tool, identity="a") == "ok"
    assert guard.invoke("w", {}, tool, identity="a") == "ok"  # "all" is full, in shadow: asked all the same
    assert guard.invoke("w", {}, tool, identity="a")["code"] == "approval_denied"
    assert len(tool.calls) == 2
    assert held == [1, 2, 3]  # the rule's quota was held while each human decided
    assert [(e["code"], e.get("would_code"), e.get("approval")) for e in sink.events] == [
        (None, None, "approve"),
        ("rate_limited", "rate_limited", "approve"),
        ("approval_denied", None, "deny"),
    ]
    assert {u.counter: u.used for u in guard.usage(identity="a", tool="w")} == {"all": 1, "own": 2}


def test_guard_mode_overrides_the_policy_both_ways(clock: FakeClock) -> None:
    shadow_policy = {"version": "1", "default": "deny", "mode": "shadow"}
    tool = Tool()
    assert Guard(shadow_policy, mode="enforce", clock=clock).invoke("x", {}, tool)["code"] == "default_deny"
    assert Guard(shadow_policy, clock=clock).invoke("x", {}, tool) == "ok"
    assert Guard({"version": "1", "default": "deny"}, mode="shadow").invoke("x", {}, tool) == "ok"
    assert len(tool.calls) == 2
    with pytest.raises(ValueError, match="mode must be"):
        Guard(shadow_policy, mode="dry-run")  # type: ignore[arg-type]


def test_shadow_never_asks_a_human(clock: FakeClock) -> None:
    asked: list[Any] = []

    def approver(request: Any) -> ApprovalDecision:
        asked.append(request)
        return ApprovalDecision.deny("no")

    policy = {"version": "1", "default": "require_approval", "mode": "shadow"}
    sink, tool = MemorySink(), Tool()
    Guard(policy, audit=sink, approver=approver, clock=clock).invoke("x", {}, tool)
    Guard(policy, audit=sink, clock=clock).invoke("x", {}, tool)
    assert asked == []
    assert len(tool.calls) == 2
    with_approver, without = sink.events
    assert (with_approver["decision"], with_approver["code"]) == ("require_approval", None)
    assert (without["decision"], without["would_code"]) == ("deny", "approval_required")


def test_check_under_shadow_says_what_admission_will_do(clock: FakeClock) -> None:
    guard = Guard({"version": "1", "default": "require_approval", "mode": "shadow"}, clock=clock)
    assert guard.check("x", {}).allowed
    enforcing = Guard({"version": "1", "default": "require_approval"}, clock=clock)
    assert enforcing.check("x", {}).needs_approval


@pytest.mark.parametrize("mode", ["shadow", "enforce"])
def test_a_failed_tool_in_shadow_is_charged_as_under_enforcement(clock: FakeClock, mode: str) -> None:
    # The guard's rule (spec 0.2): an error result gives its quota back; an exception from inside the tool
    # keeps it (the tool may have acted). Shadow mode charges exactly as enforcement does.
    policy = {"version": "1", "default": "allow", "mode": mode, "tools": {"t": {"limits": [limit("c", 5)]}}}
    guard = Guard(policy, clock=clock)
    tool = Tool()
    guard.invoke("t", {}, tool, identity="a", is_error=lambda value: True)
    assert [u.used for u in guard.usage(identity="a", tool="t")] == [0]
    with pytest.raises(RuntimeError):
        guard.invoke("t", {}, Tool(fail=True), identity="a")
    assert [u.used for u in guard.usage(identity="a", tool="t")] == [1]
    assert len(tool.calls) == 1


async def test_async_path_shadows_the_same_way(clock: FakeClock) -> None:
    sink = MemorySink()
    guard = Guard({"version": "1", "default": "deny", "mode": "shadow"}, audit=sink, clock=clock)
    ran: list[str] = []

    async def tool() -> str:
        ran.append("x")
        return "ok"

    assert await guard.ainvoke("x", {}, tool) == "ok"
    assert ran == ["x"]
    assert sink.events[0]["would_code"] == "default_deny"


def test_mode_is_validated_in_the_policy() -> None:
    with pytest.raises(PolicyError, match="mode"):
        Policy.from_dict({"version": "1", "default": "allow", "mode": "audit"})
    with pytest.raises(PolicyError, match="tools"):
        Policy.from_dict({"version": "1", "default": "allow", "tools": {"t": {"mode": 1}}})
    assert Policy.from_dict({"version": "1", "default": "allow", "tools": {"t": {"mode": "shadow"}}})


def test_a_tool_hidden_or_denied_in_shadow_stays_visible_to_the_model() -> None:
    policy = {"version": "1", "default": "deny", "hide": ["secret"], "tools": {"old": {"action": "deny"}}}
    enforcing, shadowing = Guard(policy), Guard(policy, mode="shadow")
    for name in ("secret", "old", "unnamed"):
        assert not enforcing.exposes(name)
        assert shadowing.exposes(name)
    ruled = Guard({**policy, "tools": {"old": {"action": "deny", "mode": "shadow"}}})
    assert ruled.exposes("old")
    assert not ruled.exposes("secret")
