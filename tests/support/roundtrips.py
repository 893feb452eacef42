"""How often each adapter evaluates the policy and asks the store per admitted call (issue 11).

Run ``.venv/bin/python -m tests.support.roundtrips`` to print the table; ``tests/integrations/test_roundtrips.py``
pins it.
Each scenario runs one call that the policy admits (a rate limit on the tool, memory store, audit on) through
the real framework objects (function tools, ``create_agent`` with a scripted model, the Agents SDK's
``Runner`` with ``ScriptedModel``), counting ``Policy.evaluate`` calls and store operations
(check / reserve / release, sync or async).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from mcp_guard import Guard, MemorySink, Policy
from mcp_guard._stores.memory import MemoryStore

LIMIT = {"counter": "c", "window": "minute", "max": 100}


def _policy(rule: dict[str, Any]) -> dict[str, Any]:
    return {"version": "1", "default": "deny", "tools": {"transfer": {**rule, "limits": [LIMIT]}}}


PLAIN = _policy({})
ASK = _policy({"action": "require_approval"})
MAYBE = _policy({"approve_if": {"args.amount": {"gt": 1000}}})  # wired for approval, this call does not ask


@contextlib.contextmanager
def counting() -> Iterator[Counter[str]]:
    """Count ``Policy.evaluate`` and every store operation while the block runs."""
    counts: Counter[str] = Counter()
    saved: dict[tuple[type, str], Any] = {}
    depth = [0]  # a store's async method may call its sync twin: count the outer call only

    def wrap(cls: type, name: str, label: str) -> None:
        original = getattr(cls, name)
        saved[(cls, name)] = original
        if asyncio.iscoroutinefunction(original):

            async def acounted(*args: Any, **kwargs: Any) -> Any:
                counts[label] += depth[0] == 0
                depth[0] += 1
                try:
                    return await original(*args, **kwargs)
                finally:
                    depth[0] -= 1

            setattr(cls, name, acounted)
        else:

            def counted(*args: Any, **kwargs: Any) -> Any:
                counts[label] += depth[0] == 0
                depth[0] += 1
                try:
                    return original(*args, **kwargs)
                finally:
                    depth[0] -= 1

            setattr(cls, name, counted)

    wrap(Policy, "evaluate", "evaluate")
    for op in ("check", "reserve", "release"):
        wrap(MemoryStore, op, f"store.{op}")
        wrap(MemoryStore, f"a{op}", f"store.{op}")
    try:
        yield counts
    finally:
        for (cls, name), original in saved.items():
            setattr(cls, name, original)


def summary(counts: Counter[str]) -> tuple[int, int, int]:
    """(evaluations, store round trips, reservations)."""
    store = sum(n for k, n in counts.items() if k.startswith("store."))
    return counts["evaluate"], store, counts["store.reserve"]


def guard_of(policy: dict[str, Any], **options: Any) -> Guard:
    return Guard(policy, audit=MemorySink(), **options)


# -- LangChain ------------------------------------------------------------------------------------------


def _lc_tool() -> Any:
    from langchain_core.tools import tool

    @tool
    def transfer(amount: int) -> str:
        """Move money."""
        return f"moved {amount}"

    return transfer


async def lc_wrap_tools() -> dict[str, Counter[str]]:
    from mcp_guard.integrations.langchain import wrap_tools

    (guarded,) = wrap_tools([_lc_tool()], guard_of(PLAIN))
    with counting() as counts:
        await guarded.ainvoke({"type": "tool_call", "name": "transfer", "args": {"amount": 5}, "id": "c1"})
    return {"call": counts}


async def lc_interceptor() -> dict[str, Counter[str]]:
    from langchain_mcp_adapters.interceptors import MCPToolCallRequest

    from mcp_guard.integrations.langchain import GuardInterceptor

    interceptor = GuardInterceptor(guard_of(PLAIN))
    request = MCPToolCallRequest(name="transfer", args={"amount": 5}, server_name="bank")

    async def handler(req: Any) -> Any:
        return "ok"

    with counting() as counts:
        await interceptor(request, handler)
    return {"call": counts}


async def _lc_agent(middleware: Any, resume: Any = None) -> dict[str, Counter[str]]:
    from langchain.agents import create_agent
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command

    from tests.support.langchain_helpers import call, script

    agent: Any = create_agent(
        script(call("transfer", {"amount": 5000})),
        [_lc_tool()],
        middleware=[middleware],
        checkpointer=InMemorySaver(),
    )
    config: Any = {"configurable": {"thread_id": "t"}}
    phases: dict[str, Counter[str]] = {}
    with counting() as counts:
        await agent.ainvoke({"messages": [("user", "go")]}, config)
    phases["pause" if resume is not None else "call"] = counts
    if resume is not None:
        with counting() as counts:
            await agent.ainvoke(Command(resume=resume), config)
        phases["resume"] = counts
    return phases


async def lc_middleware_callback() -> dict[str, Counter[str]]:
    from mcp_guard.integrations.langchain import GuardMiddleware

    return await _lc_agent(GuardMiddleware(guard_of(ASK, approver=lambda request: True)))


async def lc_middleware_interrupt_not_asked() -> dict[str, Counter[str]]:
    from mcp_guard.integrations.langchain import GuardMiddleware

    return await _lc_agent(GuardMiddleware(guard_of(PLAIN), approval="interrupt"))


async def lc_middleware_interrupt() -> dict[str, Counter[str]]:
    from mcp_guard.integrations.langchain import GuardMiddleware

    return await _lc_agent(GuardMiddleware(guard_of(ASK), approval="interrupt"), resume={"type": "approve"})


# -- OpenAI Agents SDK ------------------------------------------------------------------------------------


def _agents_tool() -> Any:
    from agents import function_tool

    @function_tool
    def transfer(amount: int) -> str:
        """Move money."""
        return f"moved {amount}"

    return transfer


async def _agents_run(guard: Guard, args: dict[str, Any], *, pre_approval: bool = False) -> dict[str, Counter[str]]:
    from agents import Agent, RunConfig, Runner, set_tracing_disabled

    from mcp_guard.integrations.openai_agents import guard_tools
    from tests.support.agents_helpers import call, script

    set_tracing_disabled(True)
    model = script(call("transfer", args, "t1"))
    agent: Agent[Any] = Agent(name="a", model=model, tools=guard_tools([_agents_tool()], guard))
    run_config = RunConfig(tool_execution={"pre_approval_tool_input_guardrails": True}) if pre_approval else None
    phases: dict[str, Counter[str]] = {}
    with counting() as counts:
        result = await Runner.run(agent, "go", run_config=run_config)
    if not result.interruptions:
        phases["call"] = counts
        return phases
    phases["pause"] = counts
    state = result.to_state()
    state.approve(result.interruptions[0])
    with counting() as counts:
        await Runner.run(agent, state, run_config=run_config)
    phases["resume"] = counts
    return phases


async def agents_plain() -> dict[str, Counter[str]]:
    return await _agents_run(guard_of(PLAIN), {"amount": 5})


async def agents_wired_not_asked() -> dict[str, Counter[str]]:
    return await _agents_run(guard_of(MAYBE), {"amount": 5})


async def agents_callback() -> dict[str, Counter[str]]:
    return await _agents_run(guard_of(ASK, approver=lambda request: True), {"amount": 5})


async def agents_sdk_approval() -> dict[str, Counter[str]]:
    return await _agents_run(guard_of(ASK), {"amount": 5})


async def agents_sdk_approval_pre() -> dict[str, Counter[str]]:
    return await _agents_run(guard_of(ASK), {"amount": 5}, pre_approval=True)


async def agents_mcp_server() -> dict[str, Counter[str]]:
    """guard_mcp_server around the real counter server over stdio: the admission reaches ``call_tool``."""
    import tempfile

    from agents import Agent, Runner, set_tracing_disabled

    from mcp_guard.integrations.openai_agents import guard_mcp_server
    from tests.support.agents_helpers import call, counter_server, script
    from tests.support.servers.counter_server import read_counts

    set_tracing_disabled(True)
    policy = {"version": "1", "default": "deny", "tools": {"get_balance": {"limits": [LIMIT]}}}
    with tempfile.TemporaryDirectory() as tmp:
        counter = Path(tmp) / "counts.jsonl"
        async with counter_server(counter, "exchange") as server:
            guard_mcp_server(server, guard_of(policy))
            model = script(call("get_balance", {"asset": "BTC"}, "b1"))
            agent: Agent[Any] = Agent(name="a", model=model, mcp_servers=[server])
            with counting() as counts:
                await Runner.run(agent, "go")
        if read_counts(counter)["get_balance"] != 1:
            raise AssertionError("the server did not run the admitted call exactly once")
    return {"call": counts}


SCENARIOS: dict[str, Callable[[], Awaitable[dict[str, Counter[str]]]]] = {
    "langchain wrap_tools": lc_wrap_tools,
    "langchain GuardInterceptor": lc_interceptor,
    "langchain middleware, callback approval": lc_middleware_callback,
    "langchain middleware, interrupt mode, no approval rule": lc_middleware_interrupt_not_asked,
    "langchain middleware, interrupt approval": lc_middleware_interrupt,
    "agents guard_tools": agents_plain,
    "agents guard_tools, approve_if not firing": agents_wired_not_asked,
    "agents guard_mcp_server (stdio)": agents_mcp_server,
    "agents guard_tools, callback approval": agents_callback,
    "agents guard_tools, SDK approval": agents_sdk_approval,
    "agents guard_tools, SDK approval + pre-approval guardrails": agents_sdk_approval_pre,
}


async def measure() -> dict[str, dict[str, tuple[int, int, int]]]:
    return {name: {phase: summary(c) for phase, c in (await run()).items()} for name, run in SCENARIOS.items()}


def main() -> None:
    table = asyncio.run(measure())
    print(f"{'scenario':60} {'phase':7} {'evals':>5} {'store':>5} {'reserve':>7}")
    for name, phases in table.items():
        for phase, (evals, store, reserve) in phases.items():
            print(f"{name:60} {phase:7} {evals:5} {store:5} {reserve:7}")
        if len(phases) > 1:
            totals = [sum(v[i] for v in phases.values()) for i in range(3)]
            print(f"{'':60} {'total':7} {totals[0]:5} {totals[1]:5} {totals[2]:7}")


if __name__ == "__main__":
    main()
