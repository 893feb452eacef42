"""Cost of the Agents SDK guardrail per tool call, against an unguarded run measured in the same process.

Run: ``.venv/bin/python benchmarks/agents_overhead.py`` (``--quick`` for fewer runs, ``--json`` for the
medians as JSON, name -> µs).

Both agents use the same offline ``ScriptedModel`` script (one tool call, then a final answer) and the same
function tool; the guarded one gets :func:`~mcp_guard.integrations.openai_agents.guard_tools` with a policy
that has an ``args_schema``, a ``deny_if`` and a rate limit (memory store) on that tool. Runs alternate
(unguarded, guarded, unguarded, ...) so drift hits both sides alike. Printed: the median run time of each,
the guarded run's extra time (the cost of one guarded tool call: guardrail, admission, execution wrapper,
audit off) and the ratio, plus the guardrail and wrapper timed alone (no runner around them).

Not a timed test: figures depend on the machine; the script prints them and checks nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from typing import Any

from _report import add_flags, figures, size
from agents import Agent, FunctionTool, Runner, function_tool, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call
from agents.tool_context import ToolContext
from agents.tool_guardrails import ToolInputGuardrailData

from mcp_guard import Guard
from mcp_guard.integrations.openai_agents import guard_tools

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "tools": {
        "get_quote": {
            "args_schema": {
                "type": "object",
                "properties": {"symbol": {"type": "string", "pattern": "^[A-Z]{1,10}$"}},
                "required": ["symbol"],
            },
            "deny_if": {"args.symbol": {"eq": "FORBIDDEN"}},
            # Large enough never to refuse during the benchmark: we time the admitted path.
            "limits": [{"counter": "quotes", "window": "minute", "max": 10_000_000, "scope": "identity"}],
        }
    },
}


@function_tool
def get_quote(symbol: str) -> str:
    """Latest price of a symbol."""
    return f"{symbol}: 101.5"


def new_model() -> ScriptedModel:
    return ScriptedModel([[function_call("get_quote", {"symbol": "ACME"}, call_id="c1")], [assistant_message("done")]])


async def one_run(tools: list[Any]) -> int:
    model = new_model()  # built outside the timed part
    agent: Agent[Any] = Agent(name="bench", model=model, tools=tools)
    start = time.perf_counter_ns()
    await Runner.run(agent, "quote ACME", context={"user_id": "alice"})
    return time.perf_counter_ns() - start


async def end_to_end(runs: int) -> tuple[list[int], list[int]]:
    plain: list[FunctionTool] = [get_quote]
    guarded = guard_tools(plain, Guard(POLICY))
    for _ in range(20):  # warm up both paths (imports, caches, the policy's compiled plan)
        await one_run(plain)
        await one_run(guarded)
    a: list[int] = []
    b: list[int] = []
    gc.disable()
    try:
        for _ in range(runs):
            a.append(await one_run(plain))
            b.append(await one_run(guarded))
    finally:
        gc.enable()
    return a, b


async def guardrail_alone(calls: int) -> list[int]:
    """The guardrail plus the execution wrapper around a no-op, without the runner."""
    (tool,) = guard_tools([get_quote], Guard(POLICY))
    guardrail = tool.tool_input_guardrails[0]  # type: ignore[index]
    agent: Agent[Any] = Agent(name="bench")
    times: list[int] = []
    for i in range(calls):
        ctx = ToolContext(
            context={"user_id": "alice"},
            tool_name="get_quote",
            tool_call_id=f"c{i}",
            tool_arguments='{"symbol": "ACME"}',
        )
        start = time.perf_counter_ns()
        await guardrail.run(ToolInputGuardrailData(context=ctx, agent=agent))
        await tool.on_invoke_tool(ctx, '{"symbol": "ACME"}')
        times.append(time.perf_counter_ns() - start)
    return times


def plain_tool_alone(calls: int) -> list[int]:
    async def go() -> list[int]:
        times: list[int] = []
        for i in range(calls):
            ctx = ToolContext(
                context=None, tool_name="get_quote", tool_call_id=f"c{i}", tool_arguments='{"symbol": "ACME"}'
            )
            start = time.perf_counter_ns()
            await get_quote.on_invoke_tool(ctx, '{"symbol": "ACME"}')
            times.append(time.perf_counter_ns() - start)
        return times

    return asyncio.run(go())


def us(ns: float) -> float:
    return ns / 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (a rough figure in a few seconds)")
    add_flags(parser, quick=False)
    options = parser.parse_args()
    with figures(options.json) as out:
        run(size(options, 1000, 200, 4), out)


def run(runs: int, out: dict[str, float]) -> None:
    set_tracing_disabled(True)

    a, b = asyncio.run(end_to_end(runs))
    med_a, med_b = statistics.median(a), statistics.median(b)
    # Paired differences (each guarded run against the unguarded run just before it) cancel slow drift.
    paired = statistics.median(y - x for x, y in zip(a, b, strict=True))
    alone = asyncio.run(guardrail_alone(runs * 5))
    bare = plain_tool_alone(runs * 5)

    print(f"Agents SDK guardrail overhead, {runs} alternating runs of one tool call each (ScriptedModel)")
    print(f"{'':40} {'median µs':>12} {'p90 µs':>10}")
    print(f"{'unguarded run':40} {us(med_a):12.1f} {us(statistics.quantiles(a, n=10)[-1]):10.1f}")
    print(f"{'guarded run':40} {us(med_b):12.1f} {us(statistics.quantiles(b, n=10)[-1]):10.1f}")
    print(f"{'overhead per tool call (median diff)':40} {us(med_b - med_a):12.1f}")
    print(f"{'overhead per tool call (paired median)':40} {us(paired):12.1f}")
    print(f"{'ratio guarded / unguarded':40} {med_b / med_a:12.3f}")
    print(f"{'guardrail + wrapper alone, per call':40} {us(statistics.median(alone)):12.1f}")
    print(f"{'plain tool invocation alone, per call':40} {us(statistics.median(bare)):12.1f}")
    print(
        f"{'  difference: mcp-guard alone, per call':40} {us(statistics.median(alone) - statistics.median(bare)):12.1f}"
    )
    out.update(
        {
            "unguarded run": us(med_a),
            "guarded run": us(med_b),
            "guardrail + wrapper alone, per call": us(statistics.median(alone)),
            "plain tool invocation alone, per call": us(statistics.median(bare)),
        }
    )


if __name__ == "__main__":
    main()
