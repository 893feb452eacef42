"""What only the Redis store has: key layout and TTLs, one round trip per decision, script reloads, faults."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from mcp_guard import LimitCharge, PolicyError, StoreError, store_from_uri
from mcp_guard._stores.redis import RedisStore
from tests.support.clock import FakeClock
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis

TIMEOUT = 0.25
MARGIN = 0.35  # scheduling slack on a loaded 2-core CI box; a hang would take seconds, not this


def limit(max: int = 3, window: float = 60.0, *, counter: str = "calls", scope_id: str = "") -> LimitCharge:
    return LimitCharge(counter, "session", scope_id, window, max, 1, "/tools/t/limits/0")


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_keys_are_namespaced_escaped_and_expire(redis_url: str, raw: redis.Redis, clock: FakeClock) -> None:
    store = store_from_uri(redis_url + "?prefix=app:1", clock=clock)
    assert isinstance(store, RedisStore)
    try:
        assert store.reserve([limit(window=90, counter="c:x", scope_id="s/1")]).ok
    finally:
        store.close()
    keys = sorted(k.decode() for k in raw.keys("*"))
    # The prefix's ":" is escaped like the key's parts, so the layout parses one way only.
    assert keys == ["app%3A1:log:c%3Ax:session:s/1", "app%3A1:meta:c%3Ax:session:s/1"]
    for key in keys:
        ttl = raw.pttl(key)
        assert 179_000 < ttl <= 181_000  # twice the key's longest window plus a second, renewed once a window
    assert raw.hget(keys[1], "w") == b"90"
    # TTLs run on the server's clock: a later, longer window on the same key lengthens them.
    store = RedisStore(redis_url, prefix="app:1", clock=clock)
    try:
        assert store.reserve([limit(window=3600, counter="c:x", scope_id="s/1")]).ok
    finally:
        store.close()
    assert all(7_199_000 < raw.pttl(key) <= 7_201_000 for key in keys)


def test_prefixes_are_separate_namespaces(redis_url: str, clock: FakeClock) -> None:
    a = RedisStore(redis_url, prefix="a", clock=clock)
    b = RedisStore(redis_url, prefix="b", clock=clock)
    try:
        assert a.reserve([limit(max=1)]).ok
        assert not a.reserve([limit(max=1)]).ok
        assert b.reserve([limit(max=1)]).ok
    finally:
        a.close()
        b.close()


def test_two_clients_share_one_budget(redis_url: str, clock: FakeClock) -> None:
    a = RedisStore(redis_url, clock=clock)
    b = RedisStore(redis_url, clock=clock)
    try:
        assert a.reserve([limit(max=2)]).ok
        token = b.reserve([limit(max=2)]).token
        assert token is not None
        assert not a.reserve([limit(max=2)]).ok
        a.release([limit(max=2)], token)  # a token can be given back through any client
        assert a.reserve([limit(max=2)]).ok
    finally:
        a.close()
        b.close()


def test_one_round_trip_per_decision(redis_url: str, raw: redis.Redis, clock: FakeClock) -> None:
    store = RedisStore(redis_url, clock=clock)
    try:
        assert store.reserve([limit(max=100)]).ok  # connects and loads the script
        raw.config_resetstat()
        for _ in range(10):
            assert store.reserve([limit(max=100), limit(max=50, counter="other")]).ok
        assert store.check([limit(max=100)]).ok
        stats = raw.info("commandstats")
    finally:
        store.close()
    assert stats["cmdstat_evalsha"]["calls"] == 11
    top_level = {"cmdstat_eval", "cmdstat_script", "cmdstat_multi", "cmdstat_exec", "cmdstat_get", "cmdstat_ping"}
    assert not top_level & set(stats)


def test_script_is_reloaded_after_a_flush(redis_url: str, raw: redis.Redis, clock: FakeClock) -> None:
    store = RedisStore(redis_url, clock=clock)
    try:
        assert store.reserve([limit(max=2)]).ok
        raw.script_flush()  # what a server restart does to the script cache
        assert store.reserve([limit(max=2)]).ok
        assert not store.reserve([limit(max=2)]).ok
    finally:
        store.close()


def test_uri_options(redis_url: str) -> None:
    store = store_from_uri(redis_url + "?prefix=p&timeout=0.5&max_connections=4&pool_timeout=2")
    assert isinstance(store, RedisStore)
    assert (store.prefix, store.timeout) == ("p", 0.5)
    assert store_from_uri(redis_url + "?timeout=0.5", timeout=1.5).timeout == 1.5  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="timeout"):
        RedisStore(redis_url, timeout=0)


# -- faults: a private server the test stops, restarts and pauses ------------------------------------


def _timed_failure(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    with pytest.raises(StoreError) as info:
        call()
    elapsed = time.perf_counter() - started
    assert isinstance(info.value.__cause__, redis.RedisError)  # the driver's error is chained
    return elapsed


def test_server_stopped_fails_fast_and_recovers_on_restart(redis_factory: Callable[[], RedisServer]) -> None:
    server = redis_factory()
    store = RedisStore(server.url, timeout=TIMEOUT)
    c = limit(max=100)
    try:
        assert store.reserve([c]).ok
        server.stop()
        for op in (lambda: store.reserve([c]), lambda: store.check([c]), lambda: store.release([c], "x.1@1.0")):
            assert _timed_failure(op) < TIMEOUT + MARGIN
        assert store.reserve([]).ok  # no limits: the backend is never asked
        server.start()  # same port, empty script cache
        assert store.reserve([c]).ok
        assert store.check([c]).ok
    finally:
        store.close()


async def test_server_stopped_fails_fast_and_recovers_async(redis_factory: Callable[[], RedisServer]) -> None:
    server = redis_factory()
    store = RedisStore(server.url, timeout=TIMEOUT)
    c = limit(max=100)
    try:
        assert (await store.areserve([c])).ok
        server.stop()
        started = time.perf_counter()
        with pytest.raises(StoreError) as info:
            await store.areserve([c])
        assert time.perf_counter() - started < TIMEOUT + MARGIN
        assert isinstance(info.value.__cause__, redis.RedisError)
        server.start()
        assert (await store.areserve([c])).ok
    finally:
        await store.aclose()


def test_hung_server_times_out_instead_of_hanging(redis_factory: Callable[[], RedisServer]) -> None:
    server = redis_factory()
    store = RedisStore(server.url, timeout=TIMEOUT)
    c = limit(max=100)
    try:
        assert store.reserve([c]).ok
        server.pause()  # connections are accepted by the kernel, nothing answers
        try:
            elapsed = _timed_failure(lambda: store.reserve([c]))
            assert TIMEOUT * 0.8 < elapsed < TIMEOUT + MARGIN
        finally:
            server.resume()
        assert store.reserve([c]).ok
    finally:
        store.close()


def test_errors_do_not_show_the_password(redis_factory: Callable[[], RedisServer]) -> None:
    server = redis_factory()
    url = server.url.replace("redis://", "redis://:hunter2@")
    server.stop()
    store = RedisStore(url, timeout=TIMEOUT)
    try:
        with pytest.raises(StoreError) as info:
            store.reserve([limit()])
        assert "hunter2" not in str(info.value)
        assert "hunter2" not in repr(store)
    finally:
        store.close()


async def test_a_cancelled_call_does_not_poison_the_connection(redis_factory: Callable[[], RedisServer]) -> None:
    server = redis_factory()
    store = RedisStore(server.url, timeout=5.0, max_connections=1)  # one connection: reuse is certain
    full, free = limit(max=1, counter="full"), limit(max=100, counter="free")
    try:
        assert (await store.areserve([full])).ok
        server.pause()
        try:
            pending = asyncio.ensure_future(store.areserve([free]))  # its reply would say "admitted"
            await asyncio.sleep(0.05)  # sent; no reply can come while the server is paused
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
        finally:
            server.resume()
        # Had the connection been reused, this call would read the cancelled call's "admitted".
        refused = await store.areserve([full])
        assert not refused.ok
        assert refused.charge == full
    finally:
        await store.aclose()


def test_a_server_error_is_a_store_error_and_the_connection_stays_usable(redis_url: str, raw: redis.Redis) -> None:
    store = RedisStore(redis_url, max_connections=1)
    broken = limit(counter="broken")
    raw.set(f"mcpg:log:{broken.key}", "not a sorted set")
    try:
        with pytest.raises(StoreError, match="WRONGTYPE") as info:
            store.reserve([broken])
        assert isinstance(info.value.__cause__, redis.ResponseError)
        assert store.reserve([limit()]).ok
    finally:
        store.close()


def test_unix_socket_url(redis_factory: Callable[[], RedisServer], clock: FakeClock) -> None:
    server = redis_factory()
    over_unix = store_from_uri(server.unix_url + "&prefix=u&timeout=0.5", clock=clock)
    over_tcp = RedisStore(server.url, prefix="u", clock=clock)
    try:
        assert over_unix.reserve([limit(max=1)]).ok
        assert not over_tcp.reserve([limit(max=1)]).ok  # the same budget, whichever way in
    finally:
        over_unix.close()
        over_tcp.close()


def test_a_malformed_url_is_a_configuration_error() -> None:
    with pytest.raises(PolicyError, match="invalid Redis store URL"):
        store_from_uri("redis://localhost:notaport/0")


def test_first_call_after_a_quiet_restart_is_admitted(redis_factory: Callable[[], RedisServer]) -> None:
    # No call sees the outage: the kept connections are dead when the next call comes.
    server = redis_factory()
    store = RedisStore(server.url, timeout=TIMEOUT)
    try:
        assert all(store.reserve([limit(max=100)]).ok for _ in range(3))
        server.stop()
        server.start()
        assert store.reserve([limit(max=100)]).ok
    finally:
        store.close()


async def test_first_async_call_after_a_quiet_restart_is_admitted(redis_factory: Callable[[], RedisServer]) -> None:
    server = redis_factory()
    store = RedisStore(server.url, timeout=TIMEOUT)
    try:
        assert all(v.ok for v in await asyncio.gather(*(store.areserve([limit(max=100)]) for _ in range(5))))
        server.stop()
        server.start()
        assert (await store.areserve([limit(max=100)])).ok
    finally:
        await store.aclose()


def test_more_threads_than_connections(redis_url: str, clock: FakeClock) -> None:
    store = RedisStore(redis_url, clock=clock, max_connections=2, pool_timeout=10)
    c = limit(max=30)
    results: list[bool] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        mine = [store.reserve([c]).ok for _ in range(25)]
        results.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        store.close()
    assert len(results) == 200
    assert sum(results) == 30


async def test_more_tasks_than_connections(redis_url: str, clock: FakeClock) -> None:
    store = RedisStore(redis_url, clock=clock, max_connections=2, pool_timeout=10)
    try:
        verdicts = await asyncio.gather(*(store.areserve([limit(max=30)]) for _ in range(300)))
    finally:
        await store.aclose()
    assert sum(v.ok for v in verdicts) == 30


def _forked_child(store: RedisStore, go: Any, out: Any) -> None:
    go.wait(10)
    out.put(sum(store.reserve([limit(max=1000, counter="roomy")]).ok for _ in range(300)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_share_the_parents_connections(redis_url: str) -> None:
    # Parent and child call at once with opposite answers (the child's are all admitted, the parent's all
    # refused): on a shared socket, replies would reach the wrong process and flip.
    store = RedisStore(redis_url)
    try:
        assert store.reserve([limit(max=1, counter="full")]).ok  # the parent now keeps a connection
        ctx = multiprocessing.get_context("fork")
        go, out = ctx.Event(), ctx.Queue()
        child = ctx.Process(target=_forked_child, args=(store, go, out))
        child.start()
        go.set()
        parent = sum(store.reserve([limit(max=1, counter="full")]).ok for _ in range(300))
        assert out.get(timeout=30) == 300
        child.join(30)
        assert child.exitcode == 0
        assert parent == 0
        out.close()
        out.join_thread()
    finally:
        store.close()


def test_one_store_across_event_loops(redis_url: str, clock: FakeClock) -> None:
    # asyncio.run() twice (a script, a notebook cell): the async pool follows the new loop, and the old
    # loop's sockets are closed without that loop (no ResourceWarning, which this suite turns into errors).
    store = RedisStore(redis_url, clock=clock)
    try:
        for _ in range(3):
            verdicts = asyncio.run(_burst(store, 5))
            assert all(v.ok for v in verdicts)
        assert not store.reserve([limit(max=15)]).ok  # all 15 recorded in one budget
    finally:
        store.close()
    gc.collect()


async def _burst(store: RedisStore, n: int) -> list[Any]:
    return list(await asyncio.gather(*(store.areserve([limit(max=15)]) for _ in range(n))))


def test_a_log_emptied_and_filled_again_gets_a_ttl(redis_url: str, raw: redis.Redis, clock: FakeClock) -> None:
    store = RedisStore(redis_url, clock=clock)
    c = limit()
    try:
        assert store.reserve([LimitCharge("calls", "session", "", 60.0, 3, 0, "/r")]).ok  # cost 0
        token = store.reserve([c]).token  # the first entry, after a zero-cost call made only the hash
        assert token is not None
        store.release([c], token)  # the log is empty again: Redis deletes the key
        assert store.reserve([c]).ok
    finally:
        store.close()
    assert all(raw.pttl(key) > 0 for key in raw.keys("*"))
    assert len(raw.keys("*")) == 2
