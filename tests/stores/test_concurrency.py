"""Exactness under concurrency: many callers at once admit exactly ``max``, never one more or one less."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import uuid
from collections.abc import Iterator

import pytest

from mcp_guard import LimitCharge
from mcp_guard._stores import Store
from mcp_guard._stores.memory import MemoryStore
from mcp_guard._stores.redis import RedisStore
from tests.support.clock import FakeClock

MAX = 30


def charge(counter: str = "burst") -> LimitCharge:
    return LimitCharge(counter, "global", "", 60.0, MAX, 1, "/tools/t/limits/0")


@pytest.fixture(
    params=[pytest.param("memory", id="memory"), pytest.param("redis", id="redis", marks=pytest.mark.redis)]
)
def store(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Store]:
    """Like conftest's ``store``, with a generous Redis timeout: asyncio timeouts also count the time the
    event loop spends on the other 999 tasks, and these tests are about exact counts, not about failing fast
    (a 2-core CI box under load can take longer than the default 0.25 s to open the connections). Likewise the
    pool wait: 1000 tasks share 64 connections, and on a loaded box the last ones wait over the default 1 s."""
    if request.param == "memory":
        made: Store = MemoryStore(clock=clock)
    else:
        made = RedisStore(request.getfixturevalue("redis_url"), clock=clock, timeout=5.0, pool_timeout=30.0)
    yield made
    made.close()


async def test_1000_concurrent_async_reserves_admit_exactly_max(store: Store) -> None:
    c = charge()
    verdicts = await asyncio.gather(*(store.areserve([c]) for _ in range(1000)))
    assert sum(v.ok for v in verdicts) == MAX
    assert len({v.token for v in verdicts if v.ok}) == MAX
    refused = [v for v in verdicts if not v.ok]
    assert all(v.charge == c and v.retry_after_s is not None for v in refused)


async def test_concurrent_calls_under_two_limits_are_all_or_nothing(store: Store) -> None:
    # 1000 calls race for a roomy limit and a tight one: whatever the order, the roomy one is charged
    # exactly as often as the tight one admitted.
    roomy = LimitCharge("roomy", "global", "", 60.0, 500, 1, "/a")
    tight = LimitCharge("tight", "global", "", 60.0, MAX, 1, "/b")
    verdicts = await asyncio.gather(*(store.areserve([roomy, tight]) for _ in range(1000)))
    assert sum(v.ok for v in verdicts) == MAX
    alone = [store.reserve([roomy]).ok for _ in range(500)]
    assert sum(alone) == 500 - MAX


def test_threads_admit_exactly_max_in_memory() -> None:
    store = MemoryStore(clock=FakeClock())
    c = charge()
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        mine = [store.reserve([c]).ok for _ in range(100)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 800
    assert sum(results) == MAX


def _process_worker(
    url: str, counter: str, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    # Runs in a spawned process: its own interpreter, its own RedisStore and connections.
    store = RedisStore(url, timeout=5.0)
    c = charge(counter)

    async def burst() -> int:
        verdicts = await asyncio.gather(*(store.areserve([c]) for _ in range(100)))
        sync_ok = sum(store.reserve([c]).ok for _ in range(20))
        await store.aclose()
        return sum(v.ok for v in verdicts) + sync_ok

    barrier.wait(30)
    out.put(asyncio.run(burst()))


@pytest.mark.redis
def test_four_processes_admit_exactly_max_in_total(redis_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    out = ctx.Queue()
    counter = f"procs-{uuid.uuid4().hex}"
    procs = [ctx.Process(target=_process_worker, args=(redis_url, counter, barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        counts = [out.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    assert sum(counts) == MAX
    out.close()
    out.join_thread()
