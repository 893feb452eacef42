"""``guard.usage()`` and ``mcp-guard usage``: what each limit has used, checked against the calls the tool
itself received (an independent reference) and against the store's own admission answers."""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mcp_guard import Guard
from mcp_guard._cli.main import main
from mcp_guard._guard.usage import usage_charges
from mcp_guard._stores import Store, usage_by_check
from tests.support.clock import FakeClock

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "tools": {
        "a": {
            "limits": [
                {"counter": "per_id", "window": 60, "max": 5, "scope": "identity"},
                {"counter": "glob", "window": 30, "max": 8, "scope": "global"},
            ]
        },
        "b": {
            "limits": [
                {"counter": "per_session", "window": 45, "max": 4, "scope": "session"},
                {"counter": "spend", "window": "minute", "max": 20, "scope": "identity", "cost": "args.n"},
            ]
        },
        "c": {"rate_limit": "3/20s"},
        "d": {"limits": [{"counter": "per_tool", "window": 60, "max": 3, "scope": "tool"}]},
    },
}

# counter -> (tool, window, what must match between the call and the query, units per call)
REFERENCE: dict[str, tuple[str, float, str | None, str | None]] = {
    "per_id": ("a", 60, "identity", None),
    "glob": ("a", 30, None, None),
    "per_session": ("b", 45, "session", None),
    "spend": ("b", 60, "identity", "n"),
    "c:rate_limit": ("c", 20, "identity", None),
    "per_tool": ("d", 60, None, None),
}


class RecordingTool:
    """Records (time, tool, identity, session, n) for each call that stays charged; fails on request.

    ``fail="result"`` returns an error result (the guard gives its quota back: not recorded); ``fail="raise"``
    raises from inside the tool (the tool may have acted, so the guard keeps the charge: recorded).
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.runs: list[tuple[float, str, str, str, int]] = []

    def make(self, tool: str, identity: str, session: str, fail: str | None) -> Any:
        def run(**args: Any) -> str:
            if fail == "result":
                return "error"
            self.runs.append((self.clock(), tool, identity, session, int(args.get("n", 1))))
            if fail == "raise":
                raise RuntimeError("upstream failed")
            return "ok"

        return run


def expected(runs: list[tuple[float, str, str, str, int]], counter: str, now: float, who: dict[str, str]) -> Any:
    tool, window, match, units = REFERENCE[counter]
    counted = []
    for t, name, identity, session, n in runs:
        mine = match is None or {"identity": identity, "session": session}[match] == who[match]
        if name == tool and t > now - window and mine:
            counted.append((t, n if units else 1))
    used = sum(u for _, u in counted)
    next_free = min(t for t, _ in counted) + window - now if counted else None
    return used, next_free


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_usage_agrees_with_the_calls_made_and_with_the_store(store: Store, clock: FakeClock, seed: int) -> None:
    rng = random.Random(seed)
    guard = Guard(POLICY, store=store, clock=clock, retry=False)
    tool = RecordingTool(clock)
    for _ in range(80):
        name = rng.choice("abcd")
        identity, session = rng.choice(["x", "y"]), rng.choice(["s1", "s2"])
        args = {"n": rng.randint(1, 6)} if name == "b" else {}
        fail = rng.choice(["result", "raise"]) if rng.random() < 0.15 else None
        with contextlib.suppress(RuntimeError):  # the failing tool's own error, its charge kept
            guard.invoke(
                name,
                args,
                tool.make(name, identity, session, fail),
                identity=identity,
                session=session,
                is_error=lambda value: value == "error",
            )
        clock.advance(rng.choice([0, 0, 1, 2.5, 7, 15]))

        if rng.random() < 0.3:
            who = {"identity": rng.choice(["x", "y"]), "session": rng.choice(["s1", "s2"])}
            report = guard.usage(**who)
            assert {u.counter for u in report} == set(REFERENCE)
            for u in report:
                used, next_free = expected(tool.runs, u.counter, clock(), who)
                assert u.used == used, u
                assert u.remaining == max(u.max - used, 0)
                if next_free is None:
                    assert u.next_free_in_s is None
                else:
                    assert u.next_free_in_s == pytest.approx(next_free, abs=1e-6)
                    assert u.next_free_at == pytest.approx(clock() + next_free, abs=1e-6)
            # The store's own admission answers say the same (the generic, check-only way of reading usage).
            charges = usage_charges(guard.policy, **who)
            by_check = usage_by_check(store.check, charges)
            assert [u.used for u in by_check] == [u.used for u in report]
            for u, c in zip(by_check, report, strict=True):
                if c.used and c.used < c.max:
                    assert u.next_free_in_s == pytest.approx(c.next_free_in_s, abs=0.011)
    assert tool.runs  # the sequence did run calls


async def test_ausage_matches_usage(store: Store, clock: FakeClock) -> None:
    guard = Guard(POLICY, store=store, clock=clock)
    for _ in range(3):
        await guard.ainvoke("a", {}, lambda: "ok", identity="x")
    sync = guard.usage(identity="x", tool="a")
    assert [u.to_dict() for u in await guard.ausage(identity="x", tool="a")] == [u.to_dict() for u in sync]
    assert [(u.counter, u.used, u.remaining) for u in sync] == [("per_id", 3, 2), ("glob", 3, 5)]


class CheckOnlyStore:
    """A third-party store with only the six protocol methods (no usage): the default must still answer."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def check(self, charges: Any) -> Any:
        return self.inner.check(charges)

    def reserve(self, charges: Any) -> Any:
        return self.inner.reserve(charges)

    def release(self, charges: Any, token: str) -> None:
        self.inner.release(charges, token)

    async def acheck(self, charges: Any) -> Any:
        return self.inner.check(charges)

    async def areserve(self, charges: Any) -> Any:
        return self.inner.reserve(charges)

    async def arelease(self, charges: Any, token: str) -> None:
        self.inner.release(charges, token)


async def test_a_store_without_usage_is_read_through_check(store: Store, clock: FakeClock) -> None:
    guard = Guard(POLICY, store=CheckOnlyStore(store), clock=clock)
    for _ in range(4):
        guard.invoke("c", {}, lambda: "ok", identity="x")
        clock.advance(1)
    (u,) = guard.usage(identity="x", tool="c")
    assert (u.used, u.remaining, u.next_free_in_s) == (3, 0, pytest.approx(16, abs=0.011))
    (au,) = await guard.ausage(identity="x", tool="c")
    assert au.used == 3


def test_usage_of_a_hidden_tool_or_an_unlimited_one_is_empty() -> None:
    guard = Guard({"version": "1", "default": "allow", "hide": ["h"]})
    assert guard.usage(tool="h") == []
    assert guard.usage(tool="free") == []
    assert guard.usage() == []


def test_charges_resolve_like_the_guard_charges(clock: FakeClock) -> None:
    guard = Guard(POLICY, clock=clock)
    decision = guard.policy.evaluate("b", {"n": 2}, identity="x", session="s1")
    resolved = usage_charges(guard.policy, tool="b", identity="x", session="s1")
    assert [c.key for c in resolved] == [c.key for c in decision.limits]
    assert [replace(c, cost=1) for c in decision.limits] == resolved


def test_cli_prints_the_usage_from_a_shared_store(redis_url: str, tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(POLICY), encoding="utf-8")
    store = f"{redis_url}?prefix=usagecli"
    guard = Guard(path, store=store)
    for _ in range(2):
        guard.invoke("a", {}, lambda: "ok", identity="carol")
    guard.close()

    assert main(["usage", str(path), "--store", store, "--identity", "carol", "--tool", "a", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["counter"], r["used"], r["remaining"], r["scope_key"]) for r in rows] == [
        ("per_id", 2, 3, "carol"),
        ("glob", 2, 6, ""),
    ]
    assert main(["usage", str(path), "--store", store, "--identity", "carol"]) == 0
    table = capsys.readouterr().out
    for text in ("per_id", "spend", "carol"):
        assert text in table

    assert main(["usage", str(path), "--store", "nosuch://"]) == 2
    assert "unknown store" in capsys.readouterr().err
