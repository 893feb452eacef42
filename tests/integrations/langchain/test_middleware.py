"""``GuardMiddleware`` in ``create_agent``: approvals by callback and by LangGraph interrupt (pause, resume with
each decision, no quota used by the paused pass), hidden tools kept from the model, and life beside LangChain's
``HumanInTheLoopMiddleware`` and ``ToolRetryMiddleware``."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware, ToolRetryMiddleware
from langchain_core.messages import AIMessage
from langchain_core.tools import StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from mcp_guard import ApprovalDecision, ApprovalRequest, Guard, MemorySink, PolicyViolation
from mcp_guard._install import install_hint
from mcp_guard.integrations.langchain import GuardMiddleware
from tests.support.langchain_helpers import ExchangeServer, call, script, text_of, tool_messages, violation
from tests.support.marks import module_loop

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "hide": ["delete_api_key"],
    "tools": {
        "get_balance": {},
        "place_order": {"approve_if": {"args.amount": {"gt": 100}}},
        "exchange/withdraw": {
            "action": "require_approval",
            "reason": "withdrawals need a human",
            "deny_if": {"args.address": {"regex": "^bad"}},
            "limits": [{"counter": "withdrawals", "window": "minute", "max": 1, "scope": "global"}],
        },
        "unstable": {},
        "add": {"approve_if": {"args.a": {"gt": 10}}},
    },
}
WITHDRAW = {"asset": "BTC", "amount": 1, "address": "addr"}


def thread(name: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": name}}


# -- approval by interrupt ---------------------------------------------------------------------------------


@module_loop
@pytest.mark.parametrize(
    ("resume", "code", "text"),
    [
        ({"type": "approve"}, None, "withdrew 1 BTC to addr"),
        (True, None, "withdrew 1 BTC to addr"),
        ({"type": "reject", "message": "not on a Sunday"}, "approval_denied", None),
        (False, "approval_denied", None),
        (
            {"type": "edit", "args": {"asset": "BTC", "amount": 0.5, "address": "cold"}},
            None,
            "withdrew 0.5 BTC to cold",
        ),
        # Edited arguments are evaluated again: editing into a denied address is refused.
        ({"type": "edit", "args": {"asset": "BTC", "amount": 1, "address": "bad-1"}}, "denied", None),
    ],
)
async def test_interrupt_pauses_then_resumes_with_each_decision(
    exchange_server: ExchangeServer, resume: Any, code: str | None, text: str | None
) -> None:
    guard = Guard(POLICY)
    middleware = GuardMiddleware(guard, approval="interrupt", server="exchange")
    model = script(call("withdraw", WITHDRAW, "w1"))
    agent = create_agent(model, await exchange_server.tools(), middleware=[middleware], checkpointer=InMemorySaver())
    before = exchange_server.counts()["withdraw"]

    paused = await agent.ainvoke({"messages": [("user", "go")]}, config=thread("t1"))

    (pause,) = paused["__interrupt__"]
    # LangChain's HumanInTheLoop per_call shape (ToolApprovalRequest), with the guard's facts beside it.
    assert pause.value == {
        "type": "tool_approval",
        "tool_call_id": "w1",
        "name": "withdraw",
        "args": WITHDRAW,
        "description": "withdrawals need a human",
        "mcp_guard": {
            "server": "exchange",
            "identity": None,
            "session": "t1",
            "rule": "/tools/exchange~1withdraw",
            "reason": "withdrawals need a human",
            "risk_class": "destructive",
        },
    }
    decisions = [branch["properties"]["type"]["const"] for branch in pause.response_schema["oneOf"]]
    assert decisions == ["approve", "edit", "reject"]
    assert exchange_server.counts()["withdraw"] == before
    assert guard.check("withdraw", WITHDRAW, server="exchange").needs_approval  # no quota used by the pause

    state = await agent.ainvoke(Command(resume=resume), config=thread("t1"))

    assert "__interrupt__" not in state
    assert state["messages"][-1].content == "done"
    (result,) = tool_messages(state["messages"])
    if code is None:
        assert result.status == "success"
        assert text_of(result) == text
        assert exchange_server.counts()["withdraw"] - before == 1
        assert guard.check("withdraw", WITHDRAW, server="exchange").code == "rate_limited"  # charged once
    else:
        payload = violation(result)
        assert payload is not None
        assert payload["code"] == code
        assert exchange_server.counts()["withdraw"] == before
        assert guard.check("withdraw", WITHDRAW, server="exchange").needs_approval  # nothing charged
    if isinstance(resume, dict) and resume.get("message"):
        assert payload["reason"] == "not on a Sunday"


@module_loop
async def test_paused_pass_consumes_no_quota(exchange_server: ExchangeServer) -> None:
    # One withdrawal a minute. Two threads pause on it: had the paused pass reserved quota, the second would
    # have been refused at once instead of pausing. Each resume re-runs the code before interrupt(), and the
    # budget is charged exactly once, by the first approved call.
    guard = Guard(POLICY, clock=lambda: 5_000.0)
    agent = create_agent(
        script(call("withdraw", WITHDRAW, "a1")),
        await exchange_server.tools(),
        middleware=[GuardMiddleware(guard, approval="interrupt", server="exchange")],
        checkpointer=InMemorySaver(),
    )
    other = create_agent(
        script(call("withdraw", WITHDRAW, "b1")),
        await exchange_server.tools(),
        middleware=[GuardMiddleware(guard, approval="interrupt", server="exchange")],
        checkpointer=InMemorySaver(),
    )
    before = exchange_server.counts()["withdraw"]

    first = await agent.ainvoke({"messages": [("user", "go")]}, config=thread("A"))
    second = await other.ainvoke({"messages": [("user", "go")]}, config=thread("B"))
    assert len(first["__interrupt__"]) == 1
    assert len(second["__interrupt__"]) == 1

    done_a = await agent.ainvoke(Command(resume={"type": "approve"}), config=thread("A"))
    done_b = await other.ainvoke(Command(resume={"type": "approve"}), config=thread("B"))

    (ok,) = tool_messages(done_a["messages"])
    (limited,) = tool_messages(done_b["messages"])
    assert ok.status == "success"
    payload = violation(limited)
    assert payload is not None
    assert payload["code"] == "rate_limited"
    assert payload["retry_after_s"] == 60.0
    assert exchange_server.counts()["withdraw"] - before == 1


@module_loop
async def test_interrupt_only_when_approval_is_needed(exchange_server: ExchangeServer) -> None:
    middleware = GuardMiddleware(POLICY, approval="interrupt", server="exchange")
    model = script(
        call("get_balance", {"asset": "BTC"}, "c1"),
        call("place_order", {"symbol": "X", "side": "buy", "amount": 5}, "c2"),
        call("place_order", {"symbol": "X", "side": "buy", "amount": 500}, "c3"),
    )
    agent = create_agent(model, await exchange_server.tools(), middleware=[middleware], checkpointer=InMemorySaver())
    before = exchange_server.counts()

    paused = await agent.ainvoke({"messages": [("user", "go")]}, config=thread("t"))
    (pause,) = paused["__interrupt__"]
    assert (pause.value["name"], pause.value["tool_call_id"]) == ("place_order", "c3")
    assert pause.value["mcp_guard"]["rule"] == "/tools/place_order/approve_if/args.amount-gt"
    assert exchange_server.counts() - before == {"get_balance": 1, "place_order": 1}

    state = await agent.ainvoke(Command(resume={"type": "approve"}), config=thread("t"))
    assert [m.status for m in tool_messages(state["messages"])] == ["success"] * 3
    assert exchange_server.counts() - before == {"get_balance": 1, "place_order": 2}


# -- approval by callback ----------------------------------------------------------------------------------


@module_loop
@pytest.mark.parametrize(
    ("answer", "code", "text"),
    [
        (True, None, "withdrew 1 BTC to addr"),
        (ApprovalDecision.deny("too much"), "approval_denied", None),
        (ApprovalDecision.edit({"asset": "ETH", "amount": 2, "address": "hot"}), None, "withdrew 2 ETH to hot"),
    ],
)
async def test_callback_approval(
    exchange_server: ExchangeServer, answer: Any, code: str | None, text: str | None
) -> None:
    asked: list[ApprovalRequest] = []

    async def approver(request: ApprovalRequest) -> Any:
        asked.append(request)
        return answer

    middleware = GuardMiddleware(POLICY, approver=approver, server="exchange")
    agent = create_agent(
        script(call("withdraw", WITHDRAW, "w1")), await exchange_server.tools(), middleware=[middleware]
    )
    before = exchange_server.counts()["withdraw"]

    state = await agent.ainvoke({"messages": [("user", "go")]}, context={"user_id": "fay"})

    (result,) = tool_messages(state["messages"])
    assert [(r.tool, r.identity, r.rule) for r in asked] == [("withdraw", "fay", "/tools/exchange~1withdraw")]
    if code is None:
        assert text_of(result) == text
        assert exchange_server.counts()["withdraw"] - before == 1
    else:
        payload = violation(result)
        assert payload is not None
        assert (payload["code"], payload["reason"]) == (code, "too much")
        assert exchange_server.counts()["withdraw"] == before


# -- what the model is shown -------------------------------------------------------------------------------


@module_loop
async def test_hidden_tools_are_not_bound_and_refused_if_called(exchange_server: ExchangeServer) -> None:
    model = script(call("delete_api_key", {"key_id": "k"}, "d1"), call("flaky", {}, "f1"))
    first = GuardMiddleware(POLICY, server="exchange")
    second = GuardMiddleware({"version": "1", "default": "allow"})  # two instances: distinct default names
    assert first.name != second.name
    agent = create_agent(model, await exchange_server.tools(), middleware=[first, second])
    before = exchange_server.counts()

    state = await agent.ainvoke({"messages": [("user", "go")]})

    # delete_api_key is hidden; create_listen_key and flaky have no rule under default deny.
    assert model.bound
    assert all(names == ["get_balance", "place_order", "withdraw"] for names in model.bound)
    codes = [(violation(m) or {}).get("code") for m in tool_messages(state["messages"])]
    assert codes == ["hidden", "default_deny"]
    assert exchange_server.counts() == before
    assert state["messages"][-1].content == "done"


@module_loop
async def test_raise_mode_ends_the_run_by_design(exchange_server: ExchangeServer) -> None:
    guard = Guard(POLICY, on_violation="raise")
    agent = create_agent(
        script(call("delete_api_key", {"key_id": "k"}, "d1")),
        await exchange_server.tools(),
        middleware=[GuardMiddleware(guard, server="exchange")],
    )
    with pytest.raises(PolicyViolation):
        await agent.ainvoke({"messages": [("user", "go")]})


# -- beside LangChain's own middleware ---------------------------------------------------------------------


@module_loop
async def test_beside_human_in_the_loop_and_tool_retry(exchange_server: ExchangeServer) -> None:
    attempts: list[int] = []

    async def unstable(x: int) -> str:
        """Fails with a connection error on its first call."""
        attempts.append(x)
        if len(attempts) == 1:
            raise ConnectionError("reset by peer")
        return f"ok {x}"

    sink = MemorySink()
    # retry=False: ToolRetryMiddleware does the retrying here, and each retry goes through the guard again.
    guard = Guard(POLICY, audit=sink, retry=False)
    middleware = [
        HumanInTheLoopMiddleware(interrupt_on={"place_order": True}),
        ToolRetryMiddleware(max_retries=2, initial_delay=0.0, backoff_factor=0.0, jitter=False),
        GuardMiddleware(guard, approval="interrupt", server="exchange"),
    ]
    tools = [*await exchange_server.tools(), StructuredTool.from_function(coroutine=unstable)]
    model = script(
        call("place_order", {"symbol": "X", "side": "buy", "amount": 500}, "p1"),
        call("unstable", {"x": 7}, "u1"),
    )
    agent = create_agent(model, tools, middleware=middleware, checkpointer=InMemorySaver())
    before = exchange_server.counts()

    # 1. LangChain's HITL asks first (after the model turn) ...
    state = await agent.ainvoke({"messages": [("user", "go")]}, config=thread("h"))
    (hitl,) = state["__interrupt__"]
    assert hitl.value["action_requests"][0]["name"] == "place_order"
    # 2. ... then the guard's own approve_if pauses the tool call.
    state = await agent.ainvoke(Command(resume={"decisions": [{"type": "approve"}]}), config=thread("h"))
    (ours,) = state["__interrupt__"]
    assert ours.value["type"] == "tool_approval"
    assert exchange_server.counts() == before
    # 3. Approved: the order runs; the unstable tool fails once and ToolRetry runs it again through the guard.
    state = await agent.ainvoke(Command(resume=True), config=thread("h"))

    assert state["messages"][-1].content == "done"
    results = tool_messages(state["messages"])
    assert [m.status for m in results] == ["success", "success"]
    assert text_of(results[1]) == "ok 7"
    assert attempts == [7, 7]
    assert exchange_server.counts() - before == {"place_order": 1}
    assert [(e["tool"], e["outcome"]) for e in sink.events] == [
        ("place_order", "ok"),
        ("unstable", "error"),
        ("unstable", "ok"),
    ]


# -- the sync hooks ----------------------------------------------------------------------------------------


def _add(a: int, b: int) -> int:
    return a + b


def test_sync_hooks_callback_and_interrupt() -> None:
    add = StructuredTool.from_function(func=_add, name="add", description="Add two numbers.")

    # callback: a sync approver that edits
    def approver(request: ApprovalRequest) -> ApprovalDecision:
        return ApprovalDecision.edit({"a": 1, "b": request.args["b"]})

    agent = create_agent(
        script(call("add", {"a": 50, "b": 2}, "s1"), call("add", {"a": -1, "b": 2}, "s2")),
        [add],
        middleware=[GuardMiddleware(POLICY, approver=approver)],
    )
    state = agent.invoke({"messages": [("user", "go")]})
    assert [m.content for m in tool_messages(state["messages"])] == ["3", "1"]

    # interrupt: pause, then reject
    agent = create_agent(
        script(call("add", {"a": 50, "b": 2}, "s3")),
        [add],
        middleware=[GuardMiddleware(POLICY, approval="interrupt")],
        checkpointer=InMemorySaver(),
    )
    paused = agent.invoke({"messages": [("user", "go")]}, config=thread("sync"))
    assert paused["__interrupt__"][0].value["args"] == {"a": 50, "b": 2}
    state = agent.invoke(Command(resume={"type": "reject", "message": "no"}), config=thread("sync"))
    (result,) = tool_messages(state["messages"])
    payload = violation(result)
    assert payload is not None
    assert (payload["code"], payload["reason"]) == ("approval_denied", "no")


def test_rejects_unknown_approval_mode() -> None:
    with pytest.raises(ValueError, match="approval"):
        GuardMiddleware(POLICY, approval="email")  # type: ignore[arg-type]


def test_parallel_calls_pause_once_each_and_resume_by_interrupt_id() -> None:
    add = StructuredTool.from_function(func=_add, name="add", description="Add two numbers.")
    both = AIMessage(
        "",
        tool_calls=[
            {"name": "add", "args": {"a": 11, "b": 1}, "id": "x1", "type": "tool_call"},
            {"name": "add", "args": {"a": 12, "b": 1}, "id": "x2", "type": "tool_call"},
        ],
    )
    agent = create_agent(
        script(both),
        [add],
        middleware=[GuardMiddleware(POLICY, approval="interrupt")],
        checkpointer=InMemorySaver(),
    )
    paused = agent.invoke({"messages": [("user", "go")]}, config=thread("par"))
    pauses = {p.value["tool_call_id"]: p.id for p in paused["__interrupt__"]}
    assert sorted(pauses) == ["x1", "x2"]

    answers = {pauses["x1"]: {"type": "reject", "message": "no"}, pauses["x2"]: {"type": "approve"}}
    state = agent.invoke(Command(resume=answers), config=thread("par"))

    results = {m.tool_call_id: m for m in tool_messages(state["messages"])}
    payload = violation(results["x1"])
    assert payload is not None
    assert payload["code"] == "approval_denied"
    assert (results["x2"].content, results["x2"].status) == ("13", "success")


def test_missing_extra_names_the_install_command() -> None:
    # A fresh interpreter where LangChain cannot be imported: the error names the extra to install.
    code = (
        "import sys; sys.modules['langchain'] = None\n"
        "try:\n    import mcp_guard.integrations.langchain\n"
        "except ImportError as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.startswith("MissingExtraError")
    assert install_hint("langchain") in out.stdout
