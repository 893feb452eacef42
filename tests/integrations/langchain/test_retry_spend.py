"""Retries never spend twice (issue 9): a money-moving tool that acts and then times out.

A LangChain agent (scripted model, ``create_agent``) calls a transfer tool three times (three runs) under a spend cap of
10,000 per minute; each call moves 5,000 and then raises ``TimeoutError`` (the transport lost the answer after
the money moved). The tool's own ledger is the judge: at most two transfers may ever execute. A read-only tool
that times out once is still retried.

Spec section 8 puts this in the Guard (retries on by default only for tools that declare themselves safe to
repeat; every attempt charged; an ambiguous failure keeps its charge). The adapters only pass annotations.
"""

from __future__ import annotations

import contextlib
from typing import Any

from langchain.agents import create_agent
from langchain_core.tools import StructuredTool

from mcp_guard import Guard
from mcp_guard.integrations.langchain import wrap_tools
from tests.support.langchain_helpers import call, script, tool_messages

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "tools": {
        "transfer": {"limits": [{"counter": "spend", "window": "minute", "max": 10_000, "cost": "args.amount"}]},
    },
}


def ledger_tools(ledger: list[tuple[str, int]], *, read_failures: int) -> list[StructuredTool]:
    failures = [read_failures]

    async def transfer(amount: int) -> str:
        ledger.append(("transfer", amount))  # the money moved ...
        raise TimeoutError("no answer from the bank")  # ... and then the answer was lost

    async def balance() -> str:
        ledger.append(("balance", 0))
        if failures[0] > 0:
            failures[0] -= 1
            raise TimeoutError("slow")
        return "10"

    return [
        StructuredTool.from_function(coroutine=transfer, name="transfer", description="Move money."),
        StructuredTool.from_function(
            coroutine=balance,
            name="balance",
            description="Read the balance.",
            metadata={"readOnlyHint": True, "idempotentHint": True},
        ),
    ]


async def no_sleep(seconds: float) -> None:
    return None


async def test_a_money_moving_tool_never_executes_past_the_cap() -> None:
    ledger: list[tuple[str, int]] = []
    tools = wrap_tools(ledger_tools(ledger, read_failures=0), Guard(POLICY, clock=lambda: 1_000.0, asleep=no_sleep))
    for i in range(3):
        # The tool's own TimeoutError is the tool's to report (LangChain ends a run on it); what matters is
        # that the guard never runs it again and keeps the charge of a call that may have moved money.
        agent = create_agent(script(call("transfer", {"amount": 5000}, f"t{i}")), tools)
        with contextlib.suppress(TimeoutError):
            await agent.ainvoke({"messages": [("user", "go")]})
    moved = [amount for tool, amount in ledger if tool == "transfer"]
    assert moved == [5000, 5000], ledger


async def test_a_read_only_tool_is_still_retried() -> None:
    ledger: list[tuple[str, int]] = []
    tools = wrap_tools(ledger_tools(ledger, read_failures=1), Guard(POLICY, asleep=no_sleep))
    agent = create_agent(script(call("balance", {}, "b1")), tools)
    state = await agent.ainvoke({"messages": [("user", "go")]})
    (message,) = tool_messages(state["messages"])
    assert message.content == "10"
    assert ledger == [("balance", 0), ("balance", 0)]
