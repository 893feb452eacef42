"""Waiting out a rate limit (``on_rate_limit="wait"``), bounded by ``max_wait_s``; ``"error"`` returns at once.

Time is a :class:`FakeClock` and the guard's sleep advances it: no test sleeps for real.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mcp_guard import ApprovalRequest, Guard, MemorySink, Policy
from mcp_guard._stores import Store
from tests.support.clock import FakeClock

POLICY = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "tools": {
            "tick": {"limits": [{"counter": "tick", "window": 1, "max": 1, "scope": "global"}]},
            "held": {
                "action": "require_approval",
                "limits": [{"counter": "held", "window": 1, "max": 1, "scope": "global"}],
            },
        },
    }
)


class Sleeper:
    """The guard's injected sleep: records each wait and moves the clock instead of sleeping."""

    def __init__(self, clock: FakeClock, meanwhile: Callable[[], None] | None = None) -> None:
        self.clock = clock
        self.slept: list[float] = []
        self.meanwhile = meanwhile

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.advance(seconds)
        if self.meanwhile is not None:
            self.meanwhile()

    async def asleep(self, seconds: float) -> None:
        self(seconds)


def _guard(clock: FakeClock, sleeper: Sleeper, **options: Any) -> Guard:
    options.setdefault("store", "memory://")
    return Guard(POLICY, clock=clock, sleep=sleeper, asleep=sleeper.asleep, **options)


def _tool() -> Callable[..., str]:
    return lambda **_: "ran"


async def _call(guard: Guard, path: str, tool: str = "tick") -> Any:
    if path == "invoke":
        return guard.invoke(tool, {}, _tool())
    return await guard.ainvoke(tool, {}, _tool())


PATHS = ["invoke", "ainvoke"]


@pytest.mark.parametrize("path", PATHS)
async def test_a_limit_freeing_in_0_2_s_succeeds_after_0_2_s(path: str, store: Store, clock: FakeClock) -> None:
    sleeper = Sleeper(clock)
    guard = _guard(clock, sleeper, store=store, on_rate_limit="wait", max_wait_s=5)
    assert await _call(guard, path) == "ran"
    clock.advance(0.8)  # the first call's entry leaves the 1 s window 0.2 s from now
    started = clock()
    assert await _call(guard, path) == "ran"
    assert sleeper.slept == [pytest.approx(0.2, abs=0.011)]  # retry_after is rounded up to 0.01 s
    assert clock() - started == pytest.approx(0.2, abs=0.011)


@pytest.mark.parametrize("path", PATHS)
async def test_error_mode_returns_the_violation_with_retry_after(path: str, clock: FakeClock) -> None:
    sleeper = Sleeper(clock)
    guard = _guard(clock, sleeper)  # on_rate_limit="error" is the default
    assert await _call(guard, path) == "ran"
    clock.advance(0.8)
    refused = await _call(guard, path)
    assert refused["code"] == "rate_limited"
    assert refused["retry_after_s"] == pytest.approx(0.2, abs=0.011)
    assert "Wait at least" in refused["hint"]
    assert sleeper.slept == []


@pytest.mark.parametrize("path", PATHS)
async def test_never_sleeps_when_the_wait_exceeds_max_wait(path: str, clock: FakeClock) -> None:
    sleeper = Sleeper(clock)
    guard = _guard(clock, sleeper, on_rate_limit="wait", max_wait_s=0.1)
    assert await _call(guard, path) == "ran"
    clock.advance(0.8)
    refused = await _call(guard, path)
    assert refused["code"] == "rate_limited"
    assert refused["retry_after_s"] == pytest.approx(0.2, abs=0.011)
    assert sleeper.slept == []


@pytest.mark.parametrize("path", PATHS)
async def test_waits_stop_at_max_wait_when_others_keep_taking_the_budget(path: str, clock: FakeClock) -> None:
    # Every time the waiter wakes up, another caller has just taken the freed slot.
    holder: list[Guard] = []

    def someone_else_calls() -> None:
        assert holder[0].invoke("tick", {}, _tool()) == "ran"

    sleeper = Sleeper(clock, meanwhile=someone_else_calls)
    guard = _guard(clock, sleeper, on_rate_limit="wait", max_wait_s=2.5)
    holder.append(Guard(guard, store=guard.store, clock=clock))  # same budget, no waiting
    assert await _call(guard, path) == "ran"
    refused = await _call(guard, path)
    assert refused["code"] == "rate_limited"
    assert sleeper.slept == [pytest.approx(1.0, abs=0.011)] * 2  # a third 1 s wait would pass 2.5 s
    assert sum(sleeper.slept) <= 2.5


async def test_a_human_is_asked_once_after_the_wait_and_the_held_quota_is_not_taken(clock: FakeClock) -> None:
    # Spec 0.2 (was: another caller takes the budget while the human decides, and the guard waits after the
    # approval): the budget is waited for *before* the human is asked, and held while they decide, so
    # another caller cannot take it and the approved call runs without a second wait or a second question.
    requests: list[ApprovalRequest] = []
    holder: list[Guard] = []

    def approver(request: ApprovalRequest) -> bool:
        requests.append(request)
        assert holder[0].invoke("held", {}, _tool(), approval=True)["code"] == "rate_limited"
        return True

    sleeper = Sleeper(clock)
    sink = MemorySink()
    guard = _guard(clock, sleeper, approver=approver, on_rate_limit="wait", max_wait_s=5, audit=sink)
    holder.append(Guard(guard, store=guard.store, clock=clock))
    assert holder[0].invoke("held", {}, _tool(), approval=True) == "ran"  # takes the only slot
    assert await guard.ainvoke("held", {}, _tool()) == "ran"
    assert len(requests) == 1
    assert sleeper.slept == [pytest.approx(1.0, abs=0.011)]
    assert [(e["outcome"], e["approval"]) for e in sink.events] == [("ok", "approve")]


def test_a_cost_larger_than_max_is_refused_without_waiting(clock: FakeClock) -> None:
    policy = Policy.from_dict(
        {
            "version": "1",
            "default": "deny",
            "tools": {"spend": {"limits": [{"counter": "s", "window": 60, "max": 10, "cost": "args.amount"}]}},
        }
    )
    sleeper = Sleeper(clock)
    guard = Guard(policy, clock=clock, sleep=sleeper, on_rate_limit="wait", max_wait_s=600)
    refused = guard.invoke("spend", {"amount": 11}, _tool())
    assert refused["code"] == "rate_limited"
    assert "retry_after_s" not in refused  # it never fits: waiting cannot help
    assert "Do not retry" in refused["hint"]
    assert sleeper.slept == []
