"""One audit event per call, always (spec 0.2 section 8): over 10,000 randomised calls mixing allow, deny,
cancellation, tool errors and store faults; for pathological arguments; for cancelled calls; and the audit
path checked when the Guard is built. Also the readable fields: ISO time, call_id, run_id, trace ids."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from mcp_guard import ApprovalRequest, Guard, MCPGuardError, MemorySink, Policy
from mcp_guard._audit.events import iso_time
from mcp_guard._errors import ConfigurationError
from mcp_guard._guard.pipeline import Pipeline
from mcp_guard._policy.decision import LimitCharge
from mcp_guard._stores import Verdict
from mcp_guard._stores.memory import MemoryStore
from tests.support.clock import FakeClock

POLICY = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "tools": {
            "free": {},
            "limited": {"limits": [{"counter": "l", "window": "minute", "max": 5, "scope": "identity"}]},
            "blocked": {"action": "deny"},
            "checked": {"deny_if": {"args.n": {"gt": 10}}},
            "held": {"action": "require_approval"},
        },
    }
)


class FaultyStore:
    """A third-party store (StoreProtocol) over a real MemoryStore that fails when told to: raise or garbage."""

    def __init__(self, clock: FakeClock) -> None:
        self.inner = MemoryStore(clock=clock)
        self.mode: str | None = None

    def _fault(self) -> Any:
        if self.mode == "raise":
            raise RuntimeError("store down")
        return None  # garbage: not a Verdict

    def check(self, charges: Sequence[LimitCharge]) -> Verdict:
        return self._fault() if self.mode else self.inner.check(charges)  # type: ignore[no-any-return]

    def reserve(self, charges: Sequence[LimitCharge]) -> Verdict:
        return self._fault() if self.mode else self.inner.reserve(charges)  # type: ignore[no-any-return]

    def release(self, charges: Sequence[LimitCharge], token: str) -> None:
        self.inner.release(charges, token)

    async def acheck(self, charges: Sequence[LimitCharge]) -> Verdict:
        return self.check(charges)

    async def areserve(self, charges: Sequence[LimitCharge]) -> Verdict:
        return self.reserve(charges)

    async def arelease(self, charges: Sequence[LimitCharge], token: str) -> None:
        self.release(charges, token)


class Cancel(BaseException):
    """Stands for a KeyboardInterrupt in the sync path (raised by the tool while it runs)."""


def test_exactly_one_event_per_call_over_10000_randomised_calls(clock: FakeClock) -> None:
    rng = random.Random(20261125)
    sink = MemorySink()
    store = FaultyStore(clock)
    guard = Guard(POLICY, store=store, audit=sink, clock=clock, retry=False, approver=lambda _: rng.random() < 0.5)
    expected: dict[str, set[str]] = {}
    executed: Counter[str] = Counter()

    def tool(kind: str, call_id: str) -> Any:
        def run(**_: Any) -> Any:
            executed[call_id] += 1
            if kind == "raise":
                raise ValueError("tool failed")
            if kind == "error_result":
                return {"isError": True}
            if kind == "mcp2_error":
                return type("R", (), {"is_error": True})()
            if kind == "cancel":
                raise Cancel()
            return "ok"

        return run

    async def main() -> None:
        for i in range(10_000):
            call_id = f"c{i}"
            name = rng.choice(["free", "limited", "blocked", "checked", "held", "unknown"])
            kind = rng.choice(["ok", "ok", "raise", "error_result", "mcp2_error", "cancel"])
            store.mode = rng.choice([None, None, None, "raise", "garbage"])
            args = {"n": rng.randint(0, 20)}
            if rng.random() < 0.01:
                clock.advance(60)
            who = {"identity": rng.choice(["a", "b"]), "call_id": call_id}
            fn = tool(kind, call_id)
            if rng.random() < 0.5:
                with contextlib.suppress(ValueError, Cancel):
                    guard.invoke(name, args, fn, **who)
            else:

                async def afn(_fn: Any = fn, **kw: Any) -> Any:
                    return _fn(**kw)

                with contextlib.suppress(ValueError, Cancel):
                    await guard.ainvoke(name, args, afn, **who)
            expected[call_id] = {"ok", "error", "denied", "cancelled"}

    asyncio.run(main())
    ids = Counter(e["call_id"] for e in sink.events)
    assert len(sink.events) == 10_000
    assert set(ids) == set(expected)
    assert max(ids.values()) == 1
    by_id = {e["call_id"]: e for e in sink.events}
    outcomes = Counter(e["outcome"] for e in sink.events)
    assert {"ok", "error", "denied", "cancelled"} <= set(outcomes)
    codes = Counter(e["code"] for e in sink.events)
    assert codes["guard_unavailable"] > 0  # the store faults were hit
    for call_id, runs in executed.items():
        assert runs == 1
        assert by_id[call_id]["decision"] == "allow"  # a tool ran only for an admitted call
    for e in sink.events:
        if e["decision"] == "deny":
            assert e["outcome"] == "denied"
            assert e["call_id"] not in executed


# -- pathological arguments ------------------------------------------------------------------------------


def _deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": [value]}
    return value


@pytest.mark.parametrize("audit_key", [None, "k"])
@pytest.mark.parametrize("path", ["invoke", "ainvoke"])
async def test_pathological_arguments_get_their_one_event(path: str, audit_key: str | None) -> None:
    sink = MemorySink()
    guard = Guard(POLICY, audit=sink, audit_key=audit_key)
    huge = "x" * 10_000_000
    runs: list[str] = []

    async def afree(**_: Any) -> str:
        runs.append("ran")
        return "ran"

    for args in ({"big": huge}, {"deep": _deep(10_000)}, {"both": [huge, _deep(10_000)]}):
        if path == "invoke":
            assert guard.invoke("free", args, lambda **_: runs.append("ran") or "ran") == "ran"
        else:
            assert await guard.ainvoke("free", args, afree) == "ran"
    assert len(runs) == 3
    assert [e["outcome"] for e in sink.events] == ["ok", "ok", "ok"]
    assert sink.events[0]["args"]["big"]["len"] == 10_000_000
    assert sink.events[1]["args"]["deep"]["type"] == "object"
    for e in sink.events:
        assert len(json.dumps(e)) < 2_000  # the event stays small whatever the arguments


# -- cancelled calls -------------------------------------------------------------------------------------


async def test_a_call_cancelled_while_the_tool_runs_writes_one_cancelled_event() -> None:
    sink = MemorySink()
    guard = Guard(POLICY, audit=sink)
    started = asyncio.Event()

    async def hangs(**_: Any) -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(guard.ainvoke("limited", {}, hangs, identity="a", call_id="c1"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (event,) = sink.events
    assert (event["call_id"], event["outcome"], event["error"]) == ("c1", "cancelled", "CancelledError")


async def test_a_call_cancelled_while_a_human_decides_writes_one_event_and_frees_the_held_quota() -> None:
    sink = MemorySink()
    asked = asyncio.Event()
    policy = Policy.from_dict(
        {
            "version": "1",
            "default": "deny",
            "tools": {
                "held": {
                    "action": "require_approval",
                    "limits": [{"counter": "h", "window": "minute", "max": 1, "scope": "global"}],
                }
            },
        }
    )

    async def slow(_: ApprovalRequest) -> bool:
        asked.set()
        await asyncio.sleep(3600)
        return True

    guard = Guard(policy, audit=sink, approver=slow)
    runs: list[int] = []

    async def tool(**_: Any) -> str:
        runs.append(1)
        return "ran"

    task = asyncio.create_task(guard.ainvoke("held", {}, tool, call_id="c1"))
    await asked.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runs == []
    (event,) = sink.events
    assert (event["call_id"], event["outcome"]) == ("c1", "cancelled")
    # The held quota came back: the next call is asked (and approved), not refused.
    approving = Guard(guard, store=guard.store, approver=lambda _: True, audit=sink)
    assert await approving.ainvoke("held", {}, tool) == "ran"


def test_a_keyboard_interrupt_in_the_tool_writes_one_cancelled_event() -> None:
    sink = MemorySink()
    guard = Guard(POLICY, audit=sink)

    def interrupted(**_: Any) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        guard.invoke("free", {}, interrupted)
    assert [e["outcome"] for e in sink.events] == ["cancelled"]


def test_a_keyboard_interrupt_while_waiting_for_a_human_writes_one_cancelled_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The sync approval wait is interrupted in the calling thread (as Ctrl-C would): one event, no run.
    sink = MemorySink()
    release = threading.Event()

    def approver(_: ApprovalRequest) -> bool:
        release.wait(5)
        return True

    guard = Guard(POLICY, audit=sink, approver=approver)

    def interrupted(self: Any, op: Any) -> Any:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Pipeline, "_ask_sync", interrupted)
        with pytest.raises(KeyboardInterrupt):
            guard.invoke("held", {}, lambda **_: pytest.fail("the tool must not run"))
    release.set()
    assert [e["outcome"] for e in sink.events] == ["cancelled"]


# -- the audit path is checked when the Guard is built ---------------------------------------------------


def test_a_directory_is_refused_when_the_guard_is_built(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is a directory"):
        Guard(POLICY, audit=tmp_path)


def test_a_missing_folder_is_refused_when_the_guard_is_built(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        Guard(POLICY, audit=tmp_path / "missing" / "audit.jsonl")


def test_an_unwritable_path_is_refused_when_the_guard_is_built() -> None:
    # Nothing can be created in /proc, not even by root (tests may run as root in CI).
    with pytest.raises(ConfigurationError, match="cannot be written") as info:
        Guard(POLICY, audit="/proc/mcp-guard-audit.jsonl")
    assert isinstance(info.value, MCPGuardError)
    assert isinstance(info.value, ValueError)


# -- readable events -------------------------------------------------------------------------------------


def test_events_carry_iso_time_call_and_run_ids_and_the_policy_hash(clock: FakeClock) -> None:
    sink = MemorySink()
    guard = Guard(POLICY, audit=sink, clock=clock)
    guard.invoke("free", {}, lambda **_: "ok", call_id="call-7", run_id="thread-1")
    guard.invoke("blocked", {}, lambda **_: "ok")
    first, second = sink.events
    assert first["time"] == iso_time(clock()) == "2023-11-14T22:13:20.000000Z"
    assert (first["call_id"], first["run_id"], first["policy"]) == ("call-7", "thread-1", POLICY.hash)
    assert "run_id" not in second
    assert len(second["call_id"]) == 36  # a UUID4 when the framework gave no id
    assert "trace_id" not in first


def test_events_carry_the_active_spans_trace_and_span_ids() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    sink = MemorySink()
    guard = Guard(POLICY, audit=sink)
    with tracer.start_as_current_span("agent step") as span:
        guard.invoke("free", {}, lambda **_: "ok")
    context = span.get_span_context()
    (event,) = sink.events
    assert event["trace_id"] == f"{context.trace_id:032x}"
    assert event["span_id"] == f"{context.span_id:016x}"


def test_import_mcp_guard_does_not_import_opentelemetry() -> None:
    code = "import sys, mcp_guard; print(any(m.startswith('opentelemetry') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
