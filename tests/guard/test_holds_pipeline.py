"""A Guard holds its pipeline: options and policy set after construction, and views, reach the calls they should.

Judged at the far side: which tool body ran, which approver was asked, what the audit sink received.
"""

from __future__ import annotations

from typing import Any

from mcp_guard import ApprovalRequest, Guard, MemorySink, Policy

DENY_ALL = {"version": "1", "default": "deny", "tools": {"t": {"action": "deny", "reason": "no"}}}
SHADOW_DENY = {**DENY_ALL, "mode": "shadow"}
ASKS = {"version": "1", "default": "deny", "tools": {"t": {"action": "require_approval"}}}


def test_a_policy_assigned_after_construction_brings_its_shadow_mode_with_it() -> None:
    # Assigning guard.policy used to swap the policy but not its modes: a policy in shadow still refused.
    sink = MemorySink()
    ran: list[dict[str, Any]] = []
    guard = Guard(Policy.from_dict(DENY_ALL), audit=sink)
    assert guard.invoke("t", {"x": 1}, lambda **a: ran.append(a))["code"] == "denied"
    guard.policy = Policy.from_dict(SHADOW_DENY)
    guard.invoke("t", {"x": 2}, lambda **a: ran.append(a))
    assert ran == [{"x": 2}]
    assert [(e["outcome"], e.get("shadow"), e.get("would_code")) for e in sink.events] == [
        ("denied", None, None),
        ("ok", True, "denied"),
    ]
    assert sink.events[-1]["policy"] == guard.policy.hash


def test_a_view_asks_its_own_approver_and_the_guard_keeps_its_own() -> None:
    asked: list[str] = []

    def approver(name: str, answer: bool) -> Any:
        def ask(request: ApprovalRequest) -> bool:
            asked.append(name)
            return answer

        return ask

    sink = MemorySink()
    guard = Guard(Policy.from_dict(ASKS), audit=sink, approver=approver("guard", False))
    view = guard.with_approver(approver("view", True))
    ran: list[str] = []
    view.invoke("t", {}, lambda: ran.append("view"))
    guard.invoke("t", {}, lambda: ran.append("guard"))
    view.invoke("t", {}, lambda: ran.append("view"))
    assert asked == ["view", "guard", "view"]
    assert ran == ["view", "view"]
    assert [e["outcome"] for e in sink.events] == ["ok", "denied", "ok"]


def test_an_option_set_after_construction_applies_to_the_next_call() -> None:
    # on_rate_limit and max_wait_s are read from the pipeline's config: setting them swaps the config.
    slept: list[float] = []
    policy = {
        "version": "1",
        "default": "deny",
        "tools": {"t": {"limits": [{"counter": "c", "window": "minute", "max": 1, "scope": "global"}]}},
    }
    now = [0.0]
    guard = Guard(
        Policy.from_dict(policy),
        clock=lambda: now[0],
        sleep=lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)),
    )
    calls: list[int] = []
    guard.invoke("t", {}, lambda: calls.append(1))
    assert guard.invoke("t", {}, lambda: calls.append(2))["code"] == "rate_limited"
    guard.on_rate_limit = "wait"
    guard.max_wait_s = 120.0
    guard.invoke("t", {}, lambda: calls.append(3))
    assert calls == [1, 3]
    assert len(slept) == 1
    assert 0 < slept[0] <= 60
