"""Decisions per second: one Redis vs a 3-master Redis Cluster, with many identities, same machine, same run.

Run: ``.venv/bin/python benchmarks/cluster.py`` (``--seconds``, ``--procs``, ``--concurrency``,
``--identities`` to change the load). Needs ``redis-server`` and ``redis-cli`` on PATH.

Starts one plain redis-server and a cluster of three masters (``tests/support/cluster_fixture.py``), then for each
backend runs ``--procs`` client processes, each an event loop with ``--concurrency`` calls in flight, each
call ``areserve`` for a random one of ``--identities`` callers (limits never full, so every call is a
complete decision that writes). Two workloads:

- ``per-identity``: one per-identity limit (one slot per call: one script call on either backend);
- ``per-identity + global``: also a global limit (on the cluster, two slots: two script calls, slot by slot).

Prints decisions per second per backend and workload, the cluster / single ratio, and the CPU the servers
and the clients used during each run (in cores), which shows what limits scaling on this machine.
Not a timed test: figures depend on the machine; the script prints them and checks nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: tests.support

from runtime import start_redis

from mcp_guard import LimitCharge
from mcp_guard._stores import store_from_uri
from tests.support.cluster_fixture import CLI, SERVER, LocalCluster

WORKLOADS = ("per-identity", "per-identity + global")


def charges(workload: str, who: str) -> list[LimitCharge]:
    own = LimitCharge("calls", "identity", who, 60.0, 1_000_000_000, 1, "/tools/t/limits/0")
    if workload == "per-identity":
        return [own]
    return [own, LimitCharge("all", "global", "", 60.0, 1_000_000_000, 1, "/all_tools/limits/0")]


def _client(url: str, workload: str, opts: dict[str, Any], seed: int, barrier: Any, out: Any) -> None:
    # One client process: its own store and connections, ``concurrency`` calls in flight on one event loop.
    store = store_from_uri(url, timeout=5.0, max_connections=opts["concurrency"], pool_timeout=30.0)
    rnd = random.Random(seed)
    names = [f"user-{i}" for i in range(opts["identities"])]

    async def main() -> tuple[int, float]:
        await store.areserve(charges(workload, "warm-up"))  # connections and scripts, before the clock starts
        await asyncio.to_thread(barrier.wait, 60)
        started = time.perf_counter()
        cpu = time.process_time()
        deadline = started + opts["seconds"]
        count = 0

        async def caller() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                verdict = await store.areserve(charges(workload, rnd.choice(names)))
                if not verdict.ok:
                    raise RuntimeError(f"refused: {verdict}")
                count += 1

        await asyncio.gather(*(caller() for _ in range(opts["concurrency"])))
        elapsed, used = time.perf_counter() - started, time.process_time() - cpu
        await store.aclose()
        return count, used / elapsed

    out.put(asyncio.run(main()))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(url: str, server_pids: list[int], workload: str, opts: dict[str, Any]) -> tuple[float, float, float]:
    """Decisions per second, server CPU (cores) and client CPU (cores) for one backend and workload."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(opts["procs"] + 1), ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(url, workload, opts, seed, barrier, out)) for seed in range(opts["procs"])
    ]
    for p in procs:
        p.start()
    barrier.wait(120)
    server_cpu = sum(_cpu_seconds(pid) for pid in server_pids)
    started = time.perf_counter()
    results = [out.get(timeout=opts["seconds"] + 120) for _ in procs]
    elapsed = time.perf_counter() - started
    server_cores = (sum(_cpu_seconds(pid) for pid in server_pids) - server_cpu) / elapsed
    for p in procs:
        p.join(30)
    total = sum(count for count, _ in results)
    return total / opts["seconds"], server_cores, sum(cores for _, cores in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run (default 3)")
    parser.add_argument("--procs", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight per process (default 16)")
    parser.add_argument("--identities", type=int, default=10_000, help="distinct callers (default 10000)")
    opts = vars(parser.parse_args())
    if SERVER is None or CLI is None:
        print("skipped: needs redis-server and redis-cli on PATH (apt-get install redis-server redis-tools)")
        return
    single = start_redis()
    if single is None:
        print("skipped: redis-server did not start")
        return
    cluster = LocalCluster(SERVER, CLI).start()
    try:
        backends = {
            "1 Redis": (f"redis://127.0.0.1:{single[1]}/0", [single[0].pid]),
            "3-master cluster": (cluster.url, [p.pid for p in cluster.procs.values()]),
        }
        print(
            f"{os.cpu_count()} CPUs; {opts['procs']} client processes x {opts['concurrency']} calls in flight, "
            f"{opts['identities']} identities, {opts['seconds']:g} s per run\n"
        )
        head = f"{'workload':<24}{'backend':<18}{'decisions/s':>12}{'server CPU':>12}{'client CPU':>12}"
        print(head + f"{'server µs/dec':>15}{'client µs/dec':>15}")
        for workload in WORKLOADS:
            rates: dict[str, float] = {}
            for name, (url, pids) in backends.items():
                rate, server_cores, client_cores = run(url, pids, workload, opts)
                rates[name] = rate
                row = f"{workload:<24}{name:<18}{rate:>12,.0f}{server_cores:>11.2f}c{client_cores:>11.2f}c"
                print(row + f"{server_cores / rate * 1e6:>15.0f}{client_cores / rate * 1e6:>15.0f}")
            print(f"{'':<24}{'cluster / single':<18}{rates['3-master cluster'] / rates['1 Redis']:>11.2f}x\n")
        print("CPU: cores busy on average during the run (c); µs/dec: CPU time per decision, servers (all nodes)")
        print("and client processes. One machine: clients and servers share its cores, so the cluster can only")
        print("win when one Redis's single thread is the bottleneck. On separate machines each master has its")
        print("own core: capacity ~ masters x 1e6 / (server µs/dec per node), given enough client machines.")
    finally:
        cluster.close()
        single[0].terminate()
        single[0].wait()


if __name__ == "__main__":
    main()
