"""Approvals asked in line: an async approver on the caller's loop (its own task, started at once, no thread, no
timer while it needs no waiting); ``approval_timeout_s=None`` calling a sync approver on the calling thread;
the default keeping the worker thread and its timeout (fail closed).

Each test judges by what the approver saw (its thread, its loop), what the tool recorded (it ran or not) and
the audit event in a :class:`MemorySink`, not by the guard's own view.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from mcp_guard import ApprovalDecision, ApprovalRequest, Guard, MemorySink

POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "transfer": {"action": "require_approval"},  # the Guard's approval_timeout_s applies
        "withdraw": {"action": "require_approval", "approval": {"timeout_s": 0.2}},  # the rule's wins
        "read": {},
    },
}

TIMEOUT_MARGIN_S = 0.75  # generous for a loaded CI machine; the point is "not the 1 h the approver waits"


class Tool:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> str:
        self.calls.append(kwargs)
        return "sent"

    async def acall(self, **kwargs: Any) -> str:
        return self(**kwargs)


class Seen:
    """Where each approval ran: thread, running loop (None: none) and task."""

    def __init__(self) -> None:
        self.threads: list[int] = []
        self.loops: list[asyncio.AbstractEventLoop | None] = []
        self.tasks: list[asyncio.Task[Any] | None] = []
        self.requests: list[ApprovalRequest] = []

    def note(self, request: ApprovalRequest) -> None:
        self.threads.append(threading.get_ident())
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self.loops.append(loop)
        self.tasks.append(asyncio.current_task() if loop is not None else None)
        self.requests.append(request)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # let abandoned approver threads finish


async def _turns_taken(call: Callable[[], Awaitable[Any]]) -> tuple[Any, int]:
    """``await call()`` beside a task that counts event-loop turns: (its result, the turns it took)."""
    turns = 0
    stop = False

    async def tick() -> None:
        nonlocal turns
        while not stop:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.ensure_future(tick())
    await asyncio.sleep(0)  # the ticker is running
    before = turns
    result = await call()
    taken = turns - before
    stop = True
    await ticker
    return result, taken


# -- async approvers: in line on the caller's loop -----------------------------------------------------------


@pytest.mark.parametrize("timeout", [300.0, None])
async def test_an_async_approver_runs_on_the_callers_thread_and_loop(timeout: float | None) -> None:
    seen = Seen()

    async def approve(request: ApprovalRequest) -> bool:
        seen.note(request)
        return True

    sink = MemorySink()
    tool = Tool()
    guard = Guard(POLICY, approver=approve, audit=sink, approval_timeout_s=timeout)
    assert (await guard.arun("transfer", {"amount": 5}, tool.acall)).value == "sent"
    assert await guard.ainvoke("transfer", {"amount": 6}, tool.acall) == "sent"
    caller = asyncio.current_task()
    assert seen.threads == [threading.get_ident()] * 2  # no worker thread
    assert seen.loops == [asyncio.get_running_loop()] * 2
    # A task of its own (what asyncio.timeout and anyio cancel scopes inside the approver bind to), not the caller's.
    assert all(task is not None and task is not caller for task in seen.tasks)
    assert tool.calls == [{"amount": 5}, {"amount": 6}]
    assert [event["approval"] for event in sink.events] == ["approve", "approve"]
    assert [request.timeout_s for request in seen.requests] == [timeout, timeout]


async def test_an_async_approver_that_answers_at_once_costs_at_most_one_loop_turn() -> None:
    # Before: a task awaited through asyncio.wait and its timer, three loop turns for an answer with no waiting.
    async def approve(request: ApprovalRequest) -> bool:
        return True

    tool = Tool()
    guard = Guard(POLICY, approver=approve)
    # The same call with no approval at all is the baseline: the approval may add at most one turn.
    assert (await _turns_taken(lambda: guard.ainvoke("read", {}, tool.acall)))[0] == "sent"
    _, plain = await _turns_taken(lambda: guard.ainvoke("read", {}, tool.acall))
    result, approved = await _turns_taken(lambda: guard.ainvoke("transfer", {"amount": 5}, tool.acall))
    assert result == "sent"
    assert approved <= plain + 1, (approved, plain)
    assert tool.calls == [{}, {}, {"amount": 5}]


async def test_an_async_approver_that_waits_still_answers() -> None:
    answered = asyncio.Event()

    async def approve(request: ApprovalRequest) -> ApprovalDecision:
        await answered.wait()  # a human on the other end of a queue
        return ApprovalDecision.edit({"amount": 1})

    tool = Tool()
    guard = Guard(POLICY, approver=approve)
    call = asyncio.ensure_future(guard.ainvoke("transfer", {"amount": 5}, tool.acall))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not call.done()
    assert tool.calls == []
    answered.set()
    assert await call == "sent"
    assert tool.calls == [{"amount": 1}]


@pytest.mark.parametrize("where", ["before waiting", "after waiting", "making its coroutine"])
async def test_an_async_approver_that_raises_is_a_structured_refusal(where: str) -> None:
    class Approver:
        async def __call__(self, request: ApprovalRequest) -> bool:
            if where == "after waiting":
                await asyncio.sleep(0)
            raise RuntimeError("approver crashed sk-live-123")

    approver: Any = Approver()
    if where == "making its coroutine":

        class Broken:
            async def __call__(self, request: ApprovalRequest, extra: int) -> bool:  # the guard passes one argument
                return True

        approver = Broken()
    sink = MemorySink()
    tool = Tool()
    result = await Guard(POLICY, approver=approver, audit=sink).ainvoke("transfer", {"amount": 5}, tool.acall)
    assert result["code"] == "approval_denied"
    assert "sk-live" not in str(result)
    assert tool.calls == []
    assert [event["code"] for event in sink.events] == ["approval_denied"]


@pytest.mark.parametrize("cancelled", ["by itself at once", "by itself after waiting"])
async def test_an_async_approver_that_cancels_itself_is_a_refusal_not_a_cancelled_call(cancelled: str) -> None:
    async def approve(request: ApprovalRequest) -> bool:
        if cancelled.endswith("after waiting"):
            await asyncio.sleep(0)
        raise asyncio.CancelledError

    tool = Tool()
    result = await Guard(POLICY, approver=approve).ainvoke("transfer", {"amount": 5}, tool.acall)
    assert result["code"] == "approval_denied"
    assert tool.calls == []


async def test_an_async_approver_that_hangs_fails_closed_at_the_timeout() -> None:
    never = asyncio.Event()
    cancelled = asyncio.Event()

    async def approve(request: ApprovalRequest) -> bool:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return True

    sink = MemorySink()
    tool = Tool()
    guard = Guard(POLICY, approver=approve, audit=sink, approval_timeout_s=0.1)
    started = time.monotonic()
    result = await guard.ainvoke("transfer", {"amount": 5}, tool.acall)
    assert result["code"] == "approval_timeout"
    assert 0.1 <= time.monotonic() - started < 0.1 + TIMEOUT_MARGIN_S
    assert tool.calls == []
    assert [event["code"] for event in sink.events] == ["approval_timeout"]
    await asyncio.wait_for(cancelled.wait(), 1.0)  # the abandoned approver was cancelled, not left running


async def test_an_async_approver_that_swallows_cancellation_does_not_hold_the_call() -> None:
    async def stubborn(request: ApprovalRequest) -> bool:
        while True:  # swallows every cancellation: only abandoning it frees the call
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(0.3)
                return True

    tool = Tool()
    started = time.monotonic()
    result = await Guard(POLICY, approver=stubborn, approval_timeout_s=0.1).ainvoke("transfer", {}, tool.acall)
    assert result["code"] == "approval_timeout"
    assert time.monotonic() - started < 0.1 + 0.25  # not the 0.3 s it keeps going after its cancellation
    assert tool.calls == []
    await asyncio.sleep(0.35)  # it finishes in the background; nobody hears its late yes
    assert tool.calls == []


async def test_a_cancelled_caller_cancels_its_async_approver() -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def approve(request: ApprovalRequest) -> bool:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return True

    tool = Tool()
    call = asyncio.ensure_future(Guard(POLICY, approver=approve).ainvoke("transfer", {}, tool.acall))
    await entered.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(cancelled.wait(), 1.0)
    assert tool.calls == []


def test_a_sync_caller_of_an_async_approver_with_no_timeout_gets_its_answer() -> None:
    seen = Seen()

    async def approve(request: ApprovalRequest) -> bool:
        seen.note(request)
        await asyncio.sleep(0)
        return True

    tool = Tool()
    assert Guard(POLICY, approver=approve, approval_timeout_s=None).invoke("transfer", {"amount": 5}, tool) == "sent"
    assert tool.calls == [{"amount": 5}]
    assert seen.loops[0] is not None  # on the guard's background loop: this thread has none


# -- sync approvers with approval_timeout_s=None: in line on the calling thread -----------------------------


def test_a_sync_approver_with_no_timeout_runs_on_the_calling_thread() -> None:
    seen = Seen()

    def approve(request: ApprovalRequest) -> bool:
        seen.note(request)
        return True

    sink = MemorySink()
    tool = Tool()
    guard = Guard(POLICY, approver=approve, audit=sink, approval_timeout_s=None)
    assert guard.run("transfer", {"amount": 1}, tool).value == "sent"
    assert guard.invoke("transfer", {"amount": 2}, tool) == "sent"
    admission = guard.admit("transfer", {"amount": 3})
    assert admission.admitted
    guard.finish(admission, "ok")
    assert seen.threads == [threading.get_ident()] * 3
    assert [request.timeout_s for request in seen.requests] == [None] * 3  # the approver is told: no deadline
    assert tool.calls == [{"amount": 1}, {"amount": 2}]
    assert [event["approval"] for event in sink.events] == ["approve"] * 3


@pytest.mark.parametrize("answer", ["raises", "garbage", "no"])
def test_a_sync_approver_with_no_timeout_that_fails_is_a_structured_refusal(answer: str) -> None:
    def approve(request: ApprovalRequest) -> Any:
        if answer == "raises":
            raise RuntimeError("approver crashed")
        return "maybe" if answer == "garbage" else ApprovalDecision.deny("not today")

    sink = MemorySink()
    tool = Tool()
    result = Guard(POLICY, approver=approve, audit=sink, approval_timeout_s=None).invoke("transfer", {}, tool)
    assert result["code"] == "approval_denied"
    assert tool.calls == []
    assert [event["code"] for event in sink.events] == ["approval_denied"]


def test_a_sync_approver_with_no_timeout_that_returns_a_coroutine_is_awaited() -> None:
    async def later() -> bool:
        return True

    tool = Tool()
    assert Guard(POLICY, approver=lambda _: later(), approval_timeout_s=None).invoke("transfer", {}, tool) == "sent"
    assert tool.calls == [{}]


async def test_a_sync_approver_with_no_timeout_under_arun_keeps_the_loop_running() -> None:
    # Called on the loop's thread it would stall every other task; on the worker only its own call waits.
    seen = Seen()
    asked = threading.Event()
    answer = threading.Event()

    def approve(request: ApprovalRequest) -> bool:
        seen.note(request)
        asked.set()
        return answer.wait(5)

    tool = Tool()
    call = asyncio.ensure_future(
        Guard(POLICY, approver=approve, approval_timeout_s=None).ainvoke("transfer", {}, tool.acall)
    )
    assert await asyncio.to_thread(asked.wait, 5)
    for _ in range(3):  # the loop turns while the approver blocks
        await asyncio.sleep(0)
    assert not call.done()
    answer.set()
    assert await call == "sent"
    assert seen.threads[0] != threading.get_ident()
    assert seen.loops == [None]
    assert tool.calls == [{}]


def test_the_rules_timeout_still_bounds_a_guard_with_no_timeout(release: threading.Event) -> None:
    # The policy author asked for a bound on this rule: the worker and its timeout, failing closed.
    seen = Seen()

    def approve(request: ApprovalRequest) -> bool:
        seen.note(request)
        return release.wait(3600)

    tool = Tool()
    started = time.monotonic()
    result = Guard(POLICY, approver=approve, approval_timeout_s=None).invoke("withdraw", {}, tool)
    assert result["code"] == "approval_timeout"
    assert time.monotonic() - started < 0.2 + TIMEOUT_MARGIN_S
    assert seen.threads[0] != threading.get_ident()
    assert tool.calls == []


# -- the default: the worker thread and its timeout -----------------------------------------------------------


def test_by_default_a_sync_approver_runs_on_a_worker_and_times_out(release: threading.Event) -> None:
    seen = Seen()

    def approve(request: ApprovalRequest) -> bool:
        seen.note(request)
        return True if request.args.get("fast") else release.wait(3600)

    sink = MemorySink()
    tool = Tool()
    guard = Guard(POLICY, approver=approve, audit=sink, approval_timeout_s=0.1)
    assert guard.invoke("transfer", {"fast": True}, tool) == "sent"
    started = time.monotonic()
    assert guard.invoke("transfer", {}, tool)["code"] == "approval_timeout"
    assert time.monotonic() - started < 0.1 + TIMEOUT_MARGIN_S
    assert threading.get_ident() not in seen.threads
    assert [request.timeout_s for request in seen.requests] == [0.1, 0.1]
    assert tool.calls == [{"fast": True}]
    assert [event.get("code") for event in sink.events] == [None, "approval_timeout"]


@pytest.mark.parametrize("bad", [0, -1.0, math.nan])
def test_approval_timeout_must_be_positive_or_none(bad: float) -> None:
    with pytest.raises(ValueError, match="approval_timeout_s"):
        Guard(POLICY, approval_timeout_s=bad)
    assert Guard(POLICY, approval_timeout_s=None).approval_timeout_s is None
