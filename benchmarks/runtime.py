"""Per-call cost of the guard's runtime: decision plus reservation on ``memory://`` and ``redis://``.

Run: ``.venv/bin/python benchmarks/runtime.py`` (``--quick`` for fewer samples, ``--json`` for the medians as
JSON, name -> µs).

Starts its own redis-server on a free port (the Redis rows are skipped, with a message, when there is no
``redis-server``), then prints median and p99 µs per call for:

- ``Policy.evaluate`` + ``MemoryStore.reserve`` and the same with ``RedisStore.reserve``;
- one raw Redis round trip (``PING`` on a plain ``redis.Redis`` client), measured in the same run,
  interleaved with the guarded calls so both see the same machine load; and ``PING`` through the store's
  own lean connection path, the floor of anything the store sends;
- the ratio guarded Redis decision / raw round trip (target <= 1.5x: one round trip per decision), and
  the same against the store-path ``PING``;
- ``RedisStore.areserve`` on an event loop (one call at a time);
- ``Guard.admit`` + ``Guard.finish`` (the whole pipeline without the tool) on memory and on Redis;
- the store's own connection path against redis-py's own clients: the same decision (evaluate + reserve,
  the same scripts and flows) with each round trip made by ``RedisStore``'s kept connections and packer, or by
  ``redis.Redis.execute_command`` / ``redis.asyncio.Redis.execute_command``; sync and async, interleaved in
  alternating order, with the median of the paired differences. Issue 11 keeps the store's own path only
  while it saves more than 10 µs per decision.

Not a timed test: figures depend on the machine; the script prints them and checks nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

from _report import add_flags, figures, size

from mcp_guard import Guard, Policy, store_from_uri

POLICY = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "tools": {
            "git_log": {"limits": [{"counter": "git", "window": "minute", "max": 1_000_000_000, "scope": "grant"}]},
        },
    }
)
ARGS = {"max_count": 5}


def measure(call: Callable[[], object], samples: int, per_sample: int = 1) -> list[float]:
    """µs per call for each sample of ``per_sample`` calls (batches hide the timer's cost for fast calls)."""
    for _ in range(min(samples, 200)):
        call()
    out: list[float] = []
    gc.disable()
    try:
        for _ in range(samples):
            start = time.perf_counter_ns()
            for _ in range(per_sample):
                call()
            out.append((time.perf_counter_ns() - start) / per_sample / 1000.0)
    finally:
        gc.enable()
    return out


def stats(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def start_redis() -> tuple[subprocess.Popen[bytes], int] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    return proc, port
        except OSError:
            time.sleep(0.02)
    proc.terminate()
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    add_flags(parser, quick=False)
    opts = parser.parse_args()
    with figures(opts.json) as out:
        run(size(opts, (1500, 6000), (300, 1500), (20, 40)), out)


def run(sizes: tuple[int, int], out: dict[str, float]) -> None:
    n_fast, n_slow = sizes
    rows: list[tuple[str, float, float]] = []

    def evaluate() -> object:
        return POLICY.evaluate("git_log", ARGS, server="git", identity="alice")

    rows.append(("Policy.evaluate alone", *stats(measure(evaluate, n_fast, 100))))

    memory = store_from_uri("memory://")  # public in every version, wherever the class lives

    def memory_decision() -> object:
        verdict = memory.reserve(evaluate().limits)
        assert verdict.ok
        return verdict

    rows.append(("evaluate + memory reserve", *stats(measure(memory_decision, n_fast, 100))))
    memory_guard = Guard(POLICY, store=memory)

    def memory_admit() -> None:
        memory_guard.finish(memory_guard.admit("git_log", ARGS, server="git", identity="alice"))

    rows.append(("Guard.admit + finish, memory", *stats(measure(memory_admit, n_fast, 20))))

    ratio: float | None = None
    redis_note = ""
    started = start_redis()
    if started is None:
        redis_note = "Redis rows skipped: no redis-server on PATH (apt-get install redis-server)."
    else:
        proc, port = started
        try:
            ratio = redis_rows(rows, f"redis://127.0.0.1:{port}/0", n_slow, evaluate)
        finally:
            proc.terminate()
            proc.wait()

    out.update({name: median for name, median, _ in rows})
    width = max(len(r[0]) for r in rows)
    print(f"{'per call':<{width}}  {'median µs':>10}  {'p99 µs':>10}")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 10}")
    for name, median, p99 in rows:
        print(f"{name:<{width}}  {median:>10.2f}  {p99:>10.2f}")
    if ratio is not None:
        verdict = "meets" if ratio <= 1.5 else "misses"
        print(f"\nguarded Redis decision / raw Redis round trip: {ratio:.2f}x ({verdict} the 1.5x target)")
    if redis_note:
        print("\n" + redis_note)


def redis_rows(rows: list[tuple[str, float, float]], url: str, samples: int, evaluate: Callable[[], object]) -> float:
    import redis

    store = store_from_uri(url, prefix="bench")
    raw = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)

    def redis_decision() -> object:
        verdict = store.reserve(evaluate().limits)  # type: ignore[attr-defined]
        assert verdict.ok
        return verdict

    guard = Guard(POLICY, store=store)

    def redis_admit() -> None:
        guard.finish(guard.admit("git_log", ARGS, server="git", identity="alice"))

    try:  # private: the store's hand-rolled connection layer, measured only on sources that have it
        from mcp_guard._stores.redis import _pack
    except ImportError:
        _pack = None
    has_lean = _pack is not None and hasattr(store, "_lane")

    def lean_ping() -> object:
        # PING through the store's own connection path (kept connection, hand-packed command): the floor
        # of any call the store makes, so the second ratio shows what the script and our Python add.
        lane = store._lane()
        conn = lane.pop() or lane.pool.get_connection()
        conn.send_packed_command(_pack("PING"), False)
        reply = conn.read_response()
        lane.idle.append(conn)
        return reply

    loop = asyncio.new_event_loop()

    def redis_async_decision() -> object:
        verdict = loop.run_until_complete(store.areserve(evaluate().limits))  # type: ignore[attr-defined]
        assert verdict.ok
        return verdict

    # Interleave: each round measures a slice of each, so load changes hit all of them alike.
    ping: list[float] = []
    lean: list[float] = []
    guarded: list[float] = []
    guarded_async: list[float] = []
    admit: list[float] = []
    rounds = 10
    for _ in range(rounds):
        ping += measure(raw.ping, samples // rounds)
        if has_lean:
            lean += measure(lean_ping, samples // rounds)
        guarded += measure(redis_decision, samples // rounds)
        guarded_async += measure(redis_async_decision, samples // rounds)
        admit += measure(redis_admit, samples // rounds)
    rows.append(("raw Redis round trip (redis-py PING)", *stats(ping)))
    if has_lean:
        rows.append(("PING on the store's connection path", *stats(lean)))
    rows.append(("evaluate + Redis reserve", *stats(guarded)))
    rows.append(("evaluate + Redis areserve (one loop step)", *stats(guarded_async)))
    rows.append(("Guard.admit + finish, Redis", *stats(admit)))
    loop.run_until_complete(store.aclose())
    loop.close()
    raw.close()
    store.close()
    if has_lean:
        lean_ratio = statistics.median(guarded) / statistics.median(lean)
        print(f"(guarded Redis decision / PING on the store's own connection path: {lean_ratio:.2f}x)")
        compare_connection_paths(url, samples, evaluate)
    return statistics.median(guarded) / statistics.median(ping)


def compare_connection_paths(url: str, samples: int, evaluate: Callable[[], object]) -> None:
    """The same decision through the store's own connection path and through redis-py's own clients."""
    from mcp_guard._stores.redis import RedisStore

    own = RedisStore(url, prefix="bench-own")
    clients = redispy_store(url, prefix="bench-redispy")
    loop = asyncio.new_event_loop()

    def sync_batch(store: RedisStore, n: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(n):
            if not store.reserve(evaluate().limits).ok:  # type: ignore[attr-defined]
                raise SystemExit("the benchmark's budget ran out")
        return (time.perf_counter_ns() - start) / n / 1000.0

    async def async_batch(store: RedisStore, n: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(n):
            if not (await store.areserve(evaluate().limits)).ok:  # type: ignore[attr-defined]
                raise SystemExit("the benchmark's budget ran out")
        return (time.perf_counter_ns() - start) / n / 1000.0

    runs: dict[str, list[float]] = {"sync own": [], "sync redis-py": [], "async own": [], "async redis-py": []}
    cases: list[tuple[str, Callable[[int], float]]] = [
        ("sync own", lambda n: sync_batch(own, n)),
        ("sync redis-py", lambda n: sync_batch(clients, n)),
        ("async own", lambda n: loop.run_until_complete(async_batch(own, n))),
        ("async redis-py", lambda n: loop.run_until_complete(async_batch(clients, n))),
    ]
    per_batch = 20
    for _name, case in cases:
        case(200)  # connect, load the scripts, warm up
    gc.disable()
    try:
        for i in range(max(samples // per_batch, 20)):
            for name, case in cases if i % 2 == 0 else cases[::-1]:  # alternate the order: no side goes first
                runs[name].append(case(per_batch))
    finally:
        gc.enable()
    loop.run_until_complete(own.aclose())
    loop.run_until_complete(clients.aclose())
    loop.close()

    print("\nconnection path, per decision (evaluate + reserve; median µs of batches of 20, interleaved)")
    for mode in ("sync", "async"):
        mine, theirs = runs[f"{mode} own"], runs[f"{mode} redis-py"]
        gap = statistics.median(b - a for a, b in zip(mine, theirs, strict=True))
        keep = "keep the store's own path" if gap > 10 else "use redis-py's clients"
        print(
            f"  {mode:<5}  store's own path {statistics.median(mine):8.2f}   redis-py client "
            f"{statistics.median(theirs):8.2f}   paired gap {gap:+8.2f}  ({keep}: the bar is 10 µs)"
        )


class _Clients:
    """A redis-py client over one of the store's pools, dressed as a lane (``loop``, ``close``, ``aclose``)."""

    def __init__(self, client: Any, lane: Any) -> None:
        self.client, self.lane, self.loop = client, lane, lane.loop

    def close(self) -> None:
        self.lane.close()

    async def aclose(self) -> None:
        await self.lane.aclose()

    def abandon(self) -> None:
        self.lane.abandon()


def _redispy_store_class() -> type[Any]:
    import redis
    import redis.asyncio

    from mcp_guard._stores._script import Flow, Step
    from mcp_guard._stores.redis import RedisStore

    class Store(RedisStore):
        """RedisStore's scripts and flows, with each round trip made by redis-py's own client (what a switch to
        ``redis.Redis`` / ``redis.asyncio.Redis`` would run): a pool checkout per call, redis-py's packer, its
        retry wrapper (no retries) and its metrics hooks."""

        def _lane(self) -> Any:
            if not isinstance(self._sync, _Clients):
                lane = super()._lane()
                self._sync = _Clients(redis.Redis(connection_pool=lane.pool), lane)
            return self._sync

        def _new_alane(self, loop: asyncio.AbstractEventLoop) -> Any:
            lane = super()._new_alane(loop)
            return _Clients(redis.asyncio.Redis(connection_pool=lane.pool), lane)

        def _call(self, lane: Any, step: Step) -> Flow[Any]:
            script, sha, keys, argv = step
            errors = redis.exceptions
            try:
                try:
                    return (yield lane.client.execute_command, "EVALSHA", sha, len(keys), *keys, *argv)
                except errors.NoScriptError:
                    return (yield lane.client.execute_command, "EVAL", script, len(keys), *keys, *argv)
            except (errors.RedisError, OSError) as exc:
                raise self._fail(exc) from exc

    return Store


def redispy_store(url: str, **options: Any) -> Any:
    return _redispy_store_class()(url, **options)


if __name__ == "__main__":
    main()
