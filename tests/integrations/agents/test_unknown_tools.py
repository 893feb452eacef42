"""Agents SDK: a model's call to a hidden tool, or to a tool that does not exist, never ends the run (spec section 10).

Through every entry point (``policy_guardrail``, ``guard_tools``, ``guard_tools`` that keeps every tool back,
``guard_mcp_server``), every runner (``Runner.run``, ``run_sync``, ``run_streamed``), with approvals pausing the
run, and both ways: with the public ``RunConfig`` from ``guard_run_config`` (run with the private lookup
fallback taken out, to show the public hooks alone suffice) and without it (the fallback). Judged at the far
side: what the model received as the tool's output, what the real recording MCP server (or the function tool
itself) ran, and the audit events. Before this, ``guard_tools`` whose tools were all hidden, and any unknown
name, ended the run with ``ModelBehaviorError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agents import (
    Agent,
    RunConfig,
    Runner,
    ToolInputGuardrailTripwireTriggered,
    function_tool,
    set_tracing_disabled,
)
from agents.exceptions import ModelBehaviorError
from agents.mcp import MCPServerStdio
from agents.run_internal import turn_resolution
from agents.testing import ScriptedModel

from mcp_guard import Guard, MemorySink
from mcp_guard.integrations.openai_agents import (
    guard_mcp_server,
    guard_run_config,
    guard_tools,
    policy_guardrail,
    unguard_mcp_server,
)
from tests.support.agents_helpers import call, script, tool_outputs, tools_sent, violation
from tests.support.marks import module_loop
from tests.support.servers.recording_server import read_record

# Not a module-wide pytestmark: the run_sync tests are plain functions (run_sync needs no running event loop).
set_tracing_disabled(True)

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "hide": ["admin_reset"],
    "tools": {"transfer": {"approve_if": {"args.amount": {"gt": 1000}}}},
}
UNKNOWN_REASON = 'no tool named "no_such_tool" is available to this agent'
ENTRIES = ["policy_guardrail", "guard_tools", "guard_tools_all_hidden", "guard_mcp_server"]
CONFIGS = ["guard_run_config", "fallback"]


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "agents_recording_server" in request.fixturenames:
        unguard_mcp_server(request.getfixturevalue("agents_recording_server"))


@pytest.fixture(params=CONFIGS)
def config(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``guard_run_config``: with the private lookup fallback taken out, so only the SDK's public hooks answer."""
    if request.param == "guard_run_config":
        guard_tools([], Guard(POLICY))  # the fallback is installed once per process: install it, then take it out
        lookup = turn_resolution.process_model_response
        monkeypatch.setattr(turn_resolution, "process_model_response", getattr(lookup, "_mcp_guard_original", lookup))
    return str(request.param)


def function_tools(ran: list[str]) -> dict[str, Any]:
    """The exchange's tools as function tools that note each run in ``ran`` (their far side)."""

    @function_tool
    def admin_reset() -> str:
        """Reset the account."""
        ran.append("admin_reset")
        return "reset"

    @function_tool
    def get_balance(asset: str) -> str:
        """Read a balance."""
        ran.append("get_balance")
        return "1"

    @function_tool
    def transfer(amount: int) -> str:
        """Move money."""
        ran.append("transfer")
        return f"moved {amount}"

    return {"admin_reset": admin_reset, "get_balance": get_balance, "transfer": transfer}


def agent_for(
    entry: str, guard: Guard, model: ScriptedModel, ran: list[str], agents_recording_server: MCPServerStdio
) -> Agent[Any]:
    tools = function_tools(ran)
    if entry == "policy_guardrail":  # a bare guardrail hides nothing: the hidden tool is shown and refused
        guardrail = policy_guardrail(guard)
        guarded = [dataclasses.replace(t, tool_input_guardrails=[guardrail]) for t in tools.values()]
        return Agent(name="trader", model=model, tools=guarded)
    if entry == "guard_tools":
        return Agent(name="trader", model=model, tools=guard_tools(list(tools.values()), guard))
    if entry == "guard_tools_all_hidden":  # nothing left on the agent ties it to the guard
        kept = guard_tools([tools["admin_reset"]], guard)
        assert kept == []
        return Agent(name="trader", model=model, tools=kept)
    guard_mcp_server(agents_recording_server, guard)
    return Agent(name="trader", model=model, mcp_servers=[agents_recording_server])


async def drive(runner: str, agent: Agent[Any], input: Any, run_config: RunConfig | None) -> Any:
    if runner == "run_streamed":
        streamed = Runner.run_streamed(agent, input, run_config=run_config)
        async for _ in streamed.stream_events():
            pass
        return streamed
    return await Runner.run(agent, input, run_config=run_config)


def in_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` on a thread of its own (``Runner.run_sync`` needs a thread with no running event loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


def assert_answered(model: ScriptedModel, events: list[dict[str, Any]], agents_recording_server: str | None) -> None:
    """The model got the policy JSON for both calls, and each wrote exactly one audit event."""
    outputs = tool_outputs(model)
    hidden = violation(outputs["h1"]) or {}
    assert (hidden.get("code"), hidden.get("tool"), hidden.get("rule")) == ("hidden", "admin_reset", "/hide/0")
    assert hidden.get("server") == agents_recording_server
    unknown = violation(outputs["u1"]) or {}
    assert (unknown.get("code"), unknown.get("tool"), unknown.get("reason")) == (
        "hidden",
        "no_such_tool",
        UNKNOWN_REASON,
    )
    assert "rule" not in unknown
    assert "server" not in unknown
    answered = sorted(
        (e["call_id"], e["tool"], e["code"], e["outcome"]) for e in events if e["call_id"] in ("h1", "u1")
    )
    assert answered == [("h1", "admin_reset", "hidden", "denied"), ("u1", "no_such_tool", "hidden", "denied")]


# -- every entry point, every runner, with and without guard_run_config -----------------------------------


@module_loop
@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("runner", ["run", "run_streamed"])
async def test_hidden_and_unknown_calls_get_the_policy_answer(
    agents_recording_server: MCPServerStdio, agents_record: Path, entry: str, runner: str, config: str
) -> None:
    sink, ran = MemorySink(), []
    guard = Guard(POLICY, audit=sink)
    model = script([call("admin_reset", {}, "h1"), call("no_such_tool", {"x": 1}, "u1")])
    agent = agent_for(entry, guard, model, ran, agents_recording_server)
    before = len(read_record(agents_record))

    result = await drive(runner, agent, "go", guard_run_config(guard) if config == "guard_run_config" else None)

    assert result.final_output == "done"  # the run went on
    assert_answered(model, sink.events, "exchange" if entry == "guard_mcp_server" else None)
    assert ran == []  # the hidden tool never ran
    assert read_record(agents_record)[before:] == []
    if entry != "policy_guardrail":
        assert "admin_reset" not in tools_sent(model)
    unknown = next(e for e in sink.events if e["call_id"] == "u1")
    # The fallback sees the arguments; the SDK's public formatter is told only the name and the call id.
    assert unknown["args"] == ({} if config == "guard_run_config" else {"x": {"type": "integer"}})


@pytest.mark.parametrize("entry", ENTRIES)
def test_run_sync(tmp_path: Path, entry: str, config: str) -> None:
    agents_record = tmp_path / "record.jsonl"

    def main() -> tuple[ScriptedModel, list[dict[str, Any]], list[str]]:
        asyncio.set_event_loop(loop := asyncio.new_event_loop())  # run_sync runs on this thread's default loop
        srv = MCPServerStdio(params=_params(agents_record), name="exchange", client_session_timeout_seconds=30)
        try:
            if entry == "guard_mcp_server":
                loop.run_until_complete(srv.connect())
            sink, ran = MemorySink(), []
            guard = Guard(POLICY, audit=sink)
            model = script([call("admin_reset", {}, "h1"), call("no_such_tool", {"x": 1}, "u1")])
            agent = agent_for(entry, guard, model, ran, srv)
            run_config = guard_run_config(guard) if config == "guard_run_config" else None
            result = Runner.run_sync(agent, "go", run_config=run_config)
            assert result.final_output == "done"
            return model, sink.events, ran
        finally:
            if entry == "guard_mcp_server":
                loop.run_until_complete(srv.cleanup())
            asyncio.set_event_loop(None)
            loop.close()

    model, events, ran = in_thread(main)
    assert_answered(model, events, "exchange" if entry == "guard_mcp_server" else None)
    assert ran == []
    assert "admin_reset" not in [r["tool"] for r in read_record(agents_record)]


def _params(agents_record: Path) -> Any:
    from tests.support.servers.recording_server import server_params

    p = server_params(agents_record)
    return {"command": p["command"], "args": p["args"], "env": p["env"]}


# -- with the run paused for approval ----------------------------------------------------------------------


@module_loop
@pytest.mark.parametrize("entry", ["guard_tools", "guard_mcp_server"])
@pytest.mark.parametrize("approve", [True, False], ids=["approve", "reject"])
async def test_a_pause_for_approval_answers_each_call_once(
    agents_recording_server: MCPServerStdio, agents_record: Path, entry: str, approve: bool, config: str
) -> None:
    sink, ran = MemorySink(), []
    guard = Guard(POLICY, audit=sink)
    model = script(
        [call("transfer", {"amount": 5000}, "t1"), call("admin_reset", {}, "h1"), call("no_such_tool", {}, "u1")]
    )
    agent = agent_for(entry, guard, model, ran, agents_recording_server)
    run_config = guard_run_config(guard) if config == "guard_run_config" else None
    before = len(read_record(agents_record))

    paused = await Runner.run(agent, "go", run_config=run_config)
    (item,) = paused.interruptions
    state = paused.to_state()
    if approve:
        state.approve(item)
    else:
        state.reject(item)
    result = await Runner.run(agent, state, run_config=run_config)

    assert result.final_output == "done"
    outputs = tool_outputs(model)
    assert (violation(outputs["h1"]) or {}).get("code") == "hidden"
    assert (violation(outputs["u1"]) or {}).get("reason") == UNKNOWN_REASON
    ran_here = ran + [r["tool"] for r in read_record(agents_record)[before:]]
    assert ran_here == (["transfer"] if approve else [])
    events = sorted((e["call_id"], e["code"]) for e in sink.events)
    assert events == [("h1", "hidden"), ("t1", None if approve else "approval_denied"), ("u1", "hidden")]


# -- guard_run_config itself -------------------------------------------------------------------------------


@module_loop
async def test_guard_run_config_merges_and_keeps_the_users_formatter(agents_recording_server: MCPServerStdio) -> None:
    seen: list[str] = []

    def formatter(args: Any) -> str:
        seen.append(args.kind)
        return f"user says: {args.kind}"

    @function_tool
    def boom() -> str:
        """Always fails."""
        raise RuntimeError("boom")

    base = RunConfig(workflow_name="treasury", tool_error_formatter=formatter)
    guard = Guard(POLICY)
    merged = guard_run_config(guard, guard_run_config(guard, base))  # twice: still one user formatter

    assert (base.tool_not_found_behavior, base.tool_error_formatter) == ("raise_error", formatter)  # untouched
    assert (merged.workflow_name, merged.tool_not_found_behavior) == ("treasury", "return_error_to_model")
    model = script([call("boom", {}, "b1"), call("no_such_tool", {}, "u1")])
    result = await Runner.run(Agent(name="a", model=model, tools=guard_tools([boom], guard)), "go", run_config=merged)

    assert result.final_output == "done"
    outputs = tool_outputs(model)
    assert outputs["b1"] == "user says: tool_exception"
    assert (violation(outputs["u1"]) or {}).get("reason") == UNKNOWN_REASON
    assert seen == ["tool_exception"]


@module_loop
async def test_on_violation_raise_is_the_users_choice_in_the_fallback_only() -> None:
    # The fallback refuses through a guardrail, which raises as asked; the SDK's formatter cannot raise.
    guard = Guard(POLICY, on_violation="raise")
    tools = guard_tools(list(function_tools([]).values()), guard)
    with pytest.raises(ToolInputGuardrailTripwireTriggered):
        await Runner.run(Agent(name="a", model=script(call("no_such_tool", {}, "u1")), tools=tools), "go")
    model = script(call("no_such_tool", {}, "u1"))
    result = await Runner.run(Agent(name="a", model=model, tools=tools), "go", run_config=guard_run_config(guard))
    assert result.final_output == "done"
    assert (violation(tool_outputs(model)["u1"]) or {}).get("code") == "hidden"


@module_loop
async def test_an_agent_no_guard_is_tied_to_is_the_sdks_business() -> None:
    # The fallback answers only for agents that carry a guard, or for names a guard keeps back.
    tools = list(function_tools([]).values())
    guard_tools(tools, Guard(POLICY))  # a guard elsewhere in the process
    with pytest.raises(ModelBehaviorError):
        await Runner.run(Agent(name="a", model=script(call("no_such_tool", {}, "u1")), tools=tools), "go")


@module_loop
async def test_with_guard_run_config_the_private_fallback_stays_out() -> None:
    # The fallback is installed (an adapter was built) but a run with guard_run_config is answered by the SDK's
    # public formatter: it is told no arguments, so the event has none (the fallback would record {"x": ...}).
    sink = MemorySink()
    guard = Guard(POLICY, audit=sink)
    tools = guard_tools(list(function_tools([]).values()), guard)
    assert getattr(turn_resolution.process_model_response, "_mcp_guard_original", None) is not None
    model = script(call("no_such_tool", {"x": 1}, "u1"))
    result = await Runner.run(Agent(name="a", model=model, tools=tools), "go", run_config=guard_run_config(guard))
    assert result.final_output == "done"
    assert [(e["tool"], e["args"]) for e in sink.events] == [("no_such_tool", {})]
