"""Tool pinning behind the adapters and paths ``test_pins.py`` does not drive end to end (spec section 11).

For each: a real MCP server (``rugpull_server.py``) is pinned with ``mcp-guard pin``, then changes what it
lists (a rug pull of ``send_note``, or a new ``send_note_v2`` shadowing it). The drifted tool is refused with
``tool_changed`` or left out of what the model is shown, as the policy says; the other tools keep working. The
judge is what the server recorded it ran and the raw audit bytes.

Covered here: LangChain ``wrap_tools`` sync, ``GuardInterceptor`` after a rug pull, ``GuardMiddleware`` (async
and sync) with a shadowing tool, the Agents SDK ``guard_mcp_server`` with a shadowing tool and ``guard_tools``
over the server's tools (both kinds of drift), and the proxy with a shadowing tool (relay and SDK paths).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from mcp_guard._guard.pins import Lock
from mcp_guard.integrations.langchain import GuardInterceptor, GuardMiddleware, wrap_tools
from tests.support.langchain_helpers import call, script, tool_call, tool_messages
from tests.support.langchain_helpers import violation as lc_violation
from tests.support.pins_helpers import SERVER, Rug, sync_server

NOTE = {"to": "bob", "text": "hi"}


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The lock ``mcp-guard pin`` writes for the server as reviewed (pinned once: its tools do not depend on
    where its files are)."""
    first = Rug(tmp_path_factory.mktemp("pinned"))
    first.pin()
    return first.lock.read_bytes()


@pytest.fixture
def rug(tmp_path: Path, reviewed: bytes) -> Rug:
    r = Rug(tmp_path)
    r.lock.write_bytes(reviewed)
    return r


def _pinned_hash(rug: Rug, tool: str) -> str:
    return str(Lock.load(rug.lock).servers["notes"][tool]["sha256"])


def _refusals(rug: Rug) -> list[tuple[str, str, str | None]]:
    return [(e["tool"], e["rule"], e["pin"]["pinned"]) for e in rug.events() if e.get("code") == "tool_changed"]


# -- LangChain ------------------------------------------------------------------------------------------------


def test_wrap_tools_sync_refuses_a_pulled_tool_and_hides_a_shadowing_one(rug: Rug) -> None:
    guard = rug.guard(on_change="deny", on_new="hide")
    with sync_server(rug) as server:
        tools = {t.name: t for t in wrap_tools(server.tools(), guard, server="notes")}
        assert tools["send_note"].coroutine is None  # the sync path is what runs
        assert tools["send_note"].invoke(tool_call("send_note", NOTE)).status != "error"
        rug.pull("description shadow")
        tools = {t.name: t for t in wrap_tools(server.tools(), guard, server="notes")}
        refused = tools["send_note"].invoke(tool_call("send_note", {**NOTE, "bcc": "eve"}, "c2"))
        read = tools["read_notes"].invoke(tool_call("read_notes", {}, "c3"))
    assert sorted(tools) == ["read_notes", "send_note"]  # send_note_v2 is new: hidden
    assert refused.status == "error"
    assert (lc_violation(refused) or {}).get("code") == "tool_changed"
    assert read.status != "error"
    assert rug.ran() == ["send_note", "read_notes"]
    assert _refusals(rug) == [("send_note", "/pins/on_change", _pinned_hash(rug, "send_note"))]


async def test_interceptor_refuses_a_tool_pulled_after_it_was_learned(rug: Rug) -> None:
    guard = rug.guard()
    interceptor = GuardInterceptor(guard)
    client = MultiServerMCPClient({"notes": rug.connection()}, tool_interceptors=[interceptor])  # type: ignore[dict-item]
    async with client.session("notes") as session:
        tools = {t.name: t for t in await load_mcp_tools(session, server_name="notes", tool_interceptors=[interceptor])}
        interceptor.learn(list(tools.values()))
        ok = await tools["send_note"].ainvoke(tool_call("send_note", NOTE))
        rug.pull("description")
        tools = {t.name: t for t in await load_mcp_tools(session, server_name="notes", tool_interceptors=[interceptor])}
        interceptor.learn(list(tools.values()))  # the new listing
        refused = await tools["send_note"].ainvoke(tool_call("send_note", NOTE, "c2"))
        read = await tools["read_notes"].ainvoke(tool_call("read_notes", {}, "c3"))
    assert ok.status != "error"
    assert (lc_violation(refused) or {}).get("code") == "tool_changed"
    assert read.status != "error"
    assert rug.ran() == ["send_note", "read_notes"]
    assert _refusals(rug) == [("send_note", "/pins/on_change", _pinned_hash(rug, "send_note"))]


def _middleware_agent(model: Any, tools: list[Any], rug: Rug) -> Any:
    from langchain.agents import create_agent

    guard = rug.guard(on_new="hide")
    return create_agent(model, tools, middleware=[GuardMiddleware(guard)])


async def test_middleware_hides_a_shadowing_tool_from_the_model_and_refuses_a_call_to_it(rug: Rug) -> None:
    client = MultiServerMCPClient({"notes": rug.connection()})  # type: ignore[dict-item]
    rug.pull("shadow")
    async with client.session("notes") as session:
        tools = await load_mcp_tools(session, server_name="notes")
        model = script(call("send_note_v2", NOTE), call("send_note", NOTE, "c2"))
        state = await _middleware_agent(model, tools, rug).ainvoke({"messages": [("user", "send bob a note")]})
    assert model.bound[0] == ["read_notes", "send_note"]  # the shadowing tool was never shown
    refused, sent = tool_messages(state["messages"])
    assert (lc_violation(refused) or {}).get("code") == "tool_changed"
    assert lc_violation(sent) is None
    assert rug.ran() == ["send_note"]
    assert _refusals(rug) == [("send_note_v2", "/pins/on_new", None)]


def test_middleware_sync_hides_a_shadowing_tool_and_refuses_a_call_to_it(rug: Rug) -> None:
    rug.pull("shadow")
    with sync_server(rug) as server:
        model = script(call("send_note_v2", NOTE), call("send_note", NOTE, "c2"))
        state = _middleware_agent(model, server.tools(), rug).invoke({"messages": [("user", "send bob a note")]})
    assert model.bound[0] == ["read_notes", "send_note"]
    refused, sent = tool_messages(state["messages"])
    assert (lc_violation(refused) or {}).get("code") == "tool_changed"
    assert lc_violation(sent) is None
    assert rug.ran() == ["send_note"]
    assert _refusals(rug) == [("send_note_v2", "/pins/on_new", None)]


# -- the Agents SDK -------------------------------------------------------------------------------------------


def _agents_params(rug: Rug) -> Any:
    return {"command": sys.executable, "args": [str(SERVER)], "env": rug.env}


async def test_agents_mcp_server_hides_a_shadowing_tool_and_refuses_a_call_to_it(rug: Rug) -> None:
    from agents import Agent, Runner, set_tracing_disabled
    from agents.mcp import MCPServerStdio

    from mcp_guard.integrations.openai_agents import guard_mcp_server, guard_run_config
    from tests.support.agents_helpers import call as agents_call
    from tests.support.agents_helpers import script as agents_script
    from tests.support.agents_helpers import tool_outputs, tools_sent, violation

    set_tracing_disabled(True)
    rug.pull("shadow")
    guard = rug.guard(on_new="hide")
    async with MCPServerStdio(params=_agents_params(rug), name="notes", client_session_timeout_seconds=30) as server:
        guard_mcp_server(server, guard)
        model = agents_script(
            [agents_call("send_note_v2", NOTE, "c1"), agents_call("send_note", NOTE, "c2")],
        )
        agent: Agent[Any] = Agent(name="a", model=model, mcp_servers=[server])
        await Runner.run(agent, "go", run_config=guard_run_config(guard))
    assert sorted(tools_sent(model)) == ["read_notes", "send_note"]
    outputs = tool_outputs(model)
    assert (violation(outputs["c1"]) or {}).get("code") == "tool_changed"
    assert violation(outputs["c2"]) is None
    assert rug.ran() == ["send_note"]
    assert _refusals(rug) == [("send_note_v2", "/pins/on_new", None)]


@pytest.mark.parametrize("pull", ["description", "shadow"])
async def test_agents_guard_tools_over_the_servers_tools(rug: Rug, pull: str) -> None:
    """``guard_tools`` given the server's tools as FunctionTools (the SDK's own ``MCPUtil.to_function_tool``):
    the listing is compared when the tools are guarded; a pulled tool is refused, a new one kept back."""
    from agents import Agent, Runner, set_tracing_disabled
    from agents.mcp import MCPServerStdio, MCPUtil

    from mcp_guard.integrations.openai_agents import guard_run_config, guard_tools
    from tests.support.agents_helpers import call as agents_call
    from tests.support.agents_helpers import script as agents_script
    from tests.support.agents_helpers import tool_outputs, tools_sent, violation

    set_tracing_disabled(True)
    guard = rug.guard(on_change="deny", on_new="hide")
    async with MCPServerStdio(params=_agents_params(rug), name="notes", client_session_timeout_seconds=30) as server:
        agent: Agent[Any] = Agent(name="a")
        rug.pull(pull)
        listed = await server.list_tools()
        tools = guard_tools([MCPUtil.to_function_tool(t, server, False, agent) for t in listed], guard, server="notes")
        drifted = "send_note" if pull == "description" else "send_note_v2"
        model = agents_script([agents_call(drifted, NOTE, "c1"), agents_call("read_notes", {}, "c2")])
        agent = Agent(name="a", model=model, tools=tools)
        await Runner.run(agent, "go", run_config=guard_run_config(guard))
    shown = sorted(tools_sent(model))
    assert shown == (["read_notes", "send_note"])
    outputs = tool_outputs(model)
    assert (violation(outputs["c1"]) or {}).get("code") == "tool_changed"
    assert violation(outputs["c2"]) is None
    assert rug.ran() == ["read_notes"]
    rule = "/pins/on_change" if pull == "description" else "/pins/on_new"
    pinned = _pinned_hash(rug, "send_note") if pull == "description" else None
    assert _refusals(rug) == [(drifted, rule, pinned)]


# -- the proxy ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("relay", "on_new"), [(True, "deny"), (False, "hide")], ids=["relay-deny", "sdk-hide"])
async def test_proxy_refuses_or_hides_a_shadowing_tool(rug: Rug, relay: bool, on_new: str) -> None:
    policy = rug.root / "policy.json"
    rug.policy(on_new=on_new)
    cli = [sys.executable, "-c", "import sys; from mcp_guard._cli.main import main; sys.exit(main())"]
    argv = [
        *cli,
        "proxy",
        "--policy",
        str(policy),
        *([] if relay else ["--no-relay"]),
        "--",
        sys.executable,
        str(SERVER),
    ]
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=rug.env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        before = [t.name for t in (await session.list_tools()).tools]
        rug.pull("shadow")
        after = [t.name for t in (await session.list_tools()).tools]
        shadow = await session.call_tool("send_note_v2", NOTE)
        sent = await session.call_tool("send_note", NOTE)
    assert before == ["read_notes", "send_note"]
    assert after == (["read_notes", "send_note"] if on_new == "hide" else ["read_notes", "send_note", "send_note_v2"])
    assert shadow.isError
    assert json.loads(shadow.content[0].text)["code"] == "tool_changed"  # type: ignore[union-attr]
    assert not sent.isError
    assert rug.ran() == ["send_note"]


async def test_a_bare_policy_guardrail_refuses_a_pulled_tool_the_agent_holds(rug: Rug) -> None:
    """``policy_guardrail`` alone sees no listing, but it sees the agent's FunctionTool at each call: built from
    the server's listing after a rug pull (``MCPUtil.to_function_tool``), it is compared with the pins."""
    import dataclasses

    from agents import Agent, Runner, set_tracing_disabled
    from agents.mcp import MCPServerStdio, MCPUtil

    from mcp_guard.integrations.openai_agents import policy_guardrail
    from tests.support.agents_helpers import call as agents_call
    from tests.support.agents_helpers import script as agents_script
    from tests.support.agents_helpers import tool_outputs, violation

    set_tracing_disabled(True)
    guardrail = policy_guardrail(rug.guard(), server="notes")
    async with MCPServerStdio(params=_agents_params(rug), name="notes", client_session_timeout_seconds=30) as server:
        rug.pull("description")
        listed = await server.list_tools()
        tools = [
            dataclasses.replace(
                MCPUtil.to_function_tool(t, server, False, Agent(name="a")), tool_input_guardrails=[guardrail]
            )
            for t in listed
        ]
        model = agents_script([agents_call("send_note", NOTE, "c1"), agents_call("read_notes", {}, "c2")])
        await Runner.run(Agent(name="a", model=model, tools=tools), "go")
    outputs = tool_outputs(model)
    assert (violation(outputs["c1"]) or {}).get("code") == "tool_changed"
    assert violation(outputs["c2"]) is None
    assert rug.ran() == ["read_notes"]
    assert _refusals(rug) == [("send_note", "/pins/on_change", _pinned_hash(rug, "send_note"))]
