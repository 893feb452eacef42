"""The Redis Cluster store on a real 3-master cluster: keys spread by caller, one script per slot, slot-by-slot
reservation that rolls back and never over-admits (also across processes and with a master killed mid-run).

The behaviour matrix (``tests/stores/test_behaviour.py``) runs on the cluster too, through conftest's ``store``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from subprocess import PIPE
from typing import Any

import pytest
import redis

from mcp_guard import Guard, LimitCharge, MemorySink, Policy, StoreError
from mcp_guard._errors import PolicyError
from mcp_guard._stores import store_from_uri
from mcp_guard._stores.redis_cluster import RedisClusterStore
from tests.support.clock import FakeClock
from tests.support.cluster_fixture import LocalCluster


def identity(counter: str, who: str, max: int = 5, window: float = 60.0) -> LimitCharge:
    return LimitCharge(counter, "identity", who, window, max, 1, f"/tools/t/limits/{counter}")


def everyone(counter: str, max: int = 5, window: float = 60.0) -> LimitCharge:
    return LimitCharge(counter, "global", "", window, max, 1, f"/all_tools/limits/{counter}")


def slot(tag: str) -> int:
    """The slot of a hash tag, computed as Redis does (CRC16 of what is between the braces)."""
    return int(redis.crc.key_slot(("{" + tag + "}").encode()))


GLOBAL_SLOT = slot("global:")


def caller_on(side: str) -> str:
    """An identity whose slot comes before (``"before"``) or after (``"after"``) the global limits' slot."""
    for i in range(1000):
        who = f"caller-{i}"
        if (slot(f"identity:{who}") < GLOBAL_SLOT) == (side == "before"):
            return who
    raise AssertionError("no such identity")


# -- configuration, no cluster needed ---------------------------------------------------------------


def test_the_uri_registers_with_options_and_hides_the_password() -> None:
    store = store_from_uri("redis+cluster://u:s3cret@127.0.0.1:7000,[::1]:7001,other?prefix=app&timeout=0.5")
    assert isinstance(store, RedisClusterStore)
    assert store._nodes == [("127.0.0.1", 7000), ("::1", 7001), ("other", 6379)]
    assert (store.prefix, store.timeout) == ("app", 0.5)
    assert store._options["username"] == "u"
    assert store._options["password"] == "s3cret"
    assert "ssl" not in store._options
    assert "s3cret" not in repr(store)
    assert store_from_uri("rediss+cluster://h:1", max_connections=3).max_connections == 3
    assert store_from_uri("rediss+cluster://h:1")._options["ssl"] is True


@pytest.mark.parametrize(
    "uri",
    [
        "redis+cluster://h:notaport",
        "redis+cluster://:1",
        "redis+cluster://h:1,,h:2",
        "redis+cluster://h:1?db=3",
        "redis+cluster://h:1?timeout=soon",
        "redis+cluster://h:1/2",
    ],
)
def test_a_malformed_uri_is_a_configuration_error(uri: str) -> None:
    with pytest.raises(PolicyError):
        store_from_uri(uri)


def test_an_unknown_scheme_lists_the_cluster_one() -> None:
    with pytest.raises(PolicyError, match=r"redis\+cluster://"):
        store_from_uri("cluster://h:1")


def test_keys_are_tagged_by_scope_owner_and_escaped() -> None:
    store = RedisClusterStore("redis+cluster://h:1", prefix="a{b}")
    z, h = store._budget_keys(identity("calls", "al}ice{").key)
    assert z == "a%7Bb%7D:log:calls:{identity:al%7Dice%7B}"
    assert h == "a%7Bb%7D:meta:calls:{identity:al%7Dice%7B}"
    assert store._budget_keys(everyone("x{y}").key)[0] == "a%7Bb%7D:log:x%7By%7D:{global:}"
    assert store._budget_keys(LimitCharge("c", "session", "s1", 60, 1, 1, "/r").key)[0].endswith(":{session:s1}")


def test_an_unreachable_cluster_fails_with_store_error_fast() -> None:
    with socket_nobody_listens() as port:
        store = RedisClusterStore(f"redis+cluster://127.0.0.1:{port}", timeout=0.2)
        for _ in range(2):
            started = time.perf_counter()
            with pytest.raises(StoreError, match="redis cluster store"):
                store.reserve([identity("c", "alice")])
            assert time.perf_counter() - started < 2.0

        async def twin() -> None:
            with pytest.raises(StoreError):
                await store.areserve([identity("c", "alice")])
            await store.aclose()

        asyncio.run(twin())
        store.close()


class socket_nobody_listens:
    """A loopback port that refuses connections (bound, never listening), for as long as the block runs."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        port: int = self.sock.getsockname()[1]
        return port

    def __exit__(self, *_: object) -> None:
        self.sock.close()


# -- on the session's cluster -----------------------------------------------------------------------


@pytest.fixture
def cluster(redis_cluster: LocalCluster, redis_cluster_url: str) -> LocalCluster:
    return redis_cluster


@pytest.fixture
def store(redis_cluster_url: str, clock: FakeClock) -> Iterator[RedisClusterStore]:
    made = RedisClusterStore(redis_cluster_url, clock=clock)
    yield made
    made.close()


@pytest.mark.redis
def test_callers_spread_over_every_master_and_each_keeps_one_slot(cluster: LocalCluster, store: Any) -> None:
    for i in range(60):
        assert store.reserve([identity("a", f"user-{i}"), identity("b", f"user-{i}")]).ok
    per_master = {port: cluster.command(port, "DBSIZE") for port in cluster.ports}
    assert all(n > 0 for n in per_master.values()), per_master
    assert sum(per_master.values()) == 60 * 2 * 2  # per caller: two budgets, each a ZSET and a HASH
    keys = cluster.command(cluster.port_of_slot(slot("identity:user-7")), "KEYS", "*{identity:user-7}*")
    assert len(keys) == 4


@pytest.mark.redis
def test_a_decision_on_one_slot_is_one_script_call(cluster: LocalCluster, store: Any) -> None:
    cluster.reset_stats()
    assert store.reserve([identity("a", "alice"), identity("b", "alice", window=3600)]).ok
    assert cluster.script_calls() == 1
    assert store.check([everyone("x"), everyone("y")]).ok
    assert cluster.script_calls() == 2
    assert store.reserve([identity("a", "alice"), everyone("x")]).ok  # two slots: two calls
    assert cluster.script_calls() == 4


@pytest.mark.redis
@pytest.mark.parametrize("side", ["before", "after"])
def test_a_refusal_on_the_second_slot_gives_the_first_back(store: Any, side: str) -> None:
    # side="before": the identity's slot is reserved first and the global one refuses; "after": the reverse.
    who = caller_on(side)
    mine, shared = identity("mine", who, max=5), everyone("shared", max=5)
    first, second = (mine, shared) if side == "before" else (shared, mine)
    assert sum(store.reserve([second]).ok for _ in range(5)) == 5  # fill the slot reserved second
    for _ in range(10):
        refused = store.reserve([mine, shared])
        assert not refused.ok
        assert refused.charge == second
        assert refused.token is None
    assert sum(store.reserve([first]).ok for _ in range(10)) == 5  # the first slot's 5 are all still there


@pytest.mark.redis
@pytest.mark.parametrize("side", ["before", "after"])
def test_a_refusal_across_slots_reports_the_longest_wait(store: Any, clock: FakeClock, side: str) -> None:
    who = caller_on(side)
    short, long = identity("short", who, max=1, window=10), everyone("long", max=1, window=100)
    assert store.reserve([short, long]).ok
    clock.advance(1)
    for method in (store.reserve, store.check):
        refused = method([short, long])
        assert refused.charge == long
        assert refused.retry_after_s == pytest.approx(99.0)


@pytest.mark.redis
def test_check_and_release_across_slots(store: Any) -> None:
    mine, shared = identity("mine", "bob", max=2), everyone("shared", max=3)
    for _ in range(5):
        assert store.check([mine, shared]).ok  # checks reserve nothing
    tokens = [store.reserve([mine, shared]).token for _ in range(2)]
    assert not store.check([mine, shared]).ok
    store.release([mine, shared], tokens[0])  # type: ignore[arg-type]
    store.release([mine, shared], tokens[0])  # type: ignore[arg-type]  (twice is harmless)
    assert store.reserve([mine, shared]).ok
    assert not store.reserve([mine]).ok  # 2 of 2
    assert store.reserve([shared]).ok  # 3 of 3
    assert not store.reserve([shared]).ok


@pytest.mark.redis
async def test_async_across_slots(store: Any) -> None:
    mine, shared = identity("mine", caller_on("before"), max=3), everyone("shared", max=2)
    verdicts = await asyncio.gather(*(store.areserve([mine, shared]) for _ in range(20)))
    assert sum(v.ok for v in verdicts) == 2
    token = next(v.token for v in verdicts if v.ok)
    await store.arelease([mine, shared], token)
    assert (await store.acheck([mine, shared])).ok
    assert sum([(await store.areserve([mine])).ok for _ in range(3)]) == 2  # 1 held + 2 = 3
    await store.aclose()


# -- four processes, each its own store, race for one budget ----------------------------------------

# Each process is a fresh interpreter that imports only the store (spawning the test module would import
# pytest and the whole test session 4 times over). Per scenario it says "ready", waits for "go" (so the four
# race), makes its calls (async, then sync) and prints how many each call shape admitted.
_RACER = """
import asyncio, json, sys
from mcp_guard import LimitCharge
from mcp_guard._stores.redis_cluster import RedisClusterStore

url, scenarios = sys.argv[1], json.loads(sys.argv[2])
store = RedisClusterStore(url, timeout=5.0, pool_timeout=30.0)

async def main():
    results = {}
    for name, shapes in scenarios.items():
        calls = [[LimitCharge(*args) for args in shape] for shape in shapes]
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        picks = [i % len(calls) for i in range(ASYNC + SYNC)]
        verdicts = list(await asyncio.gather(*(store.areserve(calls[i]) for i in picks[:ASYNC])))
        verdicts += [store.reserve(calls[i]) for i in picks[ASYNC:]]
        results[name] = [sum(v.ok for v, i in zip(verdicts, picks) if i == n) for n in range(len(calls))]
    await store.aclose()
    print(json.dumps(results), flush=True)

asyncio.run(main())
""".replace("ASYNC", "30").replace("SYNC", "10")  # 160 calls per scenario race for budgets of 12 to 25


def _scenarios(run: str) -> dict[str, list[list[LimitCharge]]]:
    """Per scenario, the call shapes the processes cycle through. Expected totals in ``EXPECTED``."""
    few = ["ann", "ben", "cy"]
    return {
        "identity": [[identity(f"i-{run}", "alice", max=25)]],
        "global": [[everyone(f"g-{run}", max=25)]],
        # per-identity (max 10, three callers) and global (max 20) on every call: the global one binds
        "mixed": [[identity(f"mi-{run}", who, max=10), everyone(f"mg-{run}", max=20)] for who in few],
        # the same with a roomy global limit: the caller's own limit binds
        "mixed-own": [[identity(f"oi-{run}", "dora", max=12), everyone(f"og-{run}", max=1000)]],
    }


EXPECTED = {"identity": 25, "global": 25, "mixed": 20, "mixed-own": 12}


@pytest.mark.redis
def test_four_processes_admit_exactly_max(cluster: LocalCluster) -> None:
    scenarios = _scenarios(uuid.uuid4().hex[:8])
    for name in ("mixed", "mixed-own"):  # the mixed calls really span two slots
        for shape in scenarios[name]:
            assert len({slot(c.key.split(":", 1)[1]) for c in shape}) == 2
    fields = ("counter", "scope", "scope_id", "window_s", "max", "cost", "rule")
    spec = json.dumps(
        {name: [[[getattr(c, f) for f in fields] for c in cs] for cs in shapes] for name, shapes in scenarios.items()}
    )
    command = [sys.executable, "-c", _RACER, cluster.url, spec]
    procs = [subprocess.Popen(command, stdin=PIPE, stdout=PIPE, stderr=PIPE, text=True) for _ in range(4)]
    try:
        for _ in scenarios:  # a barrier per scenario: every process ready, then all go at once
            for p in procs:
                assert p.stdout is not None
                line = p.stdout.readline()
                assert line == "ready\n", line + (p.stderr.read() if p.stderr else "")
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
        results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [p.returncode for p in procs] == [0] * 4
    totals = {name: sum(sum(r[name]) for r in results) for name in EXPECTED}
    assert totals == EXPECTED
    per_caller = [sum(r["mixed"][i] for r in results) for i in range(3)]
    assert all(n <= 10 for n in per_caller), per_caller


# -- a master killed while calls run ----------------------------------------------------------------

KILL_POLICY = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "tools": {
            "git_log": {
                "limits": [
                    {"counter": "per_caller", "window": "minute", "max": 3, "scope": "identity"},
                    {"counter": "all", "window": "minute", "max": 50, "scope": "global"},
                ]
            }
        },
    }
)


class Tool:
    """The judge: counts the calls that really ran, per caller."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, who: str) -> str:
        with self.lock:
            self.calls[who] += 1
        return "log"


@pytest.mark.redis
def test_a_master_killed_mid_run_never_over_admits(cluster_factory: Callable[..., LocalCluster]) -> None:
    cluster = cluster_factory(node_timeout_ms=1500)
    victim = next(p for p in cluster.ports if p != cluster.port_of_slot(GLOBAL_SLOT))  # the global slot lives
    callers = [f"user-{i}" for i in range(24)]
    on_victim = {who for who in callers if cluster.port_of_slot(slot(f"identity:{who}")) == victim}
    assert 0 < len(on_victim) < len(callers)
    sink, tool = MemorySink(), Tool()
    guard = Guard(KILL_POLICY, store=f"{cluster.url}?timeout=0.5", fail_mode="closed", audit=sink)
    outcomes: list[tuple[bool, str, str]] = []  # (after the kill, caller, outcome)
    lock, killed, stop = threading.Lock(), threading.Event(), threading.Event()

    def caller(n: int) -> None:
        i = n
        while not stop.is_set():
            who = callers[i % len(callers)]
            i += 4
            after = killed.is_set()
            result = guard.invoke("git_log", {"who": who}, tool, identity=who)
            outcome = "admitted" if result == "log" else result["code"]
            with lock:
                outcomes.append((after, who, outcome))

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 20
        while sum(tool.calls.values()) < 12 and time.monotonic() < deadline:
            time.sleep(0.005)
        cluster.kill(victim)
        killed.set()
        time.sleep(0.8)  # calls go on against two live masters and a dead one
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    kinds = Counter(outcome for _, _, outcome in outcomes)
    assert set(kinds) <= {"admitted", "rate_limited", "guard_unavailable"}, kinds
    after = Counter((who in on_victim, outcome) for late, who, outcome in outcomes if late)
    assert after[(True, "guard_unavailable")] > 0  # the dead master's callers: refused, closed
    assert after[(False, "admitted")] + after[(False, "rate_limited")] > 0  # the others: decided
    # The judge is the tool: what ran never exceeds any limit, and is exactly what the guard admitted.
    admitted = sum(tool.calls.values())
    assert admitted == kinds["admitted"]
    assert admitted <= 50
    assert max(tool.calls.values()) <= 3
    # The global budget, read back through a fresh store while its master lives: nothing over, and the
    # calls refused on the dead master gave their global reservation back (at most the few whose reply was
    # lost in flight stay held).
    probe = RedisClusterStore(cluster.url, timeout=2.0)
    free = sum(probe.reserve([everyone("all", max=50)]).ok for _ in range(51))
    probe.close()
    assert admitted + free <= 50
    assert admitted + free >= 50 - 4
    # Then the cluster notices the dead master and refuses everything (CLUSTERDOWN): closed, and fast.
    survivor = next(p for p in cluster.ports if p != victim)
    cluster.wait_state(survivor, "fail", within=20)
    before = sum(tool.calls.values())
    for who in ("user-0", "user-1"):
        started = time.perf_counter()
        result = guard.invoke("git_log", {"who": who}, tool, identity=who)
        assert time.perf_counter() - started < 3.0
        assert result["code"] == "guard_unavailable"
    assert sum(tool.calls.values()) == before
    assert any(e.get("code") == "guard_unavailable" for e in sink.events)
    guard.close()
