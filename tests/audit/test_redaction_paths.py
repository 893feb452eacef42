"""A rule's ``redact`` applies to every event of that rule (spec section 10): judged by the audit file's bytes.

Before: a tool denied outright by a rule that redacts ``args.password`` recorded the password's type and
length (``{"type": "string", "len": 17}``) instead of ``[redacted]``; so did a hidden tool, a default deny, and
a call refused for its arguments before the policy ran. Each decision path here writes a real JSONL file; the
raw bytes must hold no part of the password, and the event must say ``"password": "[redacted]"``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from mcp_guard import ApprovalDecision, Guard, StoreError
from mcp_guard._policy.decision import LimitCharge
from mcp_guard._stores import Verdict

SECRET = "hunter2-QzXw-9817"  # 17 characters: its summary would read {"type": "string", "len": 17}
REDACT = ["args.password"]
POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "hide": ["admin_*"],
    "tools": {
        "drop_db": {"action": "deny", "redact": REDACT},
        "admin_reset": {"redact": REDACT},
        "bank/connect": {"redact": REDACT},  # server-qualified: a call with no server also meets the default
        "login": {"redact": REDACT, "rate_limit": "1/minute"},
        "sudo": {"action": "require_approval", "redact": REDACT},
        "typed": {"redact": REDACT, "args_schema": {"type": "object", "properties": {"user": {"type": "string"}}}},
        "check": {"redact": REDACT, "require": {"args.user": {"eq": "root"}}},
    },
    "classes": {"destructive": {"action": "deny", "redact": REDACT}},
}


def calls() -> dict[str, tuple[str, dict[str, Any], dict[str, Any], str]]:
    """name -> (tool, arguments, keywords, the code its event must carry)."""
    args = {"password": SECRET, "user": "root"}
    return {
        "a plain deny": ("drop_db", args, {}, "denied"),
        "a hidden tool": ("admin_reset", args, {}, "hidden"),
        "a default deny beside a matched rule": ("connect", args, {}, "default_deny"),
        "a class rule's deny": ("wipe", args, {"annotations": {"destructiveHint": True}}, "denied"),
        "arguments over the tool's own schema": (
            "login",
            args,
            {"tool_schema": {"type": "object", "properties": {"password": {"type": "integer"}}}},
            "invalid_arguments",
        ),
        "a NaN beside the password": ("login", {**args, "n": float("nan")}, {}, "invalid_arguments"),
        "the rule's args_schema": ("typed", {**args, "user": 5}, {}, "invalid_arguments"),
        "a failed requirement": ("check", {**args, "user": "alice"}, {}, "requirement_failed"),
        "approval with no approver": ("sudo", args, {}, "approval_required"),
    }


def audited(tmp_path: Path, **options: Any) -> tuple[Guard, Path]:
    path = tmp_path / "audit.jsonl"
    return Guard(POLICY, audit=str(path), **options), path


def assert_redacted(path: Path, count: int) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    leaks = [SECRET[i : i + 4] for i in range(len(SECRET) - 3) if SECRET[i : i + 4] in text]
    assert not leaks, f"parts of the password in the audit bytes: {leaks}"
    assert b'"len":17' not in raw  # the password's length, described
    events = [json.loads(line) for line in text.splitlines()]
    assert len(events) == count
    for event in events:
        assert event["args"]["password"] == "[redacted]", event
    return events


@pytest.mark.parametrize("name", sorted(calls()))
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_every_refusal_path_redacts(tmp_path: Path, name: str, mode: str) -> None:
    tool, args, keywords, code = calls()[name]
    guard, path = audited(tmp_path)
    ran: list[Any] = []
    if mode == "sync":
        result = guard.invoke(tool, args, lambda **kw: ran.append(kw) or "ok", **keywords)
    else:

        async def tool_fn(**kw: Any) -> str:
            ran.append(kw)
            return "ok"

        result = asyncio.run(guard.ainvoke(tool, args, tool_fn, **keywords))
    guard.close()
    assert ran == []
    assert result["code"] == code
    (event,) = assert_redacted(path, 1)
    assert event["code"] == code


def test_a_rate_limited_call_redacts(tmp_path: Path) -> None:
    guard, path = audited(tmp_path)
    ok = guard.invoke("login", {"password": SECRET}, lambda **kw: "ok")
    limited = guard.invoke("login", {"password": SECRET}, lambda **kw: "ok")
    guard.close()
    assert (ok, limited["code"]) == ("ok", "rate_limited")
    assert [e["code"] for e in assert_redacted(path, 2)] == [None, "rate_limited"]


def test_approval_paths_redact(tmp_path: Path) -> None:
    answers = iter([ApprovalDecision.deny("no"), ApprovalDecision.edit({"password": SECRET + "x"}), True])
    guard, path = audited(tmp_path, approver=lambda request: next(answers))
    results = [guard.invoke("sudo", {"password": SECRET}, lambda **kw: "ok") for _ in range(3)]
    guard.close()
    assert results[0]["code"] == "approval_denied"
    assert results[1:] == ["ok", "ok"]
    assert_redacted(path, 3)


def test_an_approval_that_times_out_or_is_cancelled_redacts(tmp_path: Path) -> None:
    async def never(request: Any) -> bool:
        await asyncio.sleep(3600)
        return True

    guard, path = audited(tmp_path, approver=never, approval_timeout_s=0.05)
    timed_out = asyncio.run(guard.ainvoke("sudo", {"password": SECRET}, lambda **kw: "ok"))
    assert timed_out["code"] == "approval_timeout"

    async def cancelled() -> None:
        guard.approval_timeout_s = 3600.0
        task = asyncio.ensure_future(guard.ainvoke("sudo", {"password": SECRET}, lambda **kw: "ok"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    guard.close()
    events = assert_redacted(path, 2)
    assert [e["outcome"] for e in events] == ["denied", "cancelled"]


class BrokenStore:
    """A third-party store whose backend is down (fail closed: guard_unavailable)."""

    def check(self, charges: Sequence[LimitCharge]) -> Verdict:
        raise StoreError("backend down")

    def reserve(self, charges: Sequence[LimitCharge]) -> Verdict:
        raise StoreError("backend down")

    def release(self, charges: Sequence[LimitCharge], token: str) -> None:
        raise StoreError("backend down")

    async def acheck(self, charges: Sequence[LimitCharge]) -> Verdict:
        raise StoreError("backend down")

    async def areserve(self, charges: Sequence[LimitCharge]) -> Verdict:
        raise StoreError("backend down")

    async def arelease(self, charges: Sequence[LimitCharge], token: str) -> None:
        raise StoreError("backend down")


def test_a_store_failure_redacts(tmp_path: Path) -> None:
    guard, path = audited(tmp_path, store=BrokenStore())
    result = guard.invoke("login", {"password": SECRET}, lambda **kw: "ok")
    guard.close()
    assert result["code"] == "guard_unavailable"
    assert_redacted(path, 1)


def test_shadow_mode_redacts_what_it_would_refuse(tmp_path: Path) -> None:
    guard, path = audited(tmp_path, mode="shadow")
    ran: list[Any] = []
    for tool in ("drop_db", "admin_reset", "connect"):
        guard.invoke(tool, {"password": SECRET}, lambda **kw: ran.append(kw) or "ok")
    guard.close()
    assert len(ran) == 3  # shadow refuses nothing
    events = assert_redacted(path, 3)
    assert [(e["shadow"], e["code"]) for e in events] == [(True, "denied"), (True, "hidden"), (True, "default_deny")]


def test_all_tools_redact_applies_to_a_default_deny_and_a_hidden_tool(tmp_path: Path) -> None:
    policy = {"version": "1", "default": "deny", "hide": ["secret_*"], "all_tools": {"redact": REDACT}}
    path = tmp_path / "audit.jsonl"
    guard = Guard(policy, audit=str(path))
    assert guard.invoke("anything", {"password": SECRET}, lambda **kw: "ok")["code"] == "default_deny"
    assert guard.invoke("secret_x", {"password": SECRET}, lambda **kw: "ok")["code"] == "hidden"
    guard.close()
    assert_redacted(path, 2)


def test_the_pure_decision_carries_the_paths(tmp_path: Path) -> None:
    # What adapters and the inbox read to hide values: the decision itself, on every path.
    guard, _ = audited(tmp_path)
    for tool in ("drop_db", "admin_reset", "connect"):
        assert guard.policy.evaluate(tool, {"password": SECRET}).redact == ("args.password",), tool
    guard.close()
