"""Faulty parts fail closed (spec 0.2 section 8): a custom store that raises, hangs or returns garbage gives
``guard_unavailable`` on every path, sync and async, and never an exception out of invoke/ainvoke/run/arun;
the tool never runs. (Faulty approvers: tests/calls/test_approvals_held.py and tests/calls/test_approvals.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from mcp_guard import Guard, MemorySink, Policy, Verdict
from mcp_guard._policy.decision import LimitCharge

POLICY = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "tools": {
            "limited": {"limits": [{"counter": "l", "window": "minute", "max": 5, "scope": "global"}]},
            "held": {
                "action": "require_approval",
                "limits": [{"counter": "h", "window": "minute", "max": 5, "scope": "global"}],
            },
        },
    }
)

GARBAGE: list[Any] = [None, "ok", True, {"ok": True}, Verdict(ok="yes")]  # type: ignore[arg-type]


class Faulty:
    """A third-party store (StoreProtocol): every check/reserve raises, hangs or returns ``answer``."""

    def __init__(self, mode: str, answer: Any = None) -> None:
        self.mode, self.answer = mode, answer

    def _act(self) -> Any:
        if self.mode == "raise":
            raise KeyError("no such shard")
        if self.mode == "hang":
            time.sleep(3)
        return self.answer

    async def _aact(self) -> Any:
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return self._act()

    def check(self, charges: Sequence[LimitCharge]) -> Verdict:
        return self._act()  # type: ignore[no-any-return]

    def reserve(self, charges: Sequence[LimitCharge]) -> Verdict:
        return self._act()  # type: ignore[no-any-return]

    def release(self, charges: Sequence[LimitCharge], token: str) -> None:
        self._act()

    async def acheck(self, charges: Sequence[LimitCharge]) -> Verdict:
        return await self._aact()  # type: ignore[no-any-return]

    async def areserve(self, charges: Sequence[LimitCharge]) -> Verdict:
        return await self._aact()  # type: ignore[no-any-return]

    async def arelease(self, charges: Sequence[LimitCharge], token: str) -> None:
        await self._aact()


STORES = [Faulty("raise"), Faulty("hang")] + [Faulty("garbage", g) for g in GARBAGE]
IDS = ["raise", "hang"] + [f"garbage-{type(g).__name__}-{i}" for i, g in enumerate(GARBAGE)]


@pytest.mark.parametrize("store", STORES, ids=IDS)
@pytest.mark.parametrize("tool", ["limited", "held"])
async def test_a_faulty_store_is_guard_unavailable_on_every_path(store: Faulty, tool: str) -> None:
    sink = MemorySink()
    guard = Guard(POLICY, store=store, audit=sink, store_timeout_s=0.2, approver=lambda _: True)
    runs: list[str] = []

    def fn(**_: Any) -> str:
        runs.append("ran")
        return "ran"

    async def afn(**_: Any) -> str:
        return fn()

    started = time.monotonic()
    assert guard.invoke(tool, {}, fn)["code"] == "guard_unavailable"
    assert (await guard.ainvoke(tool, {}, afn))["code"] == "guard_unavailable"
    assert guard.run(tool, {}, fn).violation.code == "guard_unavailable"  # type: ignore[union-attr]
    assert (await guard.arun(tool, {}, afn)).violation.code == "guard_unavailable"  # type: ignore[union-attr]
    assert guard.check(tool, {}).code == "guard_unavailable"
    assert (await guard.acheck(tool, {})).code == "guard_unavailable"
    refused = [guard.admit(tool, {}), await guard.aadmit(tool, {})]
    assert not any(a.admitted for a in refused)
    guard.finish(refused[0], "denied")
    await guard.afinish(refused[1], "denied")
    assert time.monotonic() - started < 8 * 0.2 + 3  # each hang is cut at store_timeout_s
    assert runs == []
    assert len(sink.events) == 6  # one per call (check/acheck are looks, not calls: no event)
    assert {e["code"] for e in sink.events} == {"guard_unavailable"}


async def test_a_reservation_with_a_token_that_is_not_text_is_refused() -> None:
    guard = Guard(POLICY, store=Faulty("garbage", Verdict(ok=True, token=7)))  # type: ignore[arg-type]
    assert guard.invoke("limited", {}, lambda **_: pytest.fail("must not run"))["code"] == "guard_unavailable"

    async def never(**_: Any) -> None:
        pytest.fail("must not run")

    assert (await guard.ainvoke("limited", {}, never))["code"] == "guard_unavailable"


def test_fail_open_still_allows_and_says_so() -> None:
    sink = MemorySink()
    guard = Guard(POLICY, store=Faulty("garbage", None), audit=sink, fail_mode="open")
    assert guard.invoke("limited", {}, lambda **_: "ran") == "ran"
    assert sink.events[0]["fail_open"] is True


def test_store_timeout_must_be_positive() -> None:
    from mcp_guard._errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="store_timeout_s"):
        Guard(POLICY, store_timeout_s=0)
