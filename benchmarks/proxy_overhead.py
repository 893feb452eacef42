"""Per-call time through ``mcp-guard proxy`` vs straight to the upstream, over stdio and streamable HTTP.

Real processes on one machine: the recording test server (``tests/support/servers/proxy_upstream_server.py``, not
recording: no RECORD_FILE), the proxy started by its CLI, and an ``mcp`` SDK ``ClientSession`` that keeps
one session open and calls ``echo`` many times. The policy makes the guard do real work on every call (a
rate limit reserved in the memory store, one audit event written to a JSONL file).

    python benchmarks/proxy_overhead.py [--calls 400] [--quick] [--json]

Prints the median per call for each path, what the proxy adds, and that as a share of the direct round
trip. Over stdio the default is the JSON-RPC relay (each message parsed once and re-serialised, only tool
calls decided): what it adds is a second pipe, that parse and the guard's work. ``--no-relay`` (the same relay,
reading the client through the SDK's stdio server: pydantic models, then the relay's parse) is the second stdio
row; over HTTP the relay sits between the SDK's streamable-HTTP server and client. The guard's own part is what
``benchmarks/guard_overhead.py`` measures.

``--json`` prints the per-call medians (µs) as one JSON line and the table to stderr, so ``benchmarks/paired.py
proxy_overhead`` can pair two versions of ``src``: the proxy processes are started with this interpreter and
inherit its ``PYTHONPATH``, so they run that side's ``src``.
"""

from __future__ import annotations

import argparse
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
        f"{label:<18} direct {direct:7.3f} ms   through proxy {proxied:7.3f} ms   "
        f"added {added:6.3f} ms   ratio {proxied / direct:4.2f}x   added = {added / direct:6.1%} of a direct call",
        file=OUT,
    )


OUT = sys.stdout
FIGURES: dict[str, float] = {}  # name -> median per call, µs (for --json)


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.json"
        policy.write_text(json.dumps(POLICY))
        audit = str(Path(tmp) / "audit.jsonl")
        print(
            f"median of {calls} calls of echo per path, one persistent session each, in 10 interleaved rounds", file=OUT
        )

        relay = proxy_command(policy, "--audit", audit, upstream=upstream_command())
        sdk = proxy_command(policy, "--audit", audit, "--no-relay", upstream=upstream_command())
        async with (
            stdio_session(upstream_command()) as direct_session,
            stdio_session(relay) as relay_session,
            stdio_session(sdk) as sdk_session,
        ):
            direct, relayed, through_sdk = await per_call_ms([direct_session, relay_session, sdk_session], calls)
        report("stdio", direct, relayed)
        report("stdio, --no-relay", direct, through_sdk)
        FIGURES.update({"stdio: direct": direct, "stdio: relay": relayed, "stdio: --no-relay": through_sdk})

        up_port, proxy_port = free_port(), free_port()
        with http_processes(([*upstream_command(), "--http", str(up_port)], up_port, None)) as (upstream,):
            argv = proxy_command(
                policy, "--audit", audit, "--upstream", upstream, "--listen", f"127.0.0.1:{proxy_port}"
            )
            with http_processes((argv, proxy_port, None)) as (proxy_url,):
                async with http_session(upstream) as direct_session, http_session(proxy_url) as proxy_session:
                    direct, proxied = await per_call_ms([direct_session, proxy_session], calls)
        report("http", direct, proxied)
        FIGURES.update({"http: direct": direct, "http: proxy": proxied})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=None, help="calls per path (default 400; --quick 100)")
    parser.add_argument("--quick", action="store_true", help="100 calls per path")
    parser.add_argument("--smoke", action="store_true", help="10 calls per path (tests only: the figures mean nothing)")
    parser.add_argument("--json", action="store_true", help="the medians (µs) as one JSON line; the table to stderr")
    options: Any = parser.parse_args()
    if options.json:
        OUT = sys.stderr
    calls = options.calls or (10 if options.smoke else 100 if options.quick else 400)
    anyio.run(main, calls)
    if options.json:
        print(json.dumps({name: round(ms * 1000.0, 3) for name, ms in FIGURES.items()}))
