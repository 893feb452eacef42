"""``audit_failure``: "closed" refuses a call whose record cannot be written before the tool runs, and the tool
never runs; "open" (default) runs it and counts the failed write."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from mcp_guard import Guard, JsonlSink, MemorySink, Policy
from mcp_guard._errors import ConfigurationError

POLICY = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "tools": {
            "move": {"limits": [{"counter": "m", "window": "minute", "max": 1, "scope": "global"}]},
            "blocked": {"action": "deny"},
        },
    }
)


class Raising:
    def __init__(self) -> None:
        self.attempts = 0

    def write(self, event: Mapping[str, Any]) -> None:
        self.attempts += 1
        raise OSError("disk full")


def _broken_sinks() -> list[Any]:
    sinks: list[Any] = [Raising()]
    if Path("/dev/full").exists():  # every write fails with ENOSPC: a full disk, for real
        sinks.append("/dev/full")
    return sinks


@pytest.mark.parametrize("broken", _broken_sinks(), ids=lambda s: "dev_full" if isinstance(s, str) else "raising")
@pytest.mark.parametrize("path", ["invoke", "ainvoke"])
async def test_closed_refuses_and_the_tool_never_runs(broken: Any, path: str) -> None:
    guard = Guard(POLICY, audit=broken, audit_failure="closed")
    runs: list[int] = []

    async def amove(**_: Any) -> str:
        runs.append(1)
        return "moved"

    for _ in range(3):
        if path == "invoke":
            result = guard.invoke("move", {}, lambda **_: runs.append(1) or "moved")
        else:
            result = await guard.ainvoke("move", {}, amove)
        assert result["code"] == "guard_unavailable"
        assert result["rule"] == "/audit"
    assert runs == []
    assert guard.audit_failures >= 3
    # The refused calls gave their quota back: with a working sink the budget (max 1) is whole.
    working = Guard(guard, store=guard.store, audit=MemorySink(), audit_failure="closed")
    assert working.invoke("move", {}, lambda **_: "moved") == "moved"


def test_closed_writes_the_one_event_before_the_tool_runs() -> None:
    sink = MemorySink()
    guard = Guard(POLICY, audit=sink, audit_failure="closed")
    seen: list[int] = []
    assert guard.invoke("move", {}, lambda **_: seen.append(len(sink.events)) or "moved") == "moved"
    assert seen == [1]  # the record was there when the tool ran
    assert guard.invoke("blocked", {}, lambda **_: "x")["code"] == "denied"
    assert [e["outcome"] for e in sink.events] == ["admitted", "denied"]  # one event per call


def test_closed_with_one_broken_sink_keeps_one_event_per_sink() -> None:
    good, bad = MemorySink(), Raising()
    guard = Guard(POLICY, audit=[good, bad], audit_failure="closed")
    assert guard.invoke("move", {}, lambda **_: pytest.fail("must not run"))["code"] == "guard_unavailable"
    assert [e["outcome"] for e in good.events] == ["admitted"]  # kept, not written twice
    assert bad.attempts == 2  # the record, then the refusal


def test_open_runs_the_call_and_counts_the_failed_write() -> None:
    bad = Raising()
    guard = Guard(POLICY, audit=bad)
    assert guard.invoke("move", {}, lambda **_: "moved") == "moved"
    assert guard.invoke("blocked", {}, lambda **_: "x")["code"] == "denied"
    assert guard.audit_failures == 2


def test_a_jsonl_file_made_read_only_is_refused_at_build(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.touch(mode=0o444)
    path.chmod(0o444)
    try:
        JsonlSink(path).close()
    except ConfigurationError:
        pass
    else:
        pytest.skip("running as root: a read-only mode does not stop root from writing")
    with pytest.raises(ConfigurationError):
        Guard(POLICY, audit=path, audit_failure="closed")


def test_audit_failure_must_be_open_or_closed() -> None:
    with pytest.raises(ConfigurationError, match="audit_failure"):
        Guard(POLICY, audit_failure="sometimes")  # type: ignore[arg-type]
