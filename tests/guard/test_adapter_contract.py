"""The adapter contract (issue 11): what the Guard offers every framework adapter, so that adapters only
translate framework objects. A refusal decided outside the pipeline is audited once; ``on_violation`` is
applied in one place; a fault of the guard itself is a ``guard_unavailable`` refusal, never an exception out of
``run``/``arun``, and the tool never runs; the tool's own exception still propagates unchanged."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mcp_guard import Guard, MemorySink, Policy, PolicyViolation, ToolCall

POLICY = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "tools": {
            "echo": {"action": "allow"},
            "wait": {"limits": [{"counter": "w", "window": "minute", "max": 1, "scope": "global"}]},
            "held": {"action": "require_approval", "reason": "a human looks first"},
        },
    }
)


def _guard(**options: Any) -> tuple[Guard, MemorySink]:
    sink = MemorySink()
    return Guard(POLICY, audit=sink, **options), sink


@pytest.mark.parametrize("on_violation", ["return", "raise"])
def test_refuse_audits_once_and_applies_on_violation(on_violation: str) -> None:
    guard, sink = _guard(on_violation=on_violation)
    call = ToolCall("echo", {}, server="s", call_id="c1")
    decision = guard.malformed("echo", "the arguments are not a JSON object", server="s")
    if on_violation == "raise":
        with pytest.raises(PolicyViolation) as raised:
            guard.refuse(call, decision)
        assert raised.value.decision.code == "invalid_arguments"
    else:
        assert guard.refuse(call, decision).code == "invalid_arguments"
    assert [(e["tool"], e["code"], e["call_id"]) for e in sink.events] == [("echo", "invalid_arguments", "c1")]


def test_arefuse_and_rejected_name_the_rule_that_asked() -> None:
    guard, sink = _guard()
    call = ToolCall("held", {"x": 1}, call_id="c2")
    decision = guard.rejected(call, "not today")
    assert (decision.code, decision.rule, decision.reason) == ("approval_denied", "/tools/held", "not today")
    assert asyncio.run(guard.arefuse(call, decision)) is decision
    assert [(e["code"], e["rule"]) for e in sink.events] == [("approval_denied", "/tools/held")]


class _BrokenSleep:
    """A guard whose own part fails before the tool is handed the call (here: the rate-limit wait)."""

    def __call__(self, seconds: float) -> None:
        raise RuntimeError("the clock broke")

    async def asleep(self, seconds: float) -> None:
        raise RuntimeError("the clock broke")


def test_guard_fault_is_a_refusal_not_an_exception_sync_and_async() -> None:
    broken = _BrokenSleep()
    guard, sink = _guard(on_rate_limit="wait", max_wait_s=120, sleep=broken, asleep=broken.asleep)
    ran: list[str] = []
    assert guard.run("wait", {}, lambda: ran.append("first")).ok
    result = guard.run("wait", {}, lambda: ran.append("sync"))
    assert result.violation is not None
    assert result.violation.code == "guard_unavailable"
    assert result.violation.reason == "the policy guard failed: RuntimeError"

    async def tool() -> None:
        ran.append("async")

    aresult = asyncio.run(guard.arun("wait", {}, tool))
    assert aresult.violation is not None
    assert aresult.violation.code == "guard_unavailable"
    assert ran == ["first"]  # the tool never ran on a fault
    assert len(sink.events) == 3  # one event per call, never two


def test_the_tools_own_exception_still_propagates() -> None:
    guard, sink = _guard()

    def boom() -> None:
        raise ValueError("the tool's own failure")

    with pytest.raises(ValueError, match="own failure"):
        guard.run("echo", {}, boom)
    assert [e["outcome"] for e in sink.events] == ["error"]


def test_is_error_result_reads_every_spelling() -> None:
    assert Guard.is_error_result({"isError": True})
    assert Guard.is_error_result({"is_error": True})
    assert not Guard.is_error_result({"isError": False})
    assert not Guard.is_error_result("plain text")


def test_an_admission_the_sdk_never_ran_is_finished_when_forgotten() -> None:
    """The Agents SDK adapter parks each admitted call for its tool; a call the SDK never starts (a run abandoned
    between the guardrail and the tool) must not hold quota forever or lose its audit event."""
    pytest.importorskip("agents")
    from mcp_guard.integrations._agents_binding import _Binding

    policy = {
        "version": "1",
        "default": "deny",
        "tools": {"pay": {"limits": [{"counter": "p", "window": "minute", "max": 3, "scope": "global"}]}},
    }
    sink = MemorySink()
    guard = Guard(policy, audit=sink)
    binding = _Binding(guard, server=None, identity=None, session=None, wrapped=True)
    binding.admitted.limit = 2
    for n in range(3):  # the third parked admission makes the binding forget the first
        ctx = object()
        admission = guard.admit("pay", {}, call_id=f"c{n}")
        assert admission.admitted
        binding.admitted[id(ctx)] = (ctx, admission, False)
    assert [(e["call_id"], e["outcome"]) for e in sink.events] == [("c0", "denied")]
    # Its quota came back: a fourth call fits under the limit of 3 beside the two still parked.
    assert guard.admit("pay", {}, call_id="c3").admitted


def test_refuse_without_delivery_audits_and_never_raises() -> None:
    """A refusal recorded after the fact (a human's rejection) has no caller to catch an exception."""
    guard, sink = _guard(on_violation="raise")
    call = ToolCall("held", {}, call_id="c9")
    decision = guard.rejected(call, "no")
    assert guard.refuse(call, decision, deliver=False) is decision
    assert [(e["call_id"], e["code"]) for e in sink.events] == [("c9", "approval_denied")]
