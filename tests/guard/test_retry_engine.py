"""tenacity as the retry engine: one retrying object per policy, asked by many calls at once.

A :class:`RetryPolicy` builds one ``tenacity.Retrying`` and every retried call asks it (``iter``) with its own
retry state; tenacity keeps its working state per thread. These tests run many retried calls side by side, as
async tasks that interleave at every sleep and as threads, and check that each call got its own waits and its
own stop. Sleeps are injected: nothing sleeps for real.
"""

from __future__ import annotations

import asyncio
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import tenacity

from mcp_guard import Guard, Policy, RetryPolicy

POLICY = Policy.from_dict({"version": "1", "default": "deny", "tools": {"fetch": {}}})
SAFE = {"readOnlyHint": True}
# No back-off of its own, so each wait is the failure's retry-after; 10.5 s of sleep at most per call.
ENGINE = RetryPolicy(attempts=4, initial_s=0, max_s=0, jitter_s=0, max_total_s=10.5)
HINTS = [float(h) for h in range(1, 13)]


class RateLimitedError(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"slow down for {retry_after}")
        self.retry_after = retry_after


def _expected_sleeps(hint: float) -> list[float]:
    # Up to attempts - 1 = 3 waits, and none that would bring the time slept to 10.5 s.
    return [hint] * min(3, sum(1 for n in range(1, 4) if n * hint < 10.5))


class Recorder:
    """The guard's sleeps: each is recorded under the retry-after it answers (the hint is the wait here)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.slept: list[float] = []

    def __call__(self, seconds: float) -> None:
        with self.lock:
            self.slept.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self(seconds)
        await asyncio.sleep(0)  # let the other calls run between this call's attempts


async def test_concurrent_async_calls_each_get_their_own_waits_and_stop() -> None:
    recorder = Recorder()
    guard = Guard(POLICY, retry=ENGINE, sleep=recorder, asleep=recorder.asleep)
    attempts = dict.fromkeys(HINTS, 0)

    def tool_for(hint: float) -> Any:
        async def tool(**_: Any) -> str:
            attempts[hint] += 1
            await asyncio.sleep(0)
            raise RateLimitedError(hint)

        return tool

    async def one(hint: float) -> None:
        with pytest.raises(RateLimitedError, match=f"slow down for {hint}"):
            await guard.ainvoke("fetch", {}, tool_for(hint), annotations=SAFE)

    await asyncio.gather(*(one(h) for h in HINTS))
    assert attempts == {h: len(_expected_sleeps(h)) + 1 for h in HINTS}
    assert sorted(recorder.slept) == sorted(s for h in HINTS for s in _expected_sleeps(h))


def test_concurrent_threads_each_get_their_own_waits_and_stop() -> None:
    recorder = Recorder()
    guard = Guard(POLICY, retry=ENGINE, sleep=recorder, asleep=recorder.asleep)
    lock = threading.Lock()
    attempts = dict.fromkeys(HINTS, 0)
    start = threading.Barrier(len(HINTS))

    def one(hint: float) -> None:
        def tool(**_: Any) -> str:
            with lock:
                attempts[hint] += 1
            raise RateLimitedError(hint)

        start.wait()
        with pytest.raises(RateLimitedError):
            guard.invoke("fetch", {}, tool, annotations=SAFE)

    with ThreadPoolExecutor(len(HINTS)) as pool:
        list(pool.map(one, HINTS))
    assert attempts == {h: len(_expected_sleeps(h)) + 1 for h in HINTS}
    assert sorted(recorder.slept) == sorted(s for h in HINTS for s in _expected_sleeps(h))


async def _call(guard: Guard, path: str, tool: Any) -> Any:
    if path == "invoke":
        return guard.invoke("fetch", {}, tool, annotations=SAFE)
    return await guard.ainvoke("fetch", {}, tool, annotations=SAFE)


@pytest.mark.parametrize("path", ["invoke", "ainvoke"])
async def test_the_last_failure_is_raised_with_its_own_traceback(path: str) -> None:
    # tenacity answers "stop" by raising the outcome again: the caller sees the tool's frames, not tenacity's.
    recorder = Recorder()
    guard = Guard(POLICY, retry=RetryPolicy(attempts=2), sleep=recorder, asleep=recorder.asleep)

    def tool(**_: Any) -> str:
        raise ConnectionError("reset")

    with pytest.raises(ConnectionError) as caught:
        await _call(guard, path, tool)
    assert len(recorder.slept) == 1
    files = [frame.filename for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert any(f.endswith("test_retry_engine.py") for f in files)
    engine = Path(tenacity.__file__).parent
    assert not [f for f in files if Path(f).is_relative_to(engine)]
