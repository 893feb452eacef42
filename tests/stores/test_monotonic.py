"""The memory store reads a monotonic clock (spec 0.2 section 8): a wall-clock step does not empty its windows."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mcp_guard import Guard, Policy
from mcp_guard._stores.memory import MemoryStore
from tests.support.clock import FakeClock

POLICY = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "tools": {"t": {"limits": [{"counter": "c", "window": "minute", "max": 30, "scope": "global"}]}},
    }
)


def test_a_wall_clock_step_admits_no_more_than_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    guard = Guard(POLICY)
    real = time.time
    offset = [0.0]
    monkeypatch.setattr(time, "time", lambda: real() + offset[0])
    admitted = 0
    for i in range(60):
        if i == 30:
            offset[0] = 120.0  # NTP or an operator steps the wall clock two minutes ahead
        admitted += guard.invoke("t", {}, lambda **_: "ok") == "ok"
    assert admitted == 30


def test_the_default_clock_is_monotonic_and_an_injected_one_is_used(clock: FakeClock) -> None:
    assert MemoryStore().clock is time.monotonic
    assert Guard(POLICY).store.clock is time.monotonic  # type: ignore[union-attr]
    guard = Guard(POLICY, clock=clock)
    assert guard.store.clock is clock  # type: ignore[union-attr]
    results: list[Any] = [guard.invoke("t", {}, lambda **_: "ok") for _ in range(31)]
    assert results[-1]["code"] == "rate_limited"
    clock.advance(60)
    assert guard.invoke("t", {}, lambda **_: "ok") == "ok"
