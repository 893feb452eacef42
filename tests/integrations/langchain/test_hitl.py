"""``GuardMiddleware(approval="interrupt")`` speaks LangChain's HumanInTheLoop types, beside LangChain's own
``HumanInTheLoopMiddleware`` in the same ``create_agent``.

The guard pauses with a ``ToolApprovalRequest`` (per_call shape) whose ``response_schema`` lists approve /
edit / reject with the tool's own argument schema; it resumes with one LangChain ``Decision``, a batched
``HITLResponse`` holding one, or a 0.1 resume value. Edits are evaluated again. The judge of what ran is the
recording FastMCP server over stdio.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from mcp_guard import Guard, MemorySink
from mcp_guard.integrations.langchain import GuardMiddleware
from tests.support.langchain_helpers import RecordingSession, script, tool_messages, violation
from tests.support.marks import module_loop

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "tools": {
        "transfer": {
            "approve_if": {"args.amount": {"gt": 1000}},
            "deny_if": {"args.force": {"eq": True}},
            "reason": "large transfers need a human",
        }
    },
}
ASKED = {"amount": 5000}


def thread(name: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": name}}


def both_calls() -> AIMessage:
    return AIMessage(
        "",
        tool_calls=[
            {"name": "get_balance", "args": {"asset": "BTC"}, "id": "b1", "type": "tool_call"},
            {"name": "transfer", "args": ASKED, "id": "t1", "type": "tool_call"},
        ],
    )


@module_loop
@pytest.mark.parametrize(
    ("resume", "ran", "code"),
    [
        ({"type": "approve"}, 5000, None),
        ({"type": "edit", "edited_action": {"name": "transfer", "args": {"amount": 800}}}, 800, None),
        # Edits are evaluated again: a forced transfer is denied, whoever asks for it.
        (
            {"type": "edit", "edited_action": {"name": "transfer", "args": {"amount": 800, "force": True}}},
            None,
            "denied",
        ),
        # ... and so are edits that do not fit the tool's schema (no coercion of "800").
        ({"type": "edit", "edited_action": {"name": "transfer", "args": {"amount": "800"}}}, None, "invalid_arguments"),
        (
            {"type": "edit", "edited_action": {"name": "withdraw", "args": {"asset": "BTC", "amount": 1}}},
            None,
            "approval_denied",
        ),
        ({"type": "reject", "message": "not today"}, None, "approval_denied"),
        ({"type": "reject"}, None, "approval_denied"),
        ({"decisions": [{"type": "approve"}]}, 5000, None),
        ({"decisions": [{"type": "approve"}, {"type": "approve"}]}, None, "approval_denied"),
        # The 0.1 resume values still work.
        (True, 5000, None),
        (False, None, "approval_denied"),
        ({"type": "edit", "args": {"amount": 700}}, 700, None),
    ],
    ids=lambda v: str(v)[:40],
)
async def test_pause_and_resume_with_each_decision_beside_langchain_hitl(
    recording_session: RecordingSession, resume: Any, ran: int | None, code: str | None
) -> None:
    sink = MemorySink()
    hitl = HumanInTheLoopMiddleware(interrupt_on={"get_balance": True})
    guard = GuardMiddleware(Guard(POLICY, audit=sink), approval="interrupt")
    tools = await recording_session.tools()
    agent = create_agent(script(both_calls()), tools, middleware=[hitl, guard], checkpointer=InMemorySaver())
    before = len(recording_session.record())
    name = f"t-{id(resume)}"

    # 1. LangChain's own middleware asks first (after the model turn), in its batched shape.
    state = await agent.ainvoke({"messages": [("user", "go")]}, config=thread(name))
    (theirs,) = state["__interrupt__"]
    assert theirs.value["action_requests"][0]["name"] == "get_balance"
    state = await agent.ainvoke(Command(resume={"decisions": [{"type": "approve"}]}), config=thread(name))

    # 2. The guard pauses the transfer in LangChain's per_call shape; nothing has run but the approved read.
    (ours,) = state["__interrupt__"]
    assert ours.value["type"] == "tool_approval"
    assert (ours.value["tool_call_id"], ours.value["name"], ours.value["args"]) == ("t1", "transfer", ASKED)
    assert "args.amount" in ours.value["description"]  # the check that asked for a human
    branches = {b["properties"]["type"]["const"]: b for b in ours.response_schema["oneOf"]}
    assert list(branches) == ["approve", "edit", "reject"]
    edit_args = branches["edit"]["properties"]["edited_action"]["properties"]["args"]
    assert edit_args["properties"]["amount"]["type"] == "integer"  # the tool's own argument schema
    assert [r["tool"] for r in recording_session.record()[before:]] == ["get_balance"]

    # 3. The answer.
    state = await agent.ainvoke(Command(resume=resume), config=thread(name))

    assert "__interrupt__" not in state
    assert state["messages"][-1].content == "done"
    transfers = [r["args"]["amount"] for r in recording_session.record()[before:] if r["tool"] == "transfer"]
    (result,) = [m for m in tool_messages(state["messages"]) if m.tool_call_id == "t1"]
    if code is None:
        assert transfers == [ran]
        assert result.status == "success"
    else:
        assert transfers == []
        payload = violation(result) or {}
        assert payload.get("code") == code
        if isinstance(resume, dict) and resume.get("message"):
            assert payload["reason"] == resume["message"]
    outcome = "ok" if code is None else "denied"
    assert [(e["tool"], e["outcome"]) for e in sink.events] == [("get_balance", "ok"), ("transfer", outcome)]


@module_loop
async def test_budget_checked_when_pausing_and_again_on_resume(recording_session: RecordingSession) -> None:
    limited = {**POLICY, "tools": {"transfer": {**POLICY["tools"]["transfer"], "rate_limit": "1/minute"}}}
    guard = Guard(limited, clock=lambda: 1_000.0)
    tools = await recording_session.tools()
    before = len(recording_session.record())
    agents = [
        create_agent(
            script(AIMessage("", tool_calls=[{"name": "transfer", "args": ASKED, "id": "t", "type": "tool_call"}])),
            tools,
            middleware=[GuardMiddleware(guard, approval="interrupt")],
            checkpointer=InMemorySaver(),
        )
        for _ in range(3)
    ]
    # Two threads pause: the pause uses no quota, so both humans are asked.
    for i, agent in enumerate(agents[:2]):
        state = await agent.ainvoke({"messages": [("user", "go")]}, config=thread(f"b{i}"))
        assert state["__interrupt__"][0].value["type"] == "tool_approval"
    # The first approval spends the one unit of the minute ...
    state = await agents[0].ainvoke(Command(resume={"type": "approve"}), config=thread("b0"))
    assert tool_messages(state["messages"])[-1].status == "success"
    # ... so the second is checked again on resume and refused without running.
    state = await agents[1].ainvoke(Command(resume={"type": "approve"}), config=thread("b1"))
    assert (violation(tool_messages(state["messages"])[-1]) or {}).get("code") == "rate_limited"
    # A third thread is refused before any human is asked: the budget is checked when pausing.
    state = await agents[2].ainvoke({"messages": [("user", "go")]}, config=thread("b2"))
    assert "__interrupt__" not in state
    assert (violation(tool_messages(state["messages"])[-1]) or {}).get("code") == "rate_limited"
    assert [r["tool"] for r in recording_session.record()[before:]] == ["transfer"]
