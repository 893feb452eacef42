"""LangGraph interrupt with the inbox: the application records ``GuardMiddleware``'s pause in the inbox, a person
decides there, and the decision is the value the graph resumes with (an edit is evaluated again).

The agent calls a real MCP server over stdio (the counter server); its count is the judge.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from mcp_guard import Inbox
from mcp_guard.integrations.langchain import GuardMiddleware
from tests.support.langchain_helpers import ExchangeServer, call, script, text_of, tool_messages, violation
from tests.support.marks import module_loop

WITHDRAW_POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "tools": {
        "exchange/withdraw": {
            "action": "require_approval",
            "reason": "withdrawals need a human",
            "deny_if": {"args.address": {"regex": "^bad"}},
            "redact": ["args.address"],
        }
    },
}


@module_loop
@pytest.mark.parametrize(
    ("decision", "called", "code"),
    [
        ({"type": "approve"}, 1, None),
        ({"type": "edit", "args": {"asset": "BTC", "amount": 0.5, "address": "[redacted]"}}, 1, None),
        ({"type": "edit", "args": {"asset": "BTC", "amount": 1, "address": "bad-1"}}, 0, "denied"),
        ({"type": "reject", "message": "not today"}, 0, "approval_denied"),
    ],
)
async def test_langgraph_interrupt_resumes_with_the_inbox_decision(
    exchange_server: ExchangeServer,
    inbox_url: str,
    decision: dict[str, Any],
    called: int,
    code: str | None,
) -> None:
    inbox = Inbox(inbox_url, policy=WITHDRAW_POLICY)
    middleware = GuardMiddleware(WITHDRAW_POLICY, approval="interrupt", server="exchange")
    args = {"asset": "BTC", "amount": 1, "address": "cold-wallet-7"}
    agent = create_agent(
        script(call("withdraw", args, "w1")),
        await exchange_server.tools(),
        middleware=[middleware],
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": f"t-{id(decision)}-{inbox_url}"}}
    before = exchange_server.counts()["withdraw"]

    paused = await agent.ainvoke({"messages": [("user", "withdraw")]}, config=config)
    (pause,) = paused["__interrupt__"]
    # The application records the pause in the inbox, keyed by the interrupt's id.
    rid = await inbox.submit(pause.value, request_id=pause.id, identity="alice", timeout_s=60)
    record = await Inbox(inbox_url).get(rid)
    assert record is not None
    assert (record["tool"], record["server"], record["rule"]) == ("withdraw", "exchange", "/tools/exchange~1withdraw")
    assert record["args"]["address"] == "[redacted]"

    # The person decides on the page (another process's Inbox); the application resumes with that value.
    waiting = asyncio.create_task(inbox.wait(rid, 10))
    await Inbox(inbox_url).decide(rid, decision)
    resume = await waiting
    assert resume is not None
    state = await agent.ainvoke(Command(resume=resume), config=config)

    (message,) = tool_messages(state["messages"])
    assert exchange_server.counts()["withdraw"] - before == called
    if code is None:
        amount = resume["args"]["amount"] if resume["type"] == "edit" else 1
        assert text_of(message) == f"withdrew {amount:g} BTC to cold-wallet-7"
    else:
        payload = violation(message)
        assert payload is not None
        assert payload["code"] == code


# -- the Agents SDK's approval pause: the same helpers, resumed with state.approve / state.reject --------------


@module_loop
@pytest.mark.parametrize(
    ("decision", "called"),
    [({"type": "approve"}, 1), ({"type": "reject", "message": "ask treasury first"}, 0)],
    ids=["approve", "reject"],
)
async def test_agents_sdk_pause_resumes_with_the_inbox_decision(
    tmp_path: Path, decision: dict[str, Any], called: int
) -> None:
    from agents import Runner

    from mcp_guard.integrations.openai_agents import guard_mcp_server
    from tests.support.agents_helpers import call as sdk_call
    from tests.support.agents_helpers import counter_server, run, tool_outputs
    from tests.support.agents_helpers import script as sdk_script
    from tests.support.servers.counter_server import read_counts

    url = f"memory://sdk-{uuid.uuid4().hex}"
    inbox = Inbox(url, policy=WITHDRAW_POLICY)
    counter = tmp_path / "calls.txt"
    args = {"asset": "BTC", "amount": 1, "address": "cold-wallet-7"}
    async with counter_server(counter, "exchange") as server:
        guard_mcp_server(server, WITHDRAW_POLICY)  # no approver: the SDK pauses the run
        model = sdk_script(sdk_call("withdraw", args, "c1"))
        agent, paused = await run(model, mcp_servers=[server])
        (item,) = paused.interruptions
        # The SDK's item names no server: without server= the inbox cannot tell which rule applies, and hides all.
        blind = await Inbox(url, policy=WITHDRAW_POLICY).submit(item, request_id="blind")
        assert (await Inbox(url).get(blind) or {})["args"] == {k: "[redacted]" for k in args}
        rid = await inbox.submit(item, request_id=item.call_id, server="exchange", identity="alice")
        assert (await Inbox(url).get(rid) or {})["args"] == {"asset": "BTC", "amount": 1, "address": "[redacted]"}

        await Inbox(url).decide(rid, decision)
        resume = await inbox.wait(rid, 5)
        assert resume == decision
        state = paused.to_state()
        if resume["type"] == "approve":
            state.approve(item)
        else:
            state.reject(item, rejection_message=resume.get("message"))
        await Runner.run(agent, state)
    assert read_counts(counter)["withdraw"] == called
    output = tool_outputs(model)["c1"]
    assert output == "withdrew 1 BTC to cold-wallet-7" if called else "ask treasury first" in output
