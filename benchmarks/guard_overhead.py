"""What the Guard adds to one tool call, in µs: ``guard.ainvoke`` / ``guard.invoke`` vs calling the tool directly.

Cases: the allow path with no limits and no audit (the fast path), with one rate limit on ``memory://``, and
with an in-memory audit sink. Rounds of the direct call and the guarded call are interleaved, so machine noise
hits both alike; the table gives the median and the best round. Run: ``python benchmarks/guard_overhead.py``
(``--quick`` for fewer rounds, ``--json`` for the medians as JSON, name -> µs).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _report import add_flags, figures, size

from mcp_guard import Guard, MemorySink, Policy

POLICY = Policy.from_dict(
    {
        "version": "1",
        "default": "deny",
        "tools": {
            "plain": {},
            "limited": {"limits": [{"counter": "c", "window": "second", "max": 10**9, "scope": "global"}]},
        },
    }
)
ARGS = {"symbol": "BTCUSD", "amount": 1.5}
CALLS, ROUNDS = 2_000, 60


async def tool(**kwargs: Any) -> dict[str, Any]:
    return kwargs


def sync_tool(**kwargs: Any) -> dict[str, Any]:
    return kwargs


async def _per_call_us(fn: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter_ns()
    for _ in range(CALLS):
        await fn()
    return (time.perf_counter_ns() - started) / CALLS / 1000.0


def _per_call_us_sync(fn: Callable[[], Any]) -> float:
    started = time.perf_counter_ns()
    for _ in range(CALLS):
        fn()
    return (time.perf_counter_ns() - started) / CALLS / 1000.0


async def main(rounds: int, out: dict[str, float]) -> None:
    plain = Guard(POLICY)
    sink = MemorySink()
    audited = Guard(POLICY, audit=sink)
    cases: dict[str, tuple[Callable[[], Awaitable[Any]] | None, Callable[[], Any] | None]] = {
        "direct await tool(**args)": (lambda: tool(**ARGS), None),
        "ainvoke, allow, no limits, no audit": (lambda: plain.ainvoke("plain", ARGS, tool), None),
        "ainvoke, one limit (memory://)": (lambda: plain.ainvoke("limited", ARGS, tool), None),
        "ainvoke, allow, audit to memory": (lambda: audited.ainvoke("plain", ARGS, tool), None),
        "direct sync_tool(**args)": (None, lambda: sync_tool(**ARGS)),
        "invoke, allow, no limits, no audit": (None, lambda: plain.invoke("plain", ARGS, sync_tool)),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (afn, sfn) in cases.items():
            if afn is not None:
                samples[name].append(await _per_call_us(afn))
            elif sfn is not None:
                samples[name].append(_per_call_us_sync(sfn))
        sink.events.clear()
    base_async = statistics.median(samples["direct await tool(**args)"])
    base_sync = statistics.median(samples["direct sync_tool(**args)"])
    print(f"{'case':40} {'median µs':>10} {'best µs':>9} {'added µs (median)':>18}")
    for name, values in samples.items():
        base = base_sync if "sync" in name or name.startswith("invoke") else base_async
        added = statistics.median(values) - base
        extra = "" if name.startswith("direct") else f"{added:18.2f}"
        print(f"{name:40} {statistics.median(values):10.2f} {min(values):9.2f} {extra}")
        out[name] = statistics.median(values)
    print(
        "\nLangChain target: a guarded ~110 µs tool call within 1.05x, i.e. <= ~5.5 µs added by the whole "
        "adapter; the fast-path rows above are the Guard's share."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_flags(parser)
    opts = parser.parse_args()
    CALLS, rounds = size(opts, (CALLS, ROUNDS), (500, 6), (20, 2))  # CALLS: the global _per_call_us reads
    with figures(opts.json) as out:
        asyncio.run(main(rounds, out))
