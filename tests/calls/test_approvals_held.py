"""No human is asked in vain (spec 0.2 section 8): while a callback approval is pending its quota is held, so
10 concurrent approvals under a limit of 3 ask the approver 3 times, refuse 7 as rate_limited without asking,
and never refuse an approved call. Rejection, timeout and a failing approver give the held quota back."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from mcp_guard import ApprovalDecision, ApprovalRequest, Guard, Policy

POLICY = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "tools": {
            "wire": {
                "action": "require_approval",
                "approval": {"timeout_s": 5},
                "limits": [{"counter": "w", "window": "hour", "max": 3, "scope": "global"}],
            }
        },
    }
)


async def test_ten_concurrent_async_approvals_under_a_limit_of_3_ask_three_times() -> None:
    asked: list[str] = []
    runs: list[str] = []

    async def approver(request: ApprovalRequest) -> bool:
        asked.append(request.args["ref"])
        await asyncio.sleep(0.05)  # a human takes a while; the other calls arrive meanwhile
        return True

    async def wire(ref: str) -> str:
        runs.append(ref)
        return f"sent {ref}"

    guard = Guard(POLICY, approver=approver)
    results = await asyncio.gather(*(guard.ainvoke("wire", {"ref": str(i)}, wire) for i in range(10)))
    refused = [r for r in results if isinstance(r, dict)]
    assert len(asked) == 3
    assert sorted(runs) == sorted(asked)  # every approved call ran
    assert len(refused) == 7
    assert {r["code"] for r in refused} == {"rate_limited"}


def test_ten_concurrent_sync_approvals_under_a_limit_of_3_ask_three_times() -> None:
    asked: list[str] = []
    runs: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(10)

    def approver(request: ApprovalRequest) -> bool:
        with lock:
            asked.append(request.args["ref"])
        time.sleep(0.05)
        return True

    def wire(ref: str) -> str:
        with lock:
            runs.append(ref)
        return f"sent {ref}"

    guard = Guard(POLICY, approver=approver)
    results: list[Any] = []

    def caller(i: int) -> None:
        barrier.wait()
        results.append(guard.invoke("wire", {"ref": str(i)}, wire))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(asked) == 3
    assert sorted(runs) == sorted(asked)
    assert sorted(r["code"] for r in results if isinstance(r, dict)) == ["rate_limited"] * 7


def _slow_approver(_: ApprovalRequest) -> bool:
    time.sleep(5)
    return True


def _raising_approver(_: ApprovalRequest) -> bool:
    raise RuntimeError("approval service down")


@pytest.mark.parametrize(
    ("approver", "code"),
    [
        (lambda _: ApprovalDecision.deny("no"), "approval_denied"),
        (_raising_approver, "approval_denied"),
        (lambda _: "maybe", "approval_denied"),
        (_slow_approver, "approval_timeout"),
    ],
    ids=["reject", "raise", "garbage", "timeout"],
)
@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("path", ["invoke", "ainvoke"])
async def test_a_refused_approval_gives_the_held_quota_back(approver: Any, code: str, path: str, flavour: str) -> None:
    if flavour == "async":
        sync_approver = approver

        async def approver(request: ApprovalRequest) -> Any:
            if sync_approver is _slow_approver:
                await asyncio.sleep(5)
            return sync_approver(request)

    policy_timeout = Policy.from_dict(
        {
            "version": "1",
            "default": "deny",
            "tools": {
                "wire": {
                    "action": "require_approval",
                    "limits": [{"counter": "w", "window": "hour", "max": 3, "scope": "global"}],
                }
            },
        }
    )
    guard = Guard(policy_timeout, approver=approver, approval_timeout_s=0.2)
    runs: list[int] = []

    async def awire(**_: Any) -> str:
        runs.append(1)
        return "sent"

    for _ in range(4):  # more refusals than the budget: none of them kept a unit
        if path == "invoke":
            result = guard.invoke("wire", {}, lambda **_: runs.append(1) or "sent")
        else:
            result = await guard.ainvoke("wire", {}, awire)
        assert result["code"] == code
    assert runs == []
    approving = Guard(guard, store=guard.store, approver=lambda _: True)
    assert [approving.invoke("wire", {}, lambda **_: "sent") for _ in range(3)] == ["sent"] * 3


def test_approvers_run_on_reused_workers_not_a_thread_per_approval() -> None:
    policy = Policy.from_dict({"version": "1", "default": "require_approval"})
    seen: list[int] = []

    def sync_approver(_: ApprovalRequest) -> bool:
        seen.append(threading.get_ident())
        return True

    async def async_approver(_: ApprovalRequest) -> bool:
        seen.append(threading.get_ident())
        return True

    for approver in (sync_approver, async_approver):
        seen.clear()
        guard = Guard(policy, approver=approver)
        before = threading.active_count()
        for _ in range(20):
            assert guard.invoke("t", {}, lambda **_: "ran") == "ran"
        assert len(set(seen)) == 1  # one warm worker (or the one background loop) took every approval
        assert threading.active_count() <= before + 1
        assert threading.get_ident() not in seen  # never the caller's thread: a caller inside a loop is safe


async def test_a_sync_invoke_inside_a_running_loop_can_still_ask_an_async_approver() -> None:
    async def approver(_: ApprovalRequest) -> bool:
        await asyncio.sleep(0)
        return True

    guard = Guard(Policy.from_dict({"version": "1", "default": "require_approval"}), approver=approver)
    assert guard.invoke("t", {}, lambda **_: "ran") == "ran"  # called from inside this test's event loop
