"""Per-call time through ``mcp-guard proxy`` vs straight to the upstream, over stdio and streamable HTTP.

Real processes on one machine: the recording test server (``tests/support/servers/proxy_upstream_server.py``, not
recording: no RECORD_FILE), the proxy started by its CLI, and an ``mcp`` SDK ``ClientSession`` that keeps
one session open and calls ``echo`` many times. The policy makes the guard do real work on every call (a
rate limit reserved in the memory store, one audit event written to a JSONL file).

    python benchmarks/proxy_overhead.py [--calls 400] [--quick] [--json] [--peers]

Prints the median per call for each path, what the proxy adds, and that as a share of the direct round
trip. Over stdio the default is the JSON-RPC relay (each message parsed once and re-serialised, only tool
calls decided): what it adds is a second pipe, that parse and the guard's work. ``--no-relay`` (the same relay,
reading the client through the SDK's stdio server: pydantic models, then the relay's parse) is the second stdio
row; over HTTP the relay sits between the SDK's streamable-HTTP server and client. The guard's own part is what
``benchmarks/guard_overhead.py`` measures.

``--peers`` (``make bench-proxy``) adds pass-through peers to the same interleaved rounds, each installed on
first use under ``.bench-venvs/`` (:mod:`_peers`): PyPI and npm ``mcp-proxy`` as HTTP fronts over the same stdio
upstream (beside ours, ``--listen`` with ``-- CMD``), and ``bonanza-mcp-guard`` on stdio (skipped with a line
when it cannot hold a stock client's session: 0.1.4 cannot). Each path's ratio to the direct stdio call is
printed, and ours / the peer on the same path.

``--json`` prints the per-call medians (µs) as one JSON line and the table to stderr, so ``benchmarks/paired.py
proxy_overhead`` can pair two versions of ``src``: the proxy processes are started with this interpreter and
inherit its ``PYTHONPATH``, so they run that side's ``src``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository root: tests.support

import _peers  # noqa: E402

from tests.support.servers.proxy_support import free_port, http_processes, proxy_command  # noqa: E402
from tests.support.servers.proxy_upstream_server import command as upstream_command  # noqa: E402

POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {"echo": {"limits": [{"counter": "echo", "window": "minute", "max": 1_000_000}]}},
}


@asynccontextmanager
async def stdio_session(argv: Sequence[str]) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=argv[0], args=list(argv[1:]), env=dict(os.environ))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def http_session(url: str) -> AsyncIterator[ClientSession]:
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(30, read=120)) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def timed_calls(session: ClientSession, calls: int, start_at: int = 0) -> list[float]:
    times: list[float] = []
    for i in range(start_at, start_at + calls):
        start = time.perf_counter()
        result = await session.call_tool("echo", {"text": f"call {i}"})
        times.append((time.perf_counter() - start) * 1000.0)
        if result.isError:
            raise RuntimeError(f"call {i} failed: {result.content}")
    return times


async def per_call_ms(sessions: Sequence[ClientSession], calls: int, rounds: int = 10) -> list[float]:
    """Median per call on each session, measured in interleaved rounds (the machine's load drifts: each path
    sees the same share of it)."""
    for session in sessions:
        await timed_calls(session, min(50, calls))  # warm-up: imports, caches, the first tools/list of the proxy
    times: list[list[float]] = [[] for _ in sessions]
    per_round = max(1, calls // rounds)
    for r in range(rounds):
        for session, bucket in zip(sessions, times, strict=True):
            bucket.extend(await timed_calls(session, per_round, r * per_round))
    return [statistics.median(bucket) for bucket in times]


def report(label: str, direct: float, proxied: float) -> None:
    added = proxied - direct
    print(
        f"{label:<34} direct {direct:7.3f} ms   through proxy {proxied:7.3f} ms   "
        f"added {added:6.3f} ms   ratio {proxied / direct:4.2f}x   added = {added / direct:6.1%} of a direct call",
        file=OUT,
    )


OUT = sys.stdout
FIGURES: dict[str, float] = {}  # name -> median per call, µs (for --json)


PEER_START_S = 20


async def _peer_starts(argv: Sequence[str]) -> bool:
    """Whether a stdio peer holds a stock client's session (one call) within PEER_START_S. bonanza-mcp-guard
    0.1.4 does not: it reads one upstream line after each client line, so ``notifications/initialized``, which
    has no answer, stalls it."""
    try:
        with anyio.move_on_after(PEER_START_S):
            async with stdio_session(argv) as session:
                await timed_calls(session, 1)
                return True
    except Exception:  # it ended, or answered something else
        return False
    return False


def report_peer(label: str, direct: float, peer: float, ours: float, ours_label: str) -> None:
    print(
        f"{label:<34} direct {direct:7.3f} ms   through it {peer:7.3f} ms   ratio {peer / direct:4.2f}x   "
        f"{ours_label} / it = {ours / peer:4.2f}x",
        file=OUT,
    )


async def main(calls: int, with_peers: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as processes:
        policy = Path(tmp) / "policy.json"
        policy.write_text(json.dumps(POLICY))
        audit = str(Path(tmp) / "audit.jsonl")
        found, skipped = _peers.peers(upstream_command(), Path(tmp)) if with_peers else ([], [])
        for line in skipped:
            print(line, file=OUT)
        print(
            f"median of {calls} calls of echo per path, one persistent session each, in 10 interleaved rounds", file=OUT
        )
        # Every path is measured in the same interleaved rounds: the machine's load drifts, each path sees it.
        stdio: dict[str, list[str]] = {
            "stdio: direct": upstream_command(),
            "stdio: relay": proxy_command(policy, "--audit", audit, upstream=upstream_command()),
            "stdio: --no-relay": proxy_command(policy, "--audit", audit, "--no-relay", upstream=upstream_command()),
        }
        stdio.update({f"stdio: {p.name}": p.command() for p in found if p.transport == "stdio"})
        peer_names = {p.name for p in found}
        up_port = free_port()
        direct_http = [*upstream_command(), "--http", str(up_port)]
        http: list[tuple[str, list[str], int]] = [("http: direct", direct_http, up_port)]
        upstream_url = f"http://127.0.0.1:{up_port}/mcp"
        port = free_port()
        argv = proxy_command(policy, "--audit", audit, "--upstream", upstream_url, "--listen", f"127.0.0.1:{port}")
        http.append(("http: proxy", argv, port))
        if with_peers:
            port = free_port()
            argv = proxy_command(policy, "--audit", audit, "--listen", f"127.0.0.1:{port}", upstream=upstream_command())
            http.append(("http->stdio: ours", argv, port))
            for peer in found:
                if peer.transport == "http":
                    port = free_port()
                    http.append((f"http->stdio: {peer.name}", peer.command(port), port))
        (upstream_url_ready,) = processes.enter_context(http_processes((http[0][1], http[0][2], None)))
        urls = [upstream_url_ready, *processes.enter_context(http_processes(*((a, p, None) for _, a, p in http[1:])))]
        async with contextlib.AsyncExitStack() as sessions:
            opened = []
            for name, argv in list(stdio.items()):
                if name[7:] not in peer_names:
                    opened.append(await sessions.enter_async_context(stdio_session(argv)))
                    continue
                if await _peer_starts(argv):
                    opened.append(await sessions.enter_async_context(stdio_session(argv)))
                else:  # a peer that cannot hold a stock client's session: said, and left out
                    why = f"it did not hold a stock client's session (one call within {PEER_START_S} s)"
                    print(f"skipped {name[7:]}: {why}", file=OUT)
                    del stdio[name]
            opened += [await sessions.enter_async_context(http_session(url)) for url in urls]
            medians = await per_call_ms(opened, calls)
        names = [*stdio, *(name for name, _, _ in http)]
        FIGURES.update(dict(zip(names, medians, strict=True)))

    direct = FIGURES["stdio: direct"]
    report("stdio", direct, FIGURES["stdio: relay"])
    report("stdio, --no-relay", direct, FIGURES["stdio: --no-relay"])
    report("http", FIGURES["http: direct"], FIGURES["http: proxy"])
    if with_peers:
        print("peers (pass-through proxies, same client and upstream, same rounds):", file=OUT)
        report("http -> stdio, ours", direct, FIGURES["http->stdio: ours"])
        for name, value in FIGURES.items():
            if name.startswith("stdio: ") and name[7:] in {p.name for p in found}:
                report_peer(f"stdio, {name[7:]}", direct, value, FIGURES["stdio: relay"], "our relay")
            elif name.startswith("http->stdio: ") and name != "http->stdio: ours":
                report_peer(f"http -> stdio, {name[13:]}", direct, value, FIGURES["http->stdio: ours"], "ours")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=None, help="calls per path (default 400; --quick 100)")
    parser.add_argument("--quick", action="store_true", help="100 calls per path")
    parser.add_argument("--smoke", action="store_true", help="10 calls per path (tests only: the figures mean nothing)")
    parser.add_argument("--json", action="store_true", help="the medians (µs) as one JSON line; the table to stderr")
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also measure pass-through peers (PyPI and npm mcp-proxy, bonanza-mcp-guard), each installed on first use "
        "under .bench-venvs/",
    )
    options: Any = parser.parse_args()
    if options.json:
        OUT = sys.stderr
    calls = options.calls or (10 if options.smoke else 100 if options.quick else 400)
    anyio.run(main, calls, options.peers)
    if options.json:
        print(json.dumps({name: round(ms * 1000.0, 3) for name, ms in FIGURES.items()}))
