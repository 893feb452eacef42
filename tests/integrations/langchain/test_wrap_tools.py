"""``wrap_tools``: the guarded copies keep the tools' shape, and in a real ``create_agent`` loop over a real MCP
server (one process for the module) a refused call never reaches the server and comes back to the model as the
violation JSON, without ending the run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.tools import ToolRuntime
from langchain_core.messages import ToolMessage
from langchain_core.tools import StructuredTool, ToolException

from mcp_guard import ApprovalDecision, ApprovalRequest, Guard, MemorySink, PolicyViolation
from mcp_guard.integrations.langchain import wrap_tools
from tests.support.cases import CASES_POLICY
from tests.support.clock import FakeClock
from tests.support.langchain_helpers import (
    ExchangeServer,
    call,
    script,
    text_of,
    tool_call,
    tool_messages,
    violation,
)
from tests.support.marks import module_loop


def by_name(tools: list[Any]) -> dict[str, Any]:
    return {t.name: t for t in tools}


# -- shape -------------------------------------------------------------------------------------------------


@module_loop
async def test_copies_keep_shape_and_leave_out_what_the_policy_hides(exchange_server: ExchangeServer) -> None:
    tools = await exchange_server.tools()
    guarded = wrap_tools(tools, CASES_POLICY, server="exchange")

    # delete_api_key is hidden, flaky has no rule under default deny: the model is never shown them.
    assert [t.name for t in guarded] == ["get_balance", "create_listen_key", "place_order", "withdraw"]
    originals = by_name(tools)
    for tool in guarded:
        original = originals[tool.name]
        assert tool is not original
        assert tool.description == original.description
        assert tool.args_schema == original.args_schema
        assert tool.metadata == original.metadata
        assert tool.response_format == "content_and_artifact"
        assert tool.func is None  # MCP tools are async only; we add no sync path they do not have
        assert tool.coroutine is not original.coroutine
        assert tool.tool_call_schema == original.tool_call_schema
    assert originals["get_balance"].coroutine.__name__ == "call_tool"  # the original is untouched

    everything = wrap_tools(tools, CASES_POLICY, server="exchange", hide_denied=False)
    assert [t.name for t in everything] == [t.name for t in tools]


@module_loop
async def test_mcp_tool_keeps_artifact_and_reports_violation_as_error_message(exchange_server: ExchangeServer) -> None:
    guarded = by_name(wrap_tools(await exchange_server.tools(), CASES_POLICY, server="exchange"))
    before = exchange_server.counts()

    ok = await guarded["get_balance"].ainvoke(tool_call("get_balance", {"asset": "BTC"}, "c1"))
    assert isinstance(ok, ToolMessage)
    assert ok.status == "success"
    assert text_of(ok) == "BTC: 1.5"
    assert ok.artifact == {"structured_content": {"result": "BTC: 1.5"}}

    bad = await guarded["get_balance"].ainvoke(tool_call("get_balance", {"asset": "btc!"}, "c2"))
    assert bad.status == "error"
    assert bad.tool_call_id == "c2"
    assert bad.content == bad.content.strip()  # exactly the JSON text, nothing around it
    payload = json.loads(bad.content)
    assert payload["code"] == "invalid_arguments"
    assert payload["rule"] == "/tools/get_*/args_schema"
    assert "args.asset" in payload["reason"]
    assert payload["server"] == "exchange"
    assert payload["policy"].startswith("sha256:")

    after = exchange_server.counts()
    assert after["get_balance"] - before["get_balance"] == 1  # the refused call never reached the server


# -- in a create_agent loop --------------------------------------------------------------------------------


@module_loop
async def test_agent_runs_allowed_call_and_model_sees_each_violation(exchange_server: ExchangeServer) -> None:
    tools = wrap_tools(await exchange_server.tools(), CASES_POLICY, server="exchange")
    model = script(
        call("get_balance", {"asset": "ETH"}, "c1"),
        call("place_order", {"symbol": "BTCUSD", "side": "buy", "amount": 5000}, "c2"),
        call("withdraw", {"asset": "BTC", "amount": 1, "address": "addr"}, "c3"),
    )
    before = exchange_server.counts()

    state = await create_agent(model, tools).ainvoke({"messages": [("user", "go")]})

    assert state["messages"][-1].content == "done"  # no violation ended the run
    results = tool_messages(state["messages"])
    assert [m.status for m in results] == ["success", "error", "error"]
    assert text_of(results[0]) == "ETH: 1.5"
    denied = violation(results[1])
    assert denied is not None
    assert denied["code"] == "denied"
    assert denied["rule"] == "/tools/place_*/deny_if/args.amount-gt"
    assert "args.amount" in denied["reason"]
    held = violation(results[2])
    assert held is not None
    assert held["code"] == "approval_required"  # the server-qualified rule applied: the adapter knew the server
    assert held["rule"] == "/tools/exchange~1withdraw"

    # The model's next turn received the violation JSON as the tool result.
    next_turn = model.seen[2]
    assert isinstance(next_turn[-1], ToolMessage)
    assert violation(next_turn[-1]) == denied
    # Hidden and denied-outright tools were never bound to the model.
    assert model.bound
    assert all(names == ["get_balance", "create_listen_key", "place_order", "withdraw"] for names in model.bound)

    after = exchange_server.counts()
    assert after["get_balance"] - before["get_balance"] == 1
    assert after["place_order"] == before["place_order"]
    assert after["withdraw"] == before["withdraw"]


@module_loop
async def test_rate_limited_call_reports_retry_after_and_frees_with_the_window(exchange_server: ExchangeServer) -> None:
    clock = FakeClock()
    tools = wrap_tools(await exchange_server.tools(), Guard(CASES_POLICY, clock=clock), server="exchange")
    listen_key = by_name(tools)["create_listen_key"]
    before = exchange_server.counts()["create_listen_key"]

    first = await listen_key.ainvoke(tool_call("create_listen_key", {}, "k1"))
    clock.now += 10.0
    second = await listen_key.ainvoke(tool_call("create_listen_key", {}, "k2"))
    third = await listen_key.ainvoke(tool_call("create_listen_key", {}, "k3"))

    assert [first.status, second.status, third.status] == ["success", "success", "error"]
    payload = violation(third)
    assert payload is not None
    assert payload["code"] == "rate_limited"
    assert payload["retry_after_s"] == 50.0  # the first call leaves the 60 s window 50 s from now
    assert payload["rule"] == "/tools/create_listen_key/limits/0"
    assert "50" in payload["hint"]
    assert exchange_server.counts()["create_listen_key"] - before == 2

    clock.now += 50.0
    fourth = await listen_key.ainvoke(tool_call("create_listen_key", {}, "k4"))
    assert fourth.status == "success"


@module_loop
async def test_identity_and_session_come_from_runtime_context_and_thread(exchange_server: ExchangeServer) -> None:
    sink = MemorySink()
    guard = Guard(CASES_POLICY, audit=sink)
    tools = wrap_tools(await exchange_server.tools(), guard, server="exchange")

    # An MCP tool (gets ToolRuntime injected) and a plain tool (does not): both find the caller.
    def echo(text: str) -> str:
        """Echo the text."""
        return text

    plain = wrap_tools([StructuredTool.from_function(echo)], {"version": "1", "default": "allow"}, audit=sink)
    model = script(call("get_balance", {"asset": "BTC"}, "c1"), call("echo", {"text": "hi"}, "c2"))
    agent = create_agent(model, [*tools, *plain])
    await agent.ainvoke(
        {"messages": [("user", "go")]},
        context={"user_id": "alice"},
        config={"configurable": {"thread_id": "thread-7"}},
    )
    assert [(e["tool"], e["identity"], e["session"]) for e in sink.events] == [
        ("get_balance", "alice", "thread-7"),
        ("echo", "alice", "thread-7"),
    ]

    # Overrides: a fixed string, and a callable given the ToolRuntime.
    sink.events.clear()
    seen: list[Any] = []

    def session_of(runtime: Any) -> str:
        seen.append(runtime)
        return f"ctx-{runtime.context['user_id']}"

    tools = wrap_tools(await exchange_server.tools(), guard, server="exchange", identity="svc", session=session_of)
    model = script(call("get_balance", {"asset": "BTC"}, "c1"))
    await create_agent(model, tools).ainvoke({"messages": [("user", "go")]}, context={"user_id": "bob"})
    assert [(e["identity"], e["session"]) for e in sink.events] == [("svc", "ctx-bob")]
    assert isinstance(seen[0], ToolRuntime)


# -- approvals by callback ---------------------------------------------------------------------------------


@module_loop
@pytest.mark.parametrize(
    ("answer", "code", "reached"),
    [
        (True, None, "withdrew 1 BTC to addr"),
        (ApprovalDecision.approve(), None, "withdrew 1 BTC to addr"),
        (False, "approval_denied", None),
        (ApprovalDecision.deny("not today"), "approval_denied", None),
        (ApprovalDecision.edit({"asset": "BTC", "amount": 0.5, "address": "cold"}), None, "withdrew 0.5 BTC to cold"),
        # Edited arguments are evaluated again: an edit into a denied address is refused.
        (ApprovalDecision.edit({"asset": "BTC", "amount": 1, "address": "bad-x"}), "denied", None),
    ],
)
async def test_callback_approval(
    exchange_server: ExchangeServer, answer: Any, code: str | None, reached: str | None
) -> None:
    asked: list[ApprovalRequest] = []

    def approver(request: ApprovalRequest) -> Any:
        asked.append(request)
        return answer

    tools = wrap_tools(await exchange_server.tools(), CASES_POLICY, server="exchange", approver=approver)
    model = script(call("withdraw", {"asset": "BTC", "amount": 1, "address": "addr"}, "w1"))
    before = exchange_server.counts()["withdraw"]

    state = await create_agent(model, tools).ainvoke({"messages": [("user", "go")]}, context={"user_id": "carol"})

    assert state["messages"][-1].content == "done"
    (result,) = tool_messages(state["messages"])
    assert len(asked) == 1
    assert asked[0].tool == "withdraw"
    assert asked[0].server == "exchange"
    assert asked[0].identity == "carol"
    assert asked[0].rule == "/tools/exchange~1withdraw"
    assert asked[0].risk_class == "destructive"
    if code is None:
        assert result.status == "success"
        assert text_of(result) == reached
        assert exchange_server.counts()["withdraw"] - before == 1
    else:
        payload = violation(result)
        assert payload is not None
        assert payload["code"] == code
        assert exchange_server.counts()["withdraw"] == before
    if answer == ApprovalDecision.deny("not today"):
        assert payload is not None
        assert payload["reason"] == "not today"


@module_loop
async def test_failing_approver_and_store_outage_do_not_end_the_run(exchange_server: ExchangeServer) -> None:
    def broken(request: ApprovalRequest) -> bool:
        raise RuntimeError("approval service down")

    # Port 1 refuses connections: a real outage, reported within the store's timeout.
    outage = Guard(CASES_POLICY, store="redis://127.0.0.1:1/0")
    tools = [
        *wrap_tools(await exchange_server.tools(), CASES_POLICY, server="exchange", approver=broken),
    ]
    limited = by_name(wrap_tools(await exchange_server.tools(), outage, server="exchange"))["create_listen_key"]
    model = script(
        call("withdraw", {"asset": "BTC", "amount": 1, "address": "addr"}, "w1"),
        call("create_listen_key", {}, "k1"),
    )
    tools = [t for t in tools if t.name != "create_listen_key"] + [limited]
    before = exchange_server.counts()

    state = await create_agent(model, tools).ainvoke({"messages": [("user", "go")]})

    assert state["messages"][-1].content == "done"
    codes = [(violation(m) or {}).get("code") for m in tool_messages(state["messages"])]
    assert codes == ["approval_denied", "guard_unavailable"]
    after = exchange_server.counts()
    assert after["withdraw"] == before["withdraw"]
    assert after["create_listen_key"] == before["create_listen_key"]


@module_loop
async def test_server_error_result_stays_an_error_and_gives_quota_back(exchange_server: ExchangeServer) -> None:
    policy = {"version": "1", "default": "deny", "tools": {"flaky": {"rate_limit": "1/minute"}}}
    guard = Guard(policy, retry=False)
    (flaky,) = wrap_tools([t for t in await exchange_server.tools() if t.name == "flaky"], guard, server="exchange")
    before = exchange_server.counts()["flaky"]

    first = await flaky.ainvoke(tool_call("flaky", {}, "f1"))
    second = await flaky.ainvoke(tool_call("flaky", {}, "f2"))

    # Both reached the server: the failed first call gave its quota back (count_failures is off).
    assert exchange_server.counts()["flaky"] - before == 2
    for message in (first, second):
        assert message.status == "error"
        assert violation(message) is None
        assert "upstream exploded" in text_of(message)


@module_loop
async def test_on_violation_raise_propagates(exchange_server: ExchangeServer) -> None:
    guard = Guard(CASES_POLICY, on_violation="raise")
    tools = by_name(wrap_tools(await exchange_server.tools(), guard, server="exchange"))
    with pytest.raises(PolicyViolation) as caught:
        await tools["place_order"].ainvoke(tool_call("place_order", {"symbol": "X", "side": "buy", "amount": 1e6}))
    assert caught.value.code == "denied"


# -- plain LangChain tools ---------------------------------------------------------------------------------

PLAIN_POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "tools": {"add": {"deny_if": {"args.a": {"lt": 0}}}, "whoami": {}, "shout": {}, "fails": {}},
}


def _add(a: int, b: int) -> int:
    return a + b


async def _aadd(a: int, b: int) -> int:
    return a + b


def test_plain_tool_sync_and_async_paths() -> None:
    add = StructuredTool.from_function(func=_add, coroutine=_aadd, name="add", description="Add two numbers.")
    (guarded,) = wrap_tools([add], PLAIN_POLICY)
    assert guarded.func is not None
    assert guarded.coroutine is not None
    assert guarded.args == add.args

    ok = guarded.invoke(tool_call("add", {"a": 1, "b": 2}))
    assert (ok.content, ok.status) == ("3", "success")
    refused = guarded.invoke(tool_call("add", {"a": -1, "b": 2}))
    assert refused.status == "error"
    assert json.loads(refused.content)["rule"] == "/tools/add/deny_if/args.a-lt"
    assert guarded.invoke({"a": 2, "b": 2}) == 4  # plain dict input: the value, as the original returns


async def test_plain_tool_async_path_and_sync_only_tool() -> None:
    add = StructuredTool.from_function(func=_add, coroutine=_aadd, name="add", description="Add two numbers.")
    sync_only = StructuredTool.from_function(func=_add, name="add", description="Add two numbers.")
    guarded, guarded_sync = wrap_tools([add, sync_only], PLAIN_POLICY)
    assert guarded_sync.coroutine is None  # no async path invented: ainvoke runs the sync one in a thread

    for tool in (guarded, guarded_sync):
        ok = await tool.ainvoke(tool_call("add", {"a": 1, "b": 2}))
        assert (ok.content, ok.status) == ("3", "success")
        refused = await tool.ainvoke(tool_call("add", {"a": -5, "b": 2}))
        assert json.loads(refused.content)["code"] == "denied"


@dataclass
class Ctx:
    user_id: str


def test_runtime_injection_and_tool_errors_pass_through() -> None:
    def whoami(runtime: ToolRuntime[Ctx]) -> str:
        """Say who calls."""
        return f"{runtime.context.user_id}:{runtime.tool_call_id}"

    def fails(x: int) -> str:
        """Always fails."""
        raise ToolException(f"bad x {x}")

    whoami_tool = StructuredTool.from_function(whoami)
    fails_tool = StructuredTool.from_function(fails, handle_tool_error=True)
    sink = MemorySink()
    guarded = wrap_tools([whoami_tool, fails_tool], PLAIN_POLICY, audit=sink)
    # runtime is injected, so it is still not part of what the model is shown
    assert guarded[0].tool_call_schema.model_json_schema()["properties"] == {}

    model = script(call("whoami", {}, "id-1"), call("fails", {"x": 3}, "id-2"))
    agent = create_agent(model, guarded, context_schema=Ctx)
    state = agent.invoke({"messages": [("user", "go")]}, context=Ctx("dora"))
    first, second = tool_messages(state["messages"])
    assert (first.content, first.status) == ("dora:id-1", "success")
    # The tool's own ToolException is handled as the original tool handles it, not turned into a violation.
    assert (second.content, second.status) == ("bad x 3", "error")
    # The context's user_id attribute is the identity; the injected runtime is not an argument the policy sees.
    assert [(e["tool"], e["identity"], e["outcome"]) for e in sink.events] == [
        ("whoami", "dora", "ok"),
        ("fails", "dora", "error"),
    ]
    assert sink.events[1]["args"].keys() == {"x"}


def test_unsupported_tool_type_is_refused_clearly() -> None:
    from langchain_core.tools import BaseTool

    class Custom(BaseTool):
        name: str = "custom"
        description: str = "custom"

        def _run(self, *args: Any, **kwargs: Any) -> str:
            return "x"

    with pytest.raises(TypeError, match="GuardMiddleware"):
        wrap_tools([Custom()], PLAIN_POLICY)


def test_policy_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(PLAIN_POLICY))
    add = StructuredTool.from_function(func=_add, name="add", description="Add two numbers.")
    (guarded,) = wrap_tools([add], path)
    assert json.loads(guarded.invoke(tool_call("add", {"a": -1, "b": 1})).content)["code"] == "denied"
