"""A real Guard on a real redis-server that goes away: fail closed (deny) or open (allow, audited), never hang."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from mcp_guard import Guard, MemorySink, Policy
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis

TIMEOUT = 0.25
MARGIN = 0.35

POLICY = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "tools": {"git_log": {"limits": [{"counter": "git", "window": "minute", "max": 30, "scope": "grant"}]}},
    }
)


class Tool:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, **_: Any) -> str:
        self.calls += 1
        return "log"

    async def acall(self, **_: Any) -> str:
        return self(**_)


def _guard(server: RedisServer, fail_mode: str, sink: MemorySink) -> Guard:
    return Guard(POLICY, store=f"{server.url}?timeout={TIMEOUT}", fail_mode=fail_mode, audit=sink)  # type: ignore[arg-type]


def test_closed_denies_while_redis_is_down_and_admits_after_restart(
    redis_factory: Callable[[], RedisServer],
) -> None:
    server = redis_factory()
    sink, tool = MemorySink(), Tool()
    guard = _guard(server, "closed", sink)
    try:
        assert guard.invoke("git_log", {}, tool, identity="alice") == "log"
        server.stop()
        for _ in range(3):
            started = time.perf_counter()
            payload = guard.invoke("git_log", {}, tool, identity="alice")
            assert time.perf_counter() - started < TIMEOUT + MARGIN
            assert payload["code"] == "guard_unavailable"
            assert payload["error"] == "policy_violation"
        assert tool.calls == 1
        server.start()
        assert guard.invoke("git_log", {}, tool, identity="alice") == "log"
        assert tool.calls == 2
    finally:
        guard.close()
    assert [e["code"] for e in sink.events] == [None, *["guard_unavailable"] * 3, None]


async def test_open_allows_while_redis_is_down_and_says_so_in_the_audit(
    redis_factory: Callable[[], RedisServer],
) -> None:
    server = redis_factory()
    sink, tool = MemorySink(), Tool()
    guard = _guard(server, "open", sink)
    try:
        assert await guard.ainvoke("git_log", {}, tool.acall, identity="alice") == "log"
        server.stop()
        started = time.perf_counter()
        assert await guard.ainvoke("git_log", {}, tool.acall, identity="alice") == "log"
        assert time.perf_counter() - started < TIMEOUT + MARGIN
        assert tool.calls == 2
        server.start()
        assert await guard.ainvoke("git_log", {}, tool.acall, identity="alice") == "log"
    finally:
        await guard.aclose()
    assert [e.get("fail_open", False) for e in sink.events] == [False, True, False]
    assert all(e["outcome"] == "ok" for e in sink.events)


def test_a_hung_redis_is_denied_within_the_timeout(redis_factory: Callable[[], RedisServer]) -> None:
    server = redis_factory()
    sink, tool = MemorySink(), Tool()
    guard = _guard(server, "closed", sink)
    try:
        assert guard.invoke("git_log", {}, tool, identity="alice") == "log"
        server.pause()
        try:
            started = time.perf_counter()
            assert guard.invoke("git_log", {}, tool, identity="alice")["code"] == "guard_unavailable"
            assert time.perf_counter() - started < TIMEOUT + MARGIN
        finally:
            server.resume()
        assert guard.invoke("git_log", {}, tool, identity="alice") == "log"
    finally:
        guard.close()
