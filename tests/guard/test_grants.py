"""Approval grants (spec section 11): a yes that covers later identical calls, and nothing more.

Judged by who was asked (the approver's own log), what the tool ran (its own log, or a real MCP server's
record), the raw audit events, and the store (two guards on one real redis-server share a grant).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from mcp_guard import ApprovalDecision, ApprovalRequest, Guard, MemorySink, Policy
from mcp_guard._calls.approval import coerce_decision
from mcp_guard._errors import ApprovalError
from mcp_guard.integrations.langchain import GuardMiddleware
from tests.support.clock import FakeClock
from tests.support.langchain_helpers import RecordingSession, script, tool_messages

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "tools": {"pay": {"action": "require_approval", "description": "payments need a human"}},
}
SCHEMA = {"type": "object", "properties": {"to": {"type": "string"}, "amount": {"type": "integer"}}}


class Human:
    """An approver that answers ``answer`` and logs what it was asked."""

    def __init__(self, answer: ApprovalDecision | bool) -> None:
        self.answer = answer
        self.asked: list[dict[str, Any]] = []

    def __call__(self, request: ApprovalRequest) -> ApprovalDecision | bool:
        self.asked.append(dict(request.args))
        return self.answer


class Tool:
    def __init__(self) -> None:
        self.ran: list[dict[str, Any]] = []

    def __call__(self, **args: Any) -> str:
        self.ran.append(args)
        return "paid"


def _pay(guard: Guard, tool: Tool, args: dict[str, Any], **who: Any) -> Any:
    who.setdefault("identity", "alice")
    who.setdefault("session", "s1")
    return guard.run("pay", args, tool, tool_schema=SCHEMA, **who)


def test_once_asks_again_for_the_next_identical_call() -> None:
    human, tool = Human(ApprovalDecision.approve()), Tool()
    guard = Guard(POLICY, approver=human)
    for _ in range(2):
        assert _pay(guard, tool, {"to": "bob", "amount": 5}).violation is None
    assert len(human.asked) == 2
    assert len(tool.ran) == 2


def test_a_session_grant_covers_identical_calls_of_that_session_only() -> None:
    sink = MemorySink()
    human, tool = Human(ApprovalDecision.approve(scope="session")), Tool()
    guard = Guard(POLICY, approver=human, audit=sink)
    _pay(guard, tool, {"to": "bob", "amount": 5})
    _pay(guard, tool, {"to": "bob", "amount": 5})  # covered: nobody asked
    assert len(human.asked) == 1
    _pay(guard, tool, {"to": "bob", "amount": 6})  # other arguments
    _pay(guard, tool, {"to": "bob", "amount": 5}, session="s2")  # another session
    _pay(guard, tool, {"to": "bob", "amount": 5}, identity="mallory")  # another identity
    _pay(guard, tool, {"to": "bob", "amount": 5}, session=None)  # no session: a session grant cannot cover it
    assert len(human.asked) == 5
    assert len(tool.ran) == 6
    made, used = sink.events[0], sink.events[1]
    assert made["approval"] == "approve"
    assert made["grant_scope"] == "session"
    assert made["grant"].startswith("grant-")
    assert used["approval"] == "grant"
    assert used["grant"] == made["grant"]
    assert all(e["approval"] == "approve" for e in sink.events[2:])


def test_a_ttl_grant_expires_on_the_clock(clock: FakeClock) -> None:
    sink = MemorySink()
    human, tool = Human(ApprovalDecision.approve(ttl_s=60)), Tool()
    guard = Guard(POLICY, approver=human, clock=clock, audit=sink)
    _pay(guard, tool, {"to": "bob", "amount": 5})
    clock.advance(59)
    _pay(guard, tool, {"to": "bob", "amount": 5}, session="elsewhere")  # a ttl grant is not bound to the session
    assert len(human.asked) == 1
    clock.advance(2)
    _pay(guard, tool, {"to": "bob", "amount": 5})
    assert len(human.asked) == 2
    assert [e.get("grant_scope") for e in sink.events] == ["ttl", None, "ttl"]


def test_widened_to_any_arguments_only_when_the_approver_says_so() -> None:
    human, tool = Human(ApprovalDecision.approve(scope="session", args="any")), Tool()
    guard = Guard(POLICY, approver=human)
    _pay(guard, tool, {"to": "bob", "amount": 5})
    _pay(guard, tool, {"to": "carol", "amount": 900})
    assert len(human.asked) == 1
    _pay(guard, tool, {"to": "carol", "amount": 900}, identity="mallory")  # never widened to others
    assert len(human.asked) == 2


def test_a_grant_never_covers_arguments_the_schema_check_would_change() -> None:
    human, tool = Human(ApprovalDecision.approve(scope="session")), Tool()
    guard = Guard(POLICY, approver=human)
    _pay(guard, tool, {"to": "bob", "amount": 5})
    # "5" would be coerced to 5 by a lenient server: the strict check refuses it before any grant is looked up.
    refused = _pay(guard, tool, {"to": "bob", "amount": "5"})
    assert refused.violation is not None
    assert refused.violation.code == "invalid_arguments"
    # Without a schema, "5" is other arguments than 5: the human is asked again.
    guard.run("pay", {"to": "bob", "amount": "5"}, tool, identity="alice", session="s1")
    assert len(human.asked) == 2
    assert tool.ran == [{"to": "bob", "amount": 5}, {"to": "bob", "amount": "5"}]


def test_an_edit_grants_what_will_run_not_what_the_model_typed() -> None:
    human, tool = Human(ApprovalDecision.edit({"to": "bob", "amount": 4}, scope="session")), Tool()
    guard = Guard(POLICY, approver=human)
    _pay(guard, tool, {"to": "bob", "amount": 5000})
    _pay(guard, tool, {"to": "bob", "amount": 5000})  # the model's arguments were never approved
    assert len(human.asked) == 2
    human.answer = ApprovalDecision.deny()
    _pay(guard, tool, {"to": "bob", "amount": 4})  # the edited call is covered
    assert len(human.asked) == 2
    assert tool.ran == [{"to": "bob", "amount": 4}] * 3


def test_a_reload_that_changes_the_rule_drops_its_grants(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(POLICY))
    human, tool = Human(ApprovalDecision.approve(scope="session")), Tool()
    guard = Guard(str(path), approver=human)
    _pay(guard, tool, {"to": "bob", "amount": 5})
    other = {**POLICY, "tools": {**POLICY["tools"], "read": {}}}  # the pay rule itself is unchanged
    assert guard.reload(Policy.from_dict(other))
    _pay(guard, tool, {"to": "bob", "amount": 5})
    assert len(human.asked) == 1
    changed = {**other, "tools": {**other["tools"], "pay": {**POLICY["tools"]["pay"], "description": "ask twice"}}}
    assert guard.reload(Policy.from_dict(changed))
    _pay(guard, tool, {"to": "bob", "amount": 5})
    assert len(human.asked) == 2


@pytest.mark.redis
async def test_two_workers_on_redis_honour_one_grant(redis_url: str) -> None:
    human, tool = Human(ApprovalDecision.approve(scope="session")), Tool()
    first = Guard(POLICY, approver=human, store=redis_url)
    nobody = Human(False)
    second = Guard(POLICY, approver=nobody, store=redis_url)  # its human would refuse: the grant answers
    try:
        assert (await first.arun("pay", {"to": "bob", "amount": 5}, tool, identity="a", session="s")).violation is None
        result = await second.arun("pay", {"to": "bob", "amount": 5}, tool, identity="a", session="s")
        assert result.violation is None
        assert nobody.asked == []
        refused = await second.arun("pay", {"to": "bob", "amount": 6}, tool, identity="a", session="s")
        assert refused.violation is not None
        assert nobody.asked == [{"to": "bob", "amount": 6}]
        assert len(tool.ran) == 2
    finally:
        await first.aclose()
        await second.aclose()


def test_resume_values_carry_a_scope_and_bad_ones_are_refused() -> None:
    assert coerce_decision({"type": "approve", "scope": "session"}).scope == "session"
    assert coerce_decision({"type": "approve", "ttl_s": 30}).ttl_s == 30
    assert coerce_decision({"type": "approve", "scope": "session", "args": "any"}).any_args
    for bad in (
        {"type": "approve", "scope": "forever"},
        {"type": "approve", "ttl_s": "soon"},
        {"type": "approve", "ttl_s": -1},
        {"type": "approve", "ttl_s": float("nan")},
        {"type": "approve", "args": {"amount": 1}},
    ):
        with pytest.raises(ApprovalError):
            coerce_decision(bad)


# -- LangChain: the HITL resume value carries the scope ---------------------------------------------------

PAY_POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "tools": {"transfer": {"approve_if": {"args.amount": {"gt": 1000}}}},
}


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[RecordingSession]:
    session = await RecordingSession(tmp_path / "record.jsonl").start()
    yield session
    await session.close()


async def test_a_session_scoped_resume_is_not_asked_again_in_that_thread(server: RecordingSession) -> None:
    guard = Guard(PAY_POLICY)
    tools = await server.tools()

    def transfer(call_id: str) -> AIMessage:
        return AIMessage(
            "", tool_calls=[{"name": "transfer", "args": {"amount": 5000}, "id": call_id, "type": "tool_call"}]
        )

    agent = create_agent(
        script(transfer("t1"), transfer("t2")),
        tools,
        middleware=[GuardMiddleware(guard, approval="interrupt")],
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": "grant-thread"}}
    state = await agent.ainvoke({"messages": [("user", "pay twice")]}, config=config)
    assert state["__interrupt__"][0].value["type"] == "tool_approval"
    state = await agent.ainvoke(Command(resume={"type": "approve", "scope": "session"}), config=config)
    assert "__interrupt__" not in state  # the second identical transfer was covered by the grant
    assert [m.status for m in tool_messages(state["messages"])] == ["success", "success"]
    assert [r["args"]["amount"] for r in server.record() if r["tool"] == "transfer"] == [5000, 5000]


def test_arguments_nested_past_the_recursion_limit_ask_the_human_and_make_no_grant() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(10_000):
        node["x"] = {}
        node = node["x"]
    sink = MemorySink()
    human, tool = Human(ApprovalDecision.approve(scope="session")), Tool()
    guard = Guard(POLICY, approver=human, audit=sink)
    for _ in range(2):
        result = guard.run("pay", {"to": deep}, tool, identity="alice", session="s1")
        assert result.violation is None
    assert len(human.asked) == 2  # asked each time: such arguments can be neither granted nor matched
    assert len(tool.ran) == 2
    assert [e["outcome"] for e in sink.events] == ["ok", "ok"]
    assert all("grant" not in e for e in sink.events)
