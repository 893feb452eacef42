"""``GuardInterceptor`` inside ``langchain-mcp-adapters``: server-qualified rules by the request's server name,
refusals as ``isError`` results that never reach the server, all in a real ``create_agent`` loop."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_mcp_adapters.client import MultiServerMCPClient

from mcp_guard import ApprovalDecision, ApprovalRequest, Guard, MemorySink, PolicyViolation
from mcp_guard.integrations.langchain import GuardInterceptor
from tests.support.cases import CASES_POLICY
from tests.support.langchain_helpers import ExchangeServer, call, script, text_of, tool_call, tool_messages, violation
from tests.support.marks import module_loop
from tests.support.servers.counter_server import read_counts, server_params


def by_name(tools: list[Any]) -> dict[str, Any]:
    return {t.name: t for t in tools}


@module_loop
async def test_agent_refusals_never_reach_the_server(exchange_server: ExchangeServer) -> None:
    sink = MemorySink()
    tools = await exchange_server.tools(tool_interceptors=[GuardInterceptor(CASES_POLICY, audit=sink)])
    model = script(
        call("get_balance", {"asset": "BTC"}, "c1"),
        call("delete_api_key", {"key_id": "k1"}, "c2"),
        call("withdraw", {"asset": "BTC", "amount": 1, "address": "addr"}, "c3"),
        call("place_order", {"symbol": "BTCUSD", "side": "hold", "amount": 1}, "c4"),
    )
    before = exchange_server.counts()

    state = await create_agent(model, tools).ainvoke(
        {"messages": [("user", "go")]},
        context={"user_id": "erin"},
        config={"configurable": {"thread_id": "t-9"}},
    )

    assert state["messages"][-1].content == "done"
    results = tool_messages(state["messages"])
    assert [m.tool_call_id for m in results] == ["c1", "c2", "c3", "c4"]
    assert text_of(results[0]) == "BTC: 1.5"
    payloads = [violation(m) for m in results[1:]]
    assert [m.status for m in results[1:]] == ["error"] * 3
    assert [p["code"] if p else None for p in payloads] == ["hidden", "approval_required", "requirement_failed"]
    # The server-qualified rule matched because the interceptor used the request's server_name.
    assert payloads[1] is not None
    assert payloads[1]["rule"] == "/tools/exchange~1withdraw"
    assert payloads[1]["server"] == "exchange"
    assert payloads[2] is not None
    assert payloads[2]["rule"] == "/tools/place_*/require/args.side-in"
    # The model's next turn received the refusal.
    assert violation(model.seen[2][-1]) == payloads[0]

    after = exchange_server.counts()
    assert after - before == {"get_balance": 1}
    assert {(e["identity"], e["session"]) for e in sink.events} == {("erin", "t-9")}


@module_loop
async def test_server_name_decides_which_rule_applies(exchange_server: ExchangeServer) -> None:
    args = {"asset": "BTC", "amount": 1, "address": "addr"}
    on_exchange = by_name(await exchange_server.tools(tool_interceptors=[GuardInterceptor(CASES_POLICY)]))
    on_backup = by_name(
        await exchange_server.tools(server_name="backup", tool_interceptors=[GuardInterceptor(CASES_POLICY)])
    )

    held = violation(await on_exchange["withdraw"].ainvoke(tool_call("withdraw", args)))
    refused = violation(await on_backup["withdraw"].ainvoke(tool_call("withdraw", args)))

    assert held is not None
    assert refused is not None
    assert (held["code"], held["rule"]) == ("approval_required", "/tools/exchange~1withdraw")
    assert (refused["code"], refused["rule"], refused["server"]) == ("denied", "/tools/withdraw", "backup")


@module_loop
async def test_callback_approval_with_edit_reaches_the_server_with_edited_args(exchange_server: ExchangeServer) -> None:
    asked: list[ApprovalRequest] = []

    async def approver(request: ApprovalRequest) -> ApprovalDecision:
        asked.append(request)
        return ApprovalDecision.edit({**request.args, "amount": 0.25})

    tools = by_name(await exchange_server.tools(tool_interceptors=[GuardInterceptor(CASES_POLICY, approver=approver)]))
    before = exchange_server.counts()["withdraw"]

    result = await tools["withdraw"].ainvoke(tool_call("withdraw", {"asset": "BTC", "amount": 9, "address": "a1"}))

    assert result.status == "success"
    assert text_of(result) == "withdrew 0.25 BTC to a1"
    assert exchange_server.counts()["withdraw"] - before == 1
    assert asked[0].server == "exchange"
    assert asked[0].args == {"asset": "BTC", "amount": 9, "address": "a1"}


@module_loop
async def test_risk_class_comes_from_the_tool_annotations_in_the_agent(exchange_server: ExchangeServer) -> None:
    policy = {
        "version": "1",
        "default": "allow",
        "classes": {"destructive": {"action": "deny", "reason": "no destructive calls"}},
    }
    tools = await exchange_server.tools(tool_interceptors=[GuardInterceptor(policy)])
    model = script(
        call("get_balance", {"asset": "BTC"}, "c1"),
        call("withdraw", {"asset": "BTC", "amount": 1, "address": "a"}, "c2"),
    )
    before = exchange_server.counts()

    state = await create_agent(model, tools).ainvoke({"messages": [("user", "go")]})

    ok, refused = tool_messages(state["messages"])
    assert ok.status == "success"
    payload = violation(refused)
    assert payload is not None
    assert (payload["code"], payload["rule"]) == ("denied", "/classes/destructive")
    assert exchange_server.counts() - before == {"get_balance": 1}


@module_loop
async def test_raise_mode_propagates(exchange_server: ExchangeServer) -> None:
    guard = Guard(CASES_POLICY, on_violation="raise")
    tools = by_name(await exchange_server.tools(tool_interceptors=[GuardInterceptor(guard)]))
    with pytest.raises(PolicyViolation) as caught:
        await tools["delete_api_key"].ainvoke(tool_call("delete_api_key", {"key_id": "k"}))
    assert caught.value.code == "hidden"


async def test_multi_server_client_constructor_path(tmp_path: Any) -> None:
    # The documented form: tool_interceptors on MultiServerMCPClient. Its get_tools() tools open a session per
    # call, inside the interceptor chain: a refused call does not even start the server.
    counter = tmp_path / "calls.txt"
    client = MultiServerMCPClient(
        {"exchange": server_params(counter)},  # type: ignore[dict-item]
        tool_interceptors=[GuardInterceptor(CASES_POLICY)],
    )
    tools = by_name(await client.get_tools(server_name="exchange"))  # one server process, to list the tools
    refused = await tools["place_order"].ainvoke(
        tool_call("place_order", {"symbol": "X", "side": "sell", "amount": 2000})
    )
    payload = violation(refused)
    assert payload is not None
    assert (payload["code"], payload["server"]) == ("denied", "exchange")
    assert read_counts(counter) == {}
