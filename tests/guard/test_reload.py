"""Hot reload: a valid new policy takes over, an invalid one never does, counters carry over, calls never fail."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mcp_guard import Guard, MemorySink, Policy
from mcp_guard._stores import Store
from tests.support.clock import FakeClock


def doc(version: int, *, lowered: int = 1_000_000, default: str = "allow") -> dict[str, Any]:
    return {
        "version": "1",
        "default": default,
        "description": f"version {version}",
        "tools": {
            "t": {
                "limits": [
                    {"counter": "steady", "window": "hour", "max": 1_000_000, "scope": "global"},
                    {"counter": "lowered", "window": "hour", "max": lowered, "scope": "global"},
                ]
            }
        },
    }


def write(path: Path, content: Any) -> None:
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")


class Tool:
    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.calls += 1
        return "ok"


def test_eight_threads_through_a_hundred_rewrites_half_invalid(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    write(path, doc(0))
    sink, tool = MemorySink(), Tool()
    guard = Guard(path, audit=sink)
    valid = {guard.policy.hash}
    results: list[Any] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker(n: int) -> None:
        while not stop.is_set():
            try:
                results.append(guard.invoke("t", {}, tool, identity=f"w{n}"))
            except BaseException as exc:  # a call that errors is what this test looks for
                errors.append(exc)
            time.sleep(0.001)  # leave the reloading thread some of the GIL

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    try:
        for i in range(1, 101):
            if i % 2:
                # Invalid in different ways: bad JSON, a negative max, an unknown field.
                bad = ["{not json", {**doc(i), "tools": {"t": {"limits": [{"window": "hour", "max": -1}]}}}]
                write(path, bad[i % 4 == 1] if i % 3 else {**doc(i), "colour": "red"})
                assert guard.reload() is False
            else:
                write(path, doc(i))
                valid.add(Policy.load(path).hash)
                assert guard.reload() is True
            time.sleep(0.002)  # let the workers run between rewrites
    finally:
        stop.set()
        for t in threads:
            t.join()

    assert errors == []
    assert len(results) == tool.calls > 100
    assert set(results) == {"ok"}
    calls = [e for e in sink.events if "event" not in e]
    reloads = [e for e in sink.events if e.get("event") == "policy_reload"]
    assert len(calls) == tool.calls
    assert {e["policy"] for e in calls} <= valid
    assert len({e["policy"] for e in calls}) > 1  # the calls did see the reloads
    assert [e["ok"] for e in reloads] == [False, True] * 50
    assert all(e["error"] and e["policy"] in valid for e in reloads if not e["ok"])
    assert guard.policy.hash == Policy.load(path).hash

    # The limits kept counting across all 50 reloads: the store holds every call the tool received.
    used = {u.counter: u.used for u in guard.usage(tool="t")}
    assert used == {"steady": tool.calls, "lowered": tool.calls}

    # Lowering a limit to what is already used takes effect on the very next call.
    write(path, doc(101, lowered=tool.calls))
    assert guard.reload() is True
    refused = guard.invoke("t", {}, tool)
    assert refused["code"] == "rate_limited"
    assert refused["rule"] == "/tools/t/limits/1"
    assert refused["policy"] == guard.policy.hash


def test_counters_survive_a_reload_on_every_store(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    write(path, doc(0, lowered=5))
    guard = Guard(path, store=store, clock=clock)
    tool = Tool()
    for _ in range(3):
        guard.invoke("t", {}, tool)
    write(path, doc(1, lowered=5))
    assert guard.reload() is True
    assert {u.counter: u.used for u in guard.usage(tool="t")} == {"steady": 3, "lowered": 3}
    for _ in range(2):
        assert guard.invoke("t", {}, tool) == "ok"
    assert guard.invoke("t", {}, tool)["code"] == "rate_limited"
    assert tool.calls == 5


def test_reload_by_hand_takes_a_source_and_reports_what_happened(caplog: pytest.LogCaptureFixture) -> None:
    sink = MemorySink()
    guard = Guard(doc(0), audit=sink)
    with pytest.raises(ValueError, match="not built from a file"):
        guard.reload()
    assert guard.reload(doc(0)) is False  # the same policy: nothing to do
    assert guard.reload({"version": "1", "default": "maybe"}) is False
    assert "policy reload" in caplog.text
    assert guard.reload(doc(0, default="deny")) is True
    assert guard.invoke("other", {}, Tool())["code"] == "default_deny"
    reloads = [e for e in sink.events if e.get("event") == "policy_reload"]
    assert [e["ok"] for e in reloads] == [False, True]
    assert "default" in reloads[0]["error"]


def wait_for(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def test_watching_the_file_puts_a_new_version_in_force_and_keeps_the_old_on_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    write(path, doc(0))
    sink, tool = MemorySink(), Tool()
    guard = Guard(path, reload=True, audit=sink)
    try:
        assert guard._watcher.ready.wait(10)
        assert guard.invoke("other", {}, tool) == "ok"
        write(path, doc(1, default="deny"))
        assert wait_for(lambda: guard.policy.default == "deny")
        assert guard.invoke("other", {}, tool)["code"] == "default_deny"

        write(path, "{broken")
        assert wait_for(lambda: any(e.get("ok") is False for e in sink.events))
        assert guard.policy.default == "deny"
        assert guard.invoke("other", {}, tool)["code"] == "default_deny"
    finally:
        watcher = guard._watcher
        guard.close()
    assert not watcher._thread.is_alive()


def test_reload_true_needs_a_file() -> None:
    with pytest.raises(ValueError, match="file path"):
        Guard(doc(0), reload=True)


def test_a_call_decided_again_after_an_edit_keeps_the_policy_it_started_with() -> None:
    # The human edits the arguments while a reload happens: the edit is judged by the policy the call started
    # under (which allows amounts up to 100), not by the new one (which denies everything but amount 1).
    old = {"version": "1", "default": "deny", "tools": {"pay": {"action": "require_approval"}}}
    new = {"version": "1", "default": "deny", "tools": {"pay": {"deny_if": {"args.amount": {"gt": 1}}}}}
    sink, paid = MemorySink(), []
    guard: Guard

    def approver(request: Any) -> Any:
        assert guard.reload(new) is True
        from mcp_guard import ApprovalDecision

        return ApprovalDecision.edit({"amount": 50})

    guard = Guard(old, audit=sink, approver=approver)
    assert guard.invoke("pay", {"amount": 500}, lambda amount: paid.append(amount) or "ok") == "ok"
    assert paid == [50]
    (call_event,) = [e for e in sink.events if "event" not in e]
    assert call_event["policy"] == Policy.from_dict(old).hash
    assert guard.invoke("pay", {"amount": 50}, lambda amount: "ok")["code"] == "denied"  # the new one from now on


def test_reload_listeners_hear_each_new_policy_and_a_failing_one_stops_nothing() -> None:
    guard = Guard({"version": "1", "default": "allow"})
    heard: list[str] = []

    def broken(policy: Policy) -> None:
        raise RuntimeError("listener bug")

    guard.on_reload(broken)
    guard.on_reload(lambda policy: heard.append(policy.hash))
    assert guard.reload({"version": "1", "default": "deny"}) is True
    assert heard == [guard.policy.hash]
    assert guard.reload({"version": "1", "default": "deny"}) is False  # same policy: nothing new to hear
    assert guard.reload({"version": "1", "default": "nonsense"}) is False  # invalid: the old one stays
    assert heard == [guard.policy.hash]
