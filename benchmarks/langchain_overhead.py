"""What ``wrap_tools`` costs per call: guarded vs unguarded ``ainvoke``, measured in the same run.

Two tools, each called in the tool_call dict form (so a ``ToolMessage`` comes back, as inside an agent):

* a plain async ``StructuredTool`` (the worst case: the tool itself does nothing, so all the time is LangChain's
  and ours);
* an MCP tool from ``langchain-mcp-adapters`` on a persistent stdio session to the test counter server.

Guarded and unguarded calls alternate in small batches so that drift (CPU frequency, GC, the server process)
hits both alike; we report the median µs per call and the ratio of medians. Policies: one allow rule with an
argument condition, with and without a rate limit (``memory://``). Not a timed test: run it by hand::

    python benchmarks/langchain_overhead.py [--calls 3000] [--mcp-calls 400] [--quick] [--json]

``--quick`` takes 300 / 60 calls; ``--json`` also prints the medians as one JSON object, name -> µs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _report import add_flags, figures, size
from langchain_core.tools import BaseTool, StructuredTool
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools

from mcp_guard import Guard
from mcp_guard.integrations.langchain import wrap_tools

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: tests.support
from tests.support.servers.counter_server import server_params

ALLOW = {
    "version": "1",
    "default": "deny",
    "tools": {
        "add": {"deny_if": {"args.a": {"lt": -1_000_000}}},
        "get_balance": {"require": {"args.asset": {"exists": True}}},
    },
}
LIMITED = {
    "version": "1",
    "default": "deny",
    "tools": {
        "add": {"deny_if": {"args.a": {"lt": -1_000_000}}, "rate_limit": "1000000000/hour"},
        "get_balance": {"rate_limit": "1000000000/hour"},
    },
}


async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def timed(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter_ns()
        await fn()
        out.append((time.perf_counter_ns() - start) / 1000.0)
    return out


async def compare(
    name: str, plain: BaseTool, guarded: BaseTool, args: dict[str, Any], calls: int, out: dict[str, float]
) -> None:
    call = {"type": "tool_call", "name": plain.name, "args": args, "id": "bench"}

    async def run_plain() -> Any:
        return await plain.ainvoke(call)

    async def run_guarded() -> Any:
        return await guarded.ainvoke(call)

    check = await run_guarded()
    if getattr(check, "status", None) != "success":
        raise SystemExit(f"{name}: the guarded call was refused: {check}")
    await timed(run_plain, min(200, calls))  # warm-up: imports, caches
    await timed(run_guarded, min(200, calls))
    base: list[float] = []
    mine: list[float] = []
    paired: list[float] = []
    batch = 25
    for i in range(max(1, calls // batch)):
        # Alternate which variant goes first, and pair each batch with its neighbour: drift on a shared
        # machine (other processes, CPU frequency) then hits both alike.
        if i % 2:
            g, b = await timed(run_guarded, batch), await timed(run_plain, batch)
        else:
            b, g = await timed(run_plain, batch), await timed(run_guarded, batch)
        base += b
        mine += g
        paired.append(statistics.median(g) / statistics.median(b))
    mb, mg = statistics.median(base), statistics.median(mine)
    print(
        f"{name:<50} unguarded {mb:8.1f} µs  guarded {mg:8.1f} µs  ratio {mg / mb:5.3f}x  "
        f"paired-batch ratio {statistics.median(paired):5.3f}x  (+{mg - mb:.1f} µs)"
    )
    out[f"{name}: unguarded"] = mb
    out[f"{name}: guarded"] = mg


async def guard_only(policy: dict[str, Any], tool: str, args: dict[str, Any], n: int) -> float:
    """The guard's own cost per call (best of 5 runs), around a coroutine that does nothing."""
    guard = Guard(policy, retry=False)

    async def noop(**_: Any) -> None:
        return None

    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            await guard.arun(tool, args, noop)
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


async def main(options: argparse.Namespace) -> None:
    with figures(options.json) as out:
        await measure(options, out)


async def measure(options: argparse.Namespace, out: dict[str, float]) -> None:
    guard_n = size(options, 20000, 2000, 20)
    print(f"median µs per ainvoke (tool_call form -> ToolMessage); python {sys.version.split()[0]}")
    for label, policy in (("allow rule", ALLOW), ("allow rule + rate limit", LIMITED)):
        cost = await guard_only(policy, "add", {"a": 1, "b": 2}, guard_n)
        print(f"{'Guard.arun alone, ' + label:<50} {cost:8.1f} µs per call (best of 5)")
        out[f"Guard.arun alone, {label}"] = cost
    tool = StructuredTool.from_function(coroutine=add)
    for label, policy in (("allow rule", ALLOW), ("allow rule + rate limit", LIMITED)):
        (guarded,) = wrap_tools([tool], Guard(policy, retry=False))
        await compare(f"plain StructuredTool, {label}", tool, guarded, {"a": 1, "b": 2}, options.calls, out)

    with tempfile.TemporaryDirectory() as tmp:
        client = MultiServerMCPClient({"exchange": server_params(Path(tmp) / "calls.txt")})  # type: ignore[dict-item]
        async with client.session("exchange") as session:
            tools = {t.name: t for t in await load_mcp_tools(session, server_name="exchange")}
            mcp_tool = tools["get_balance"]
            for label, policy in (("allow rule", ALLOW), ("allow rule + rate limit", LIMITED)):
                (guarded,) = wrap_tools([mcp_tool], Guard(policy, retry=False), server="exchange")
                await compare(
                    f"MCP tool (stdio session), {label}", mcp_tool, guarded, {"asset": "BTC"}, options.mcp_calls, out
                )


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=None, help="calls per variant for the plain tool (3000)")
    parser.add_argument("--mcp-calls", type=int, default=None, help="calls per variant for the MCP tool (400)")
    add_flags(parser)
    options = parser.parse_args()
    if options.calls is None:
        options.calls = size(options, 3000, 300, 10)
    if options.mcp_calls is None:
        options.mcp_calls = size(options, 400, 60, 4)
    return options


if __name__ == "__main__":
    asyncio.run(main(parse_options()))
