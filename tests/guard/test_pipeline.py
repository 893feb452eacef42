"""The Guard pipeline around a tool call: allow, deny, raise, rollback, exactness, fail closed.

Sync (``invoke``/``run``) and async (``ainvoke``/``arun``) share one core; the table test proves they give
the same decisions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from mcp_guard import (
    Admission,
    Decision,
    Guard,
    GuardResult,
    MemorySink,
    Policy,
    PolicyViolation,
    ToolCall,
    as_guard,
)
from mcp_guard._stores import Store
from tests.support.cases import CASE_IDS, CASES, CASES_POLICY, SERVER, Case
from tests.support.clock import FakeClock

LIMITED = {
    "version": "1",
    "default": "deny",
    "tools": {
        "ping": {},
        "blocked": {"action": "deny", "reason": "never"},
        "limited": {"limits": [{"counter": "lim", "window": "minute", "max": 30, "scope": "global"}]},
        "strict": {
            "limits": [
                {"counter": "strict", "window": "minute", "max": 2, "scope": "global", "count_failures": True},
                {"counter": "loose", "window": "minute", "max": 5, "scope": "global"},
            ]
        },
    },
}


class Tool:
    """A real tool that counts its calls (sync and async faces) and can fail on demand."""

    def __init__(self, result: Any = "done", exc: BaseException | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.result = result
        self.exc = exc

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        if self.exc is not None:
            raise self.exc
        return self.result

    async def acall(self, **kwargs: Any) -> Any:
        await asyncio.sleep(0)  # let other calls interleave, as real I/O would
        return self(**kwargs)


class ErrorResult:
    """Stands for an MCP CallToolResult with isError=True (a failure reported without raising)."""

    isError = True
    content = "the server said no"


def _guard(policy: Mapping[str, Any] = LIMITED, **options: Any) -> Guard:
    return Guard(Policy.from_dict(policy), **options)


# -- allow / deny / raise ----------------------------------------------------------------------------------


def test_allow_runs_fn_with_the_arguments() -> None:
    tool = Tool(result={"ok": 1})
    assert _guard().invoke("ping", {"a": 1}, tool) == {"ok": 1}
    assert tool.calls == [{"a": 1}]


async def test_async_allow_awaits_fn_and_accepts_a_sync_fn() -> None:
    tool = Tool(result=7)
    guard = _guard()
    assert await guard.ainvoke("ping", {"a": 1}, tool.acall) == 7
    assert await guard.ainvoke("ping", None, tool) == 7
    assert tool.calls == [{"a": 1}, {}]


def test_deny_never_calls_fn_and_returns_the_payload() -> None:
    tool = Tool()
    payload = _guard().invoke("blocked", {"a": 1}, tool)
    assert tool.calls == []
    assert payload["error"] == "policy_violation"
    assert payload["code"] == "denied"
    assert payload["reason"] == "never"
    assert payload["rule"] == "/tools/blocked"
    assert payload["policy"].startswith("sha256:")


async def test_deny_raises_policy_violation_when_asked() -> None:
    tool = Tool()
    guard = _guard(on_violation="raise")
    with pytest.raises(PolicyViolation) as info:
        guard.invoke("nothing_matches", {}, tool)
    assert info.value.code == "default_deny"
    assert info.value.payload == info.value.decision.to_payload()
    with pytest.raises(PolicyViolation) as ainfo:
        await guard.ainvoke("blocked", {}, tool.acall)
    assert ainfo.value.code == "denied"
    assert tool.calls == []


def test_run_returns_a_result_object_never_raising_a_violation() -> None:
    guard = _guard(on_violation="raise")
    ok = guard.run("ping", {}, Tool(result=3))
    assert isinstance(ok, GuardResult)
    assert ok.ok
    assert ok.value == 3
    bad = guard.run("blocked", {}, Tool())
    assert not bad.ok
    assert bad.violation is not None
    assert bad.violation.code == "denied"


def test_the_tools_own_exception_propagates() -> None:
    with pytest.raises(KeyError):
        _guard(retry=False).invoke("ping", {}, Tool(exc=KeyError("x")))


def test_unknown_options_are_refused() -> None:
    policy = Policy.from_dict(LIMITED)
    with pytest.raises(ValueError, match="on_rate_limit"):
        Guard(policy, on_rate_limit="sleep")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_violation"):
        Guard(policy, on_violation="log")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fail_mode"):
        Guard(policy, fail_mode="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="approval_timeout_s"):
        Guard(policy, approval_timeout_s=0)
    with pytest.raises(TypeError):
        Guard(policy).invoke("ping", {}, Tool(), user="alice")


def test_as_guard_accepts_every_policy_source_and_passes_a_guard_through(tmp_path: Any) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{"version": "1", "default": "allow"}')
    guard = as_guard(LIMITED)
    assert as_guard(guard) is guard
    with pytest.raises(TypeError, match="options"):
        as_guard(guard, max_wait_s=3)
    assert as_guard(str(path)).policy.default == "allow"
    assert as_guard(Policy.from_dict(LIMITED), on_violation="raise").on_violation == "raise"
    assert Guard(guard).policy is guard.policy


# -- the same decisions through invoke and ainvoke -------------------------------------------------------


def _last_sync(case: Case) -> tuple[Any, int]:
    guard = Guard(CASES_POLICY)
    tool = Tool(result="ran")
    result: Any = None
    for _ in range(case.repeat):
        result = guard.invoke(case.tool, case.args, tool, server=SERVER, identity="alice", session="s1")
    return result, len(tool.calls)


async def _last_async(case: Case) -> tuple[Any, int]:
    guard = Guard(CASES_POLICY)
    tool = Tool(result="ran")
    result: Any = None
    for _ in range(case.repeat):
        result = await guard.ainvoke(case.tool, case.args, tool.acall, server=SERVER, identity="alice", session="s1")
    return result, len(tool.calls)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
async def test_invoke_and_ainvoke_give_identical_decisions(case: Case) -> None:
    sync_result, sync_calls = _last_sync(case)
    async_result, async_calls = await _last_async(case)
    assert sync_result == async_result
    assert sync_calls == async_calls
    if case.expect == "allow":
        assert sync_result == "ran"
        assert sync_calls == case.repeat
    else:
        assert sync_result["code"] == case.expect
        assert sync_calls == case.repeat - 1  # only the earlier, allowed calls ran


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
async def test_check_and_acheck_agree_and_reserve_nothing(case: Case) -> None:
    guard = Guard(CASES_POLICY)
    who: dict[str, Any] = {"server": SERVER, "identity": "alice", "session": "s1"}
    first = guard.check(case.tool, case.args, **who)
    assert first == await guard.acheck(case.tool, case.args, **who)
    for _ in range(5):  # checking never consumes: the first call is still decided as before
        assert guard.check(case.tool, case.args, **who) == first
    if case.expect in ("allow", "rate_limited", "approval_required"):
        assert not first.denied
    else:
        assert first.code == case.expect


# -- exactness ------------------------------------------------------------------------------------------


async def test_a_thousand_concurrent_calls_run_fn_exactly_max_times() -> None:
    guard = _guard()
    tool = Tool(result="ran")
    results = await asyncio.gather(*(guard.ainvoke("limited", {}, tool.acall) for _ in range(1000)))
    assert len(tool.calls) == 30
    assert results.count("ran") == 30
    refused = [r for r in results if r != "ran"]
    assert len(refused) == 970
    assert {r["code"] for r in refused} == {"rate_limited"}
    assert all(r["retry_after_s"] > 0 for r in refused)


async def test_a_thousand_concurrent_calls_are_exact_on_every_store(store: Store, clock: FakeClock) -> None:
    guard = _guard(store=store, clock=clock)
    tool = Tool(result="ran")
    results = await asyncio.gather(*(guard.ainvoke("limited", {}, tool.acall) for _ in range(1000)))
    assert len(tool.calls) == 30
    assert results.count("ran") == 30
    clock.advance(60.0)  # the window has passed: room again
    assert await guard.ainvoke("limited", {}, tool.acall) == "ran"


# -- rollback ---------------------------------------------------------------------------------------------


def _remaining(guard: Guard, tool: str, limit: int) -> int:
    """How many more calls the budget admits now (by reserving and giving them back)."""
    admitted = []
    for _ in range(limit + 1):
        a = guard.admit(tool, {})
        if not a.admitted:
            break
        admitted.append(a)
    for a in admitted:
        guard.finish(a, "denied")
    return len(admitted)


def test_a_tool_that_raises_keeps_its_charge() -> None:
    # Spec 0.2 section 8 (was: "gives its quota back"): an exception from inside the tool is ambiguous, the
    # tool may have acted, so its charge is kept and 30 failures use the whole budget.
    guard = _guard(retry=False)
    tool = Tool(exc=RuntimeError("boom"))
    for _ in range(30):
        with pytest.raises(RuntimeError):
            guard.invoke("limited", {}, tool)
    assert guard.invoke("limited", {}, tool)["code"] == "rate_limited"
    assert len(tool.calls) == 30


def test_a_call_that_was_never_sent_gives_its_quota_back() -> None:
    guard = _guard(retry=False)
    for _ in range(40):
        with pytest.raises(ConnectionRefusedError):
            guard.invoke("limited", {}, Tool(exc=ConnectionRefusedError("refused")))
    assert _remaining(guard, "limited", 30) == 30


def test_an_error_result_counts_as_a_failure_and_gives_quota_back() -> None:
    guard = _guard()
    tool = Tool(result=ErrorResult())
    for _ in range(40):
        assert isinstance(guard.invoke("limited", {}, tool), ErrorResult)
    assert len(tool.calls) == 40
    assert _remaining(guard, "limited", 30) == 30


def test_is_error_decides_what_a_failed_result_is() -> None:
    guard = _guard()
    for _ in range(35):
        guard.invoke("limited", {}, Tool(result={"failed": True}), is_error=lambda v: v["failed"])
    assert _remaining(guard, "limited", 30) == 30


def test_count_failures_keeps_the_quota_of_a_failed_call() -> None:
    # "strict" counts failures, "loose" does not: a failure uses strict's quota and gives loose's back.
    guard = _guard(retry=False)
    for _ in range(2):
        guard.invoke("strict", {}, Tool(result=ErrorResult()))
    refused = guard.invoke("strict", {}, Tool())
    assert refused["code"] == "rate_limited"
    assert refused["rule"] == "/tools/strict/limits/0"


def test_a_key_shared_with_a_limit_that_counts_failures_keeps_its_entry() -> None:
    # Two limits on one budget key (same counter and scope): one counts failures, one does not. The key holds
    # one entry per call, so a failure must keep it: giving it back would undo the counting limit too.
    policy = {
        "version": "1",
        "default": "deny",
        "tools": {
            "shared": {
                "limits": [
                    {"counter": "c", "window": "minute", "max": 2, "scope": "global", "count_failures": True},
                    {"counter": "c", "window": "hour", "max": 10, "scope": "global"},
                ]
            }
        },
    }
    guard = Guard(policy, retry=False)
    for _ in range(2):
        guard.invoke("shared", {}, Tool(result=ErrorResult()))
    refused = guard.invoke("shared", {}, Tool())
    assert refused["code"] == "rate_limited"
    assert refused["rule"] == "/tools/shared/limits/0"


async def test_async_failures_give_quota_back_too() -> None:
    # Failures known not to have run (an error result, a refused connection) give their quota back.
    guard = _guard(retry=False)
    for _ in range(20):
        assert isinstance(await guard.ainvoke("limited", {}, Tool(result=ErrorResult()).acall), ErrorResult)
        with pytest.raises(ConnectionRefusedError):
            await guard.ainvoke("limited", {}, Tool(exc=ConnectionRefusedError("refused")).acall)
    tool = Tool(result="ran")
    await asyncio.gather(*(guard.ainvoke("limited", {}, tool.acall) for _ in range(40)))
    assert len(tool.calls) == 30


async def test_a_call_cancelled_while_the_tool_runs_keeps_its_charge() -> None:
    # Spec 0.2 section 8 (was: "gives its quota back"): the tool had the call and may have acted.
    guard = _guard()
    started = asyncio.Event()

    async def hangs(**_: Any) -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(guard.ainvoke("limited", {}, hangs))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _remaining(guard, "limited", 30) == 29


# -- admit / finish (what adapters use) ---------------------------------------------------------------


def test_admit_reserves_and_finish_denied_gives_everything_back() -> None:
    guard = _guard()
    admitted = [guard.admit("strict", {}) for _ in range(2)]
    assert all(isinstance(a, Admission) and a.admitted and a.token for a in admitted)
    assert not guard.admit("strict", {}).admitted
    # Admitted but never called: even the limit that counts failures gets its quota back.
    for a in admitted:
        guard.finish(a, "denied")
    assert guard.admit("strict", {}).admitted


def test_finish_is_idempotent_and_writes_one_event() -> None:
    sink = MemorySink()
    guard = _guard(audit=sink)
    admission = guard.admit("limited", {"a": 1}, identity="bob")
    assert admission.call == ToolCall("limited", {"a": 1}, None, "bob", None, None)
    guard.finish(admission, "ok")
    guard.finish(admission, "error")  # too late: the call was already finished
    assert [e["outcome"] for e in sink.events] == ["ok"]
    assert _remaining(guard, "limited", 30) == 29


async def test_aadmit_afinish_admitted_outcome_keeps_the_quota() -> None:
    guard = _guard()
    admission = await guard.aadmit("limited", {})
    await guard.afinish(admission, "admitted")
    assert _remaining(guard, "limited", 30) == 29


# -- fail closed --------------------------------------------------------------------------------------


class BrokenPolicy(Policy):
    """A policy whose evaluator crashes (a bug, a broken custom condition): must never mean "allow"."""

    def evaluate(self, tool: str, args: Mapping[str, Any] | None = None, **_: Any) -> Decision:
        raise RuntimeError("internal detail: /etc/secret.key line 3")


def _broken() -> BrokenPolicy:
    base = Policy.from_dict({"version": "1", "default": "allow"})
    broken = BrokenPolicy.__new__(BrokenPolicy)
    broken.__dict__.update(base.__dict__)
    return broken


async def test_an_evaluator_that_raises_denies_guard_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    sink = MemorySink()
    guard = Guard(_broken(), audit=sink)
    tool = Tool()
    with caplog.at_level(logging.ERROR, logger="mcp_guard"):
        payload = guard.invoke("anything", {"a": 1}, tool)
        apayload = await guard.ainvoke("anything", {"a": 1}, tool.acall)
    assert tool.calls == []
    assert payload == apayload
    assert payload["code"] == "guard_unavailable"
    assert "secret" not in str(payload)  # no internals reach the model
    assert "RuntimeError" in caplog.text  # but the log has them
    assert [e["code"] for e in sink.events] == ["guard_unavailable", "guard_unavailable"]
    assert guard.check("anything", {}).code == "guard_unavailable"


def test_an_evaluator_that_raises_denies_even_with_no_audit_and_no_limits() -> None:
    # The fast path (allow, no limits, no audit) must fail closed as well.
    guard = Guard(_broken())
    tool = Tool()
    assert guard.invoke("anything", {}, tool)["code"] == "guard_unavailable"
    assert tool.calls == []


# -- store failures ---------------------------------------------------------------------------------------


class UnreachableStore:
    """A third-party store (the StoreProtocol) whose backend is gone and which raises its own error type."""

    def __init__(self) -> None:
        self.asked = 0

    def _fail(self, *_: Any) -> Any:
        self.asked += 1
        raise OSError("connection refused by 10.0.0.7:6379")

    check = reserve = release = _fail

    async def acheck(self, *_: Any) -> Any:
        return self._fail()

    async def areserve(self, *_: Any) -> Any:
        return self._fail()

    async def arelease(self, *_: Any) -> Any:
        return self._fail()


async def test_a_store_failure_denies_when_closed_and_allows_when_open() -> None:
    closed_sink, open_sink = MemorySink(), MemorySink()
    closed = _guard(store=UnreachableStore(), audit=closed_sink)
    opened = _guard(store=UnreachableStore(), audit=open_sink, fail_mode="open")
    tool = Tool(result="ran")
    for payload in (closed.invoke("limited", {}, tool), await closed.ainvoke("limited", {}, tool.acall)):
        assert payload["code"] == "guard_unavailable"
        assert "10.0.0.7" not in str(payload)
    assert tool.calls == []
    assert opened.invoke("limited", {}, tool) == "ran"
    assert await opened.ainvoke("limited", {}, tool.acall) == "ran"
    assert len(tool.calls) == 2
    assert [e.get("fail_open") for e in open_sink.events] == [True, True]
    assert [e["code"] for e in closed_sink.events] == ["guard_unavailable"] * 2
    # Calls with no limits never touch the store, so they still run.
    assert closed.invoke("ping", {}, tool) == "ran"


def test_a_dead_redis_denies_within_its_timeout() -> None:
    import socket
    import time

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    guard = _guard(store=f"redis://127.0.0.1:{port}/0?timeout=0.2")
    tool = Tool()
    started = time.monotonic()
    assert guard.invoke("limited", {}, tool)["code"] == "guard_unavailable"
    assert time.monotonic() - started < 2.0
    assert tool.calls == []
    guard.close()


def test_an_async_tool_given_to_invoke_is_an_error_not_a_coroutine_result() -> None:
    async def async_tool(**_: Any) -> str:
        return "never"

    guard = _guard()
    with pytest.raises(TypeError, match="ainvoke"):
        guard.invoke("limited", {}, async_tool)
    assert _remaining(guard, "limited", 30) == 30  # the failed call gave its quota back


async def test_rollback_and_refusals_on_every_store(store: Store, clock: FakeClock) -> None:
    policy = {
        **LIMITED,
        "tools": {
            **LIMITED["tools"],
            "held": {
                "action": "require_approval",
                "limits": [{"counter": "held", "window": "minute", "max": 1, "scope": "global"}],
            },
        },
    }
    answers = iter([False, False, True])
    guard = _guard(policy, store=store, clock=clock, retry=False, approver=lambda _: next(answers))
    for _ in range(35):  # failures known not to have run give their quota back
        with pytest.raises(ConnectionRefusedError):
            await guard.ainvoke("limited", {}, Tool(exc=ConnectionRefusedError("refused")).acall)
    tool = Tool(result="ran")
    await asyncio.gather(*(guard.ainvoke("limited", {}, tool.acall) for _ in range(40)))
    assert len(tool.calls) == 30
    held = Tool(result="ran")
    assert (await guard.ainvoke("held", {}, held.acall))["code"] == "approval_denied"
    assert guard.invoke("held", {}, held)["code"] == "approval_denied"
    assert await guard.ainvoke("held", {}, held.acall) == "ran"  # refusals consumed nothing (max 1)
