"""The Inbox's ``*_sync`` methods run on the one shared background loop (the one sync callers of async approvers
use): no thread and no event loop made per call, from plain threads or from inside a running loop; and a sync
call made on that loop's own thread fails at once with a clear error instead of waiting on itself for ever.

Threads are counted with ``threading.setprofile``, which every thread the process starts runs first; the Redis
tests read the decisions back from the real server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from mcp_guard import ApprovalRequest, Inbox
from mcp_guard._calls.approval import background_loop


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def inbox_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://sync-{uuid.uuid4().hex}"
    url: str = request.getfixturevalue("redis_url")
    return url


class ThreadsStarted:
    """Counts the threads started while it is on (each runs the profile function once, then turns it off)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._lock = threading.Lock()

    def _seen(self, frame: Any, event: str, arg: Any) -> None:
        sys.setprofile(None)
        with self._lock:
            self.names.append(threading.current_thread().name)

    def __enter__(self) -> ThreadsStarted:
        threading.setprofile(self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        threading.setprofile(None)  # type: ignore[arg-type]  # None turns it off


@pytest.fixture
def threads_started() -> Iterator[Callable[[], ThreadsStarted]]:
    yield ThreadsStarted
    threading.setprofile(None)  # type: ignore[arg-type]


def _round_trip(inbox: Inbox, n: int) -> dict[str, Any] | None:
    rid = inbox.submit_sync(ApprovalRequest("note", {"n": n}))
    inbox.decide_sync(rid, {"type": "reject", "message": f"no {n}"})
    inbox.listing_sync()
    return inbox.wait_sync(rid, 5)


def test_sync_calls_make_no_thread(inbox_url: str, threads_started: Callable[[], ThreadsStarted]) -> None:
    inbox = Inbox(inbox_url)
    _round_trip(inbox, 0)  # the background loop exists from here on
    with threads_started() as started:
        answers = [_round_trip(inbox, n) for n in range(5)]
    assert answers == [{"type": "reject", "message": f"no {n}"} for n in range(5)]
    assert started.names == []  # (0.2 made no thread here, but an event loop per call: asyncio.run)


def test_sync_calls_from_inside_a_running_loop_make_no_thread(
    inbox_url: str, threads_started: Callable[[], ThreadsStarted]
) -> None:
    inbox = Inbox(inbox_url)
    _round_trip(inbox, 0)

    async def in_a_loop() -> list[dict[str, Any] | None]:
        return [_round_trip(inbox, n) for n in range(3)]  # sync code called by async code: blocks this loop only

    with threads_started() as started:
        answers = asyncio.run(in_a_loop())
    assert answers == [{"type": "reject", "message": f"no {n}"} for n in range(3)]
    assert started.names == []  # 0.2 started a thread and an event loop for each of these 12 calls


def test_many_threads_share_the_loop(inbox_url: str) -> None:
    inbox = Inbox(inbox_url)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: _round_trip(inbox, n), range(16)))
    assert answers == [{"type": "reject", "message": f"no {n}"} for n in range(16)]


@pytest.mark.redis
def test_a_sync_wait_is_decided_by_another_threads_sync_call(redis_url: str) -> None:
    inbox = Inbox(redis_url)
    rid = inbox.submit_sync(ApprovalRequest("note", {"text": "hi"}))
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(inbox.wait_sync, rid, 10)  # blocks in BLPOP on the shared loop...
        inbox.decide_sync(rid, {"type": "approve"})  # ...which still serves this call meanwhile
        assert waiting.result(10) == {"type": "approve"}
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert client.hget(f"mcpg:inbox:req:{rid}", "status") == "approved"


def test_a_sync_call_on_the_background_loops_own_thread_fails_at_once() -> None:
    inbox = Inbox(f"memory://sync-{uuid.uuid4().hex}")

    async def on_the_background_loop() -> str:
        # An async approver (run there for sync callers) that calls a sync method: it would wait for the loop it
        # blocks. A clear error instead, which the guard turns into a refusal like any approver's failure.
        return inbox.submit_sync(ApprovalRequest("note", {"text": "hi"}))

    future = asyncio.run_coroutine_threadsafe(on_the_background_loop(), background_loop())
    with pytest.raises(RuntimeError, match=r"background event loop.*await the async method"):
        future.result(timeout=10)  # 0.2 ran it on a thread of its own; a deadlock would time out here
    assert inbox.listing_sync()[0] == []  # nothing was recorded
    # The loop is not harmed: the next sync call from an ordinary thread works.
    assert _round_trip(inbox, 1) == {"type": "reject", "message": "no 1"}


@pytest.mark.redis
def test_an_interrupted_sync_wait_stops_waiting_on_the_store(redis_url: str) -> None:
    inbox = Inbox(redis_url)
    rid = inbox.submit_sync(ApprovalRequest("note", {"text": "hi"}))
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    def blocked_in_blpop() -> bool:
        return any(c.get("cmd") == "blpop" for c in client.client_list())

    def interrupt_once_blocked() -> None:
        deadline = time.monotonic() + 10
        while not blocked_in_blpop() and time.monotonic() < deadline:
            time.sleep(0.01)  # waiting for the server to show the pop, not for a window
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: Python raises KeyboardInterrupt in the waiting main thread

    threading.Thread(target=interrupt_once_blocked, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        inbox.wait_sync(rid, 30)
    deadline = time.monotonic() + 10
    while blocked_in_blpop() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not blocked_in_blpop()  # the server saw the waiting pop go: nothing waits on in the background
    client.close()
