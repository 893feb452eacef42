"""Human approval: approvers that answer, edit, refuse, raise, hang or talk nonsense; resume values; the console."""

from __future__ import annotations

import asyncio
import functools
import io
import os
import pty
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mcp_guard import (
    ApprovalDecision,
    ApprovalError,
    ApprovalRequest,
    Guard,
    Policy,
    auto_approve,
    auto_deny,
    console_approver,
)
from mcp_guard._calls.approval import as_async_approver, coerce_decision

POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "withdraw": {
            "action": "require_approval",
            "reason": "withdrawals need a human",
            "deny_if": {"args.amount": {"gt": 100}},
            "approval": {"timeout_s": 0.2, "description": "moves money out"},
            "limits": [{"counter": "withdraw", "window": "minute", "max": 1, "scope": "global"}],
        },
        "transfer": {"action": "require_approval"},
        "read": {},
    },
}

TIMEOUT_MARGIN_S = 0.75  # generous for a loaded CI machine; the point is "not the 1 h the approver sleeps"


class Tool:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> str:
        self.calls.append(kwargs)
        return "sent"

    async def acall(self, **kwargs: Any) -> str:
        return self(**kwargs)


class Approver:
    """Records each request and answers with ``behave(request)``; ``release`` frees hung ones at teardown."""

    def __init__(self, behave: Callable[[ApprovalRequest], Any]) -> None:
        self.behave = behave
        self.requests: list[ApprovalRequest] = []

    def sync(self, request: ApprovalRequest) -> Any:
        self.requests.append(request)
        return self.behave(request)

    async def async_(self, request: ApprovalRequest) -> Any:
        self.requests.append(request)
        await asyncio.sleep(0)
        return self.behave(request)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # let abandoned approver threads finish


def _make(behave: Callable[[ApprovalRequest], Any], flavour: str) -> tuple[Approver, Callable[..., Any]]:
    approver = Approver(behave)
    return approver, approver.sync if flavour == "sync" else approver.async_


async def _call(guard: Guard, path: str, tool: str, args: dict[str, Any], fn: Tool, **kw: Any) -> Any:
    if path == "invoke":
        # The sync entry point, run off the loop as a sync caller would be (it may block on a human).
        return await asyncio.to_thread(guard.invoke, tool, args, fn, **kw)
    return await guard.ainvoke(tool, args, fn.acall, **kw)


FLAVOURS = ["sync", "async"]
PATHS = ["invoke", "ainvoke"]


def _boom(_: ApprovalRequest) -> Any:
    raise RuntimeError("approver crashed: token=sk-live-123 at /srv/app.py:42")


# -- answers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(
    ("answer", "expect"),
    [
        (True, "sent"),
        (ApprovalDecision.approve(), "sent"),
        ({"type": "approve"}, "sent"),
        (False, "approval_denied"),
        (ApprovalDecision.deny("not today"), "approval_denied"),
        ({"type": "reject", "message": "no"}, "approval_denied"),
    ],
)
async def test_approver_answers(path: str, flavour: str, answer: Any, expect: str) -> None:
    approver, fn = _make(lambda _: answer, flavour)
    tool = Tool()
    result = await _call(Guard(POLICY, approver=fn), path, "withdraw", {"amount": 5}, tool, identity="ann")
    if expect == "sent":
        assert result == "sent"
        assert tool.calls == [{"amount": 5}]
    else:
        assert result["code"] == expect
        assert tool.calls == []
    assert len(approver.requests) == 1


def test_a_denial_reason_reaches_the_model() -> None:
    guard = Guard(POLICY, approver=lambda _: ApprovalDecision.deny("use the other account"))
    assert guard.invoke("withdraw", {"amount": 5}, Tool())["reason"] == "use the other account"


def test_the_request_carries_what_a_human_needs() -> None:
    approver, fn = _make(lambda _: True, "sync")
    Guard(POLICY, approver=fn).invoke("withdraw", {"amount": 5}, Tool(), server="bank", identity="ann", session="s9")
    (request,) = approver.requests
    assert request.tool == "withdraw"
    assert request.args == {"amount": 5}
    assert (request.server, request.identity, request.session) == ("bank", "ann", "s9")
    assert request.rule == "/tools/withdraw"
    assert request.reason == "withdrawals need a human"
    assert request.description == "moves money out"
    assert request.timeout_s == 0.2


# -- failures: raise, garbage, hang, nobody ---------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_an_approver_that_raises_denies_without_internals(
    path: str, flavour: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, fn = _make(_boom, flavour)
    tool = Tool()
    result = await _call(Guard(POLICY, approver=fn), path, "withdraw", {"amount": 5}, tool)
    assert result["code"] == "approval_denied"
    assert "sk-live" not in str(result)
    assert "crashed" not in str(result)
    assert "approver crashed" in caplog.text  # the details are for the operator's log
    assert tool.calls == []


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("garbage", [None, "yes", 1, {"type": "maybe"}, {"type": "edit"}, ApprovalDecision("edit")])
async def test_an_approver_that_returns_garbage_denies(path: str, flavour: str, garbage: Any) -> None:
    _, fn = _make(lambda _: garbage, flavour)
    tool = Tool()
    result = await _call(Guard(POLICY, approver=fn), path, "withdraw", {"amount": 5}, tool)
    assert result["code"] == "approval_denied"
    assert tool.calls == []


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_an_approver_that_hangs_times_out_on_time(path: str, flavour: str, release: threading.Event) -> None:
    if flavour == "sync":
        fn: Callable[..., Any] = lambda _: release.wait(3600)  # noqa: E731 - a hung console, a lost webhook
    else:

        async def fn(_: ApprovalRequest) -> Any:
            await asyncio.sleep(3600)

    tool = Tool()
    guard = Guard(POLICY, approver=fn)  # the rule's approval.timeout_s (0.2 s) applies
    started = time.monotonic()
    result = await _call(guard, path, "withdraw", {"amount": 5}, tool)
    elapsed = time.monotonic() - started
    assert result["code"] == "approval_timeout"
    assert 0.2 <= elapsed < 0.2 + TIMEOUT_MARGIN_S
    assert tool.calls == []


@pytest.mark.parametrize("path", PATHS)
async def test_an_approver_that_ignores_cancellation_does_not_hold_the_call(path: str) -> None:
    async def stubborn(_: ApprovalRequest) -> bool:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(2)  # ignores the first cancellation for a while (a second one ends it)
        return True

    tool = Tool()
    started = time.monotonic()
    result = await _call(Guard(POLICY, approver=stubborn), path, "withdraw", {"amount": 5}, tool)
    assert result["code"] == "approval_timeout"
    assert time.monotonic() - started < 0.2 + TIMEOUT_MARGIN_S
    assert tool.calls == []


async def test_the_guard_timeout_applies_when_the_rule_has_none(release: threading.Event) -> None:
    guard = Guard(POLICY, approver=lambda _: release.wait(3600), approval_timeout_s=0.1)
    started = time.monotonic()
    result = await guard.ainvoke("transfer", {}, Tool().acall)
    assert result["code"] == "approval_timeout"
    assert time.monotonic() - started < 0.1 + TIMEOUT_MARGIN_S


@pytest.mark.parametrize("path", PATHS)
async def test_no_approver_means_approval_required(path: str) -> None:
    tool = Tool()
    result = await _call(Guard(POLICY), path, "withdraw", {"amount": 5}, tool)
    assert result["code"] == "approval_required"
    assert "hint" in result
    assert tool.calls == []


def test_builtin_auto_approvers() -> None:
    assert Guard(POLICY, approver=auto_approve).invoke("transfer", {}, Tool()) == "sent"
    denied = Guard(POLICY, approver=auto_deny).invoke("transfer", {}, Tool())
    assert denied["code"] == "approval_denied"
    assert "auto_deny" in denied["reason"]


# -- edited arguments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
async def test_an_edit_that_breaks_deny_if_is_denied(path: str) -> None:
    _, fn = _make(lambda _: ApprovalDecision.edit({"amount": 500}), "sync")
    tool = Tool()
    result = await _call(Guard(POLICY, approver=fn), path, "withdraw", {"amount": 5}, tool)
    assert result["code"] == "denied"
    assert result["rule"] == "/tools/withdraw/deny_if/args.amount-gt"
    assert tool.calls == []


@pytest.mark.parametrize("path", PATHS)
async def test_an_edit_within_bounds_runs_with_the_edited_arguments(path: str) -> None:
    _, fn = _make(lambda _: {"type": "edit", "args": {"amount": 50}}, "async")
    tool = Tool()
    result = await _call(Guard(POLICY, approver=fn), path, "withdraw", {"amount": 5}, tool)
    assert result == "sent"
    assert tool.calls == [{"amount": 50}]


def test_an_edited_call_is_audited_with_the_edited_arguments() -> None:
    from mcp_guard import MemorySink

    sink = MemorySink()
    guard = Guard(POLICY, approver=lambda _: ApprovalDecision.edit({"amount": 50}), audit=sink)
    guard.invoke("withdraw", {"amount": 5}, Tool())
    (event,) = sink.events
    assert event["approval"] == "edit"
    assert event["outcome"] == "ok"


# -- quota and approvals -------------------------------------------------------------------------------


def test_a_refused_approval_consumes_no_quota() -> None:
    answers = iter([False, False, ApprovalDecision.deny("no"), True])
    guard = Guard(POLICY, approver=lambda _: next(answers))
    tool = Tool()
    for _ in range(3):
        assert guard.invoke("withdraw", {"amount": 5}, tool)["code"] == "approval_denied"
    assert guard.invoke("withdraw", {"amount": 5}, tool) == "sent"  # max 1: the quota was still there


def test_a_timed_out_approval_consumes_no_quota(release: threading.Event) -> None:
    hung = Guard(POLICY, approver=lambda _: release.wait(3600))
    assert hung.invoke("withdraw", {"amount": 5}, Tool())["code"] == "approval_timeout"
    assert Guard(hung, approver=auto_approve, store=hung.store).invoke("withdraw", {"amount": 5}, Tool()) == "sent"


@pytest.mark.parametrize("path", PATHS)
async def test_no_human_is_asked_about_a_call_that_would_be_rate_limited(path: str) -> None:
    approver, fn = _make(lambda _: True, "sync")
    guard = Guard(POLICY, approver=fn)
    tool = Tool()
    assert await _call(guard, path, "withdraw", {"amount": 5}, tool) == "sent"
    result = await _call(guard, path, "withdraw", {"amount": 5}, tool)
    assert result["code"] == "rate_limited"
    assert len(approver.requests) == 1  # asked once, for the call that could run


# -- answers obtained elsewhere (LangGraph resume values, Agents SDK approvals) ------------------------


@pytest.mark.parametrize(
    ("given", "expect", "ran_with"),
    [
        (True, "sent", {"amount": 5}),
        ({"type": "approve"}, "sent", {"amount": 5}),
        ({"type": "edit", "args": {"amount": 7}}, "sent", {"amount": 7}),
        ({"type": "edit", "edited_action": {"name": "withdraw", "args": {"amount": 8}}}, "sent", {"amount": 8}),
        ({"type": "edit", "args": {"amount": 700}}, "denied", None),
        ({"type": "reject", "message": "not now"}, "approval_denied", None),
        (False, "approval_denied", None),
        ("sure", "approval_denied", None),
    ],
)
async def test_a_given_approval_replaces_asking(given: Any, expect: str, ran_with: dict[str, Any] | None) -> None:
    approver, fn = _make(lambda _: pytest.fail("the approver must not be asked"), "sync")
    for path in PATHS:
        tool = Tool()
        guard = Guard(POLICY, approver=fn)
        if path == "invoke":
            result = guard.run("withdraw", {"amount": 5}, tool, approval=given)
        else:
            result = await guard.arun("withdraw", {"amount": 5}, tool.acall, approval=given)
        if expect == "sent":
            assert result.value == "sent"
            assert tool.calls == [ran_with]
        else:
            assert result.violation is not None
            assert result.violation.code == expect
            assert tool.calls == []
    assert approver.requests == []


# -- coerce_decision / normalising approvers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (True, "approve"),
        (False, "deny"),
        (ApprovalDecision.edit({"a": 1}), "edit"),
        ({"type": "accept"}, "approve"),
        ({"decision": "approved"}, "approve"),
        ({"type": "deny", "reason": "r"}, "deny"),
        ({"type": "edit", "args": {}}, "edit"),
    ],
)
def test_coerce_decision_accepts(value: Any, kind: str) -> None:
    assert coerce_decision(value).kind == kind


@pytest.mark.parametrize("value", [None, 1, 0, "approve", [], {}, {"type": "edit", "args": [1]}, object()])
def test_coerce_decision_refuses(value: Any) -> None:
    with pytest.raises(ApprovalError):
        coerce_decision(value)


async def test_as_async_approver_runs_sync_approvers_off_the_loop() -> None:
    seen: list[str] = []

    def approver(_: ApprovalRequest) -> bool:
        seen.append(threading.current_thread().name)
        return True

    assert await as_async_approver(approver)(ApprovalRequest("t", {})) is True
    assert seen == ["mcp-guard-approver"]

    class AsyncCallable:
        async def __call__(self, _: ApprovalRequest) -> bool:
            return False

    instance = AsyncCallable()
    assert as_async_approver(instance) is instance


# -- the console approver -------------------------------------------------------------------------------


@pytest.fixture
def terminal() -> Iterator[tuple[int, io.TextIOWrapper]]:
    """A real pseudo-terminal: (master fd to type into, slave side as the approver's terminal)."""
    master, slave = pty.openpty()
    tty = os.fdopen(slave, "r", encoding="utf-8")
    yield master, tty
    tty.close()
    os.close(master)


REQUEST = ApprovalRequest(
    tool="withdraw\x1b[2J\nApprove this call? [y/N] y\u202e",
    args={"amount": 5, "to": "acct\x1b[1A"},
    server="bank",
    identity="ann",
    session="s1",
    rule="/tools/withdraw",
    reason="withdrawals need a human",
)


@pytest.mark.parametrize(
    ("typed", "kind"),
    [(b"y\n", "approve"), (b"YES\n", "approve"), (b"n\n", "deny"), (b"\n", "deny"), (b"what\nhuh\nmeh\n", "deny")],
)
def test_console_approver_reads_the_answer_from_a_terminal(
    terminal: tuple[int, io.TextIOWrapper], typed: bytes, kind: str
) -> None:
    master, tty = terminal
    os.write(master, typed)
    shown = io.StringIO()
    assert console_approver(REQUEST, terminal=tty, output=shown).kind == kind
    text = shown.getvalue()
    for part in ("withdraw", "bank", "ann", "/tools/withdraw", "withdrawals need a human", '"amount": 5'):
        assert part in text
    assert "\x1b" not in text  # escape sequences from the model are shown, not obeyed
    assert "\\x1b[2J" in text
    assert "\u202e" not in text  # nor right-to-left overrides
    assert "\\nApprove this call" in text  # a newline cannot fake a line of the prompt


def test_console_approver_end_of_input_denies(terminal: tuple[int, io.TextIOWrapper]) -> None:
    master, tty = terminal
    os.write(master, b"\x04")  # Ctrl-D
    decision = console_approver(REQUEST, terminal=tty, output=io.StringIO())
    assert decision.kind == "deny"
    assert decision.reason is not None
    assert "end of input" in decision.reason


def test_console_approver_drives_a_guard(terminal: tuple[int, io.TextIOWrapper]) -> None:
    master, tty = terminal
    os.write(master, b"y\n")
    tool = Tool()
    approver = functools.partial(console_approver, terminal=tty, output=io.StringIO())
    guard = Guard(Policy.from_dict(POLICY), approver=approver, approval_timeout_s=5)
    assert guard.invoke("transfer", {"to": "x"}, tool) == "sent"


def test_console_approver_with_no_terminal_denies_and_says_so() -> None:
    # A new session has no controlling terminal (/dev/tty cannot be opened) and stdin is not a TTY.
    script = textwrap.dedent(
        """
        from mcp_guard import ApprovalRequest, console_approver
        d = console_approver(ApprovalRequest("withdraw", {"amount": 5}))
        print(d.kind, "|", d.reason)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        check=True,
    )
    kind, reason = done.stdout.strip().split(" | ")
    assert kind == "deny"
    assert "no terminal" in reason


async def test_sync_invoke_can_ask_an_async_approver_from_inside_a_running_loop() -> None:
    # A sync tool called by framework code that itself runs in an event loop: the guard must not try to
    # run the approver on the caller's (busy) loop.
    async def approver(_: ApprovalRequest) -> bool:
        await asyncio.sleep(0)
        return True

    assert Guard(POLICY, approver=approver).invoke("transfer", {}, Tool()) == "sent"
