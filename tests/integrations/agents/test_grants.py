"""The Agents SDK's own "always approve" (``state.approve(item, always_approve=True)``) is an approval grant.

The SDK keeps such a yes in the run's context only: it covers later calls of that tool, with any arguments, by
that agent, in that run. mcp-guard keeps it as a ``session`` grant in the store (same tool, server, identity and
rule; any arguments, as the SDK meant), so a later run of the same session is not held again, on any worker,
and every call it covers is audited with the grant's id. Another session or another identity is held.

Judged by what the real counter server (over stdio) ran, what the SDK paused for, and the raw audit bytes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from agents import Agent, Runner, set_tracing_disabled
from agents.mcp import MCPServerStdio

from mcp_guard import Guard
from mcp_guard.integrations.openai_agents import guard_mcp_server, guard_tools, unguard_mcp_server
from tests.support.agents_helpers import call, counter_server, script, tool_outputs
from tests.support.servers.counter_server import read_record

pytestmark = pytest.mark.asyncio(loop_scope="module")

set_tracing_disabled(True)

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "tools": {"withdraw": {"action": "require_approval", "description": "withdrawals need a human"}},
}
BTC = {"asset": "BTC", "amount": 1.0, "address": "addr1"}
ETH = {"asset": "ETH", "amount": 2.0, "address": "addr2"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agents_grants") / "calls.jsonl"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(record: Path) -> AsyncIterator[MCPServerStdio]:
    async with counter_server(record, "exchange") as srv:
        yield srv


@pytest.fixture(autouse=True)
def _unguard(server: MCPServerStdio) -> Any:
    yield
    unguard_mcp_server(server)


class Audit:
    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_bytes().splitlines()] if self.path.exists() else []


async def _run(agent: Agent[Any], user: str, session: str) -> Any:
    return await Runner.run(agent, "go", context={"user_id": user, "session_id": session})


def _ran(record: Path, before: int) -> list[tuple[str, str]]:
    return [(c["tool"], c["args"]["asset"]) for c in read_record(record)[before:]]


async def test_always_approve_becomes_a_session_grant(server: MCPServerStdio, record: Path, tmp_path: Path) -> None:
    audit = Audit(tmp_path / "audit.jsonl")
    guard = Guard(POLICY, audit=str(audit.path))
    guard_mcp_server(server, guard)
    before = len(read_record(record))

    # Run 1, session s1: held; a human approves "always"; the same call again later in the run is not held.
    model = script(call("withdraw", BTC, "c1"), call("withdraw", BTC, "c2"))
    agent: Agent[Any] = Agent(name="trader", model=model, mcp_servers=[server])
    paused = await _run(agent, "alice", "s1")
    assert [(i.tool_name, i.call_id) for i in paused.interruptions] == [("withdraw", "c1")]
    assert _ran(record, before) == []
    state = paused.to_state()
    state.approve(state.get_interruptions()[0], always_approve=True)
    done = await Runner.run(agent, state)
    assert not done.interruptions
    assert done.final_output == "done"
    assert _ran(record, before) == [("withdraw", "BTC"), ("withdraw", "BTC")]
    first, second = audit.events()
    grant = first["grant"]
    assert grant.startswith("grant-")
    assert (first["outcome"], first["approval"], first["grant_scope"], first["call_id"]) == (
        "ok",
        "approve",
        "session",
        "c1",
    )
    assert (second["outcome"], second["grant"], second["call_id"]) == ("ok", grant, "c2")

    # Run 2, the same session and caller (a new run: the SDK remembers nothing): covered by the grant, any
    # arguments, as the SDK's "always" means; no pause, and audited with the grant's id.
    model = script(call("withdraw", BTC, "c3"), call("withdraw", ETH, "c4"))
    agent = Agent(name="trader", model=model, mcp_servers=[server])
    again = await _run(agent, "alice", "s1")
    assert not again.interruptions
    assert _ran(record, before)[2:] == [("withdraw", "BTC"), ("withdraw", "ETH")]
    third, fourth = audit.events()[2:]
    assert (third["approval"], third["grant"], third["call_id"]) == ("grant", grant, "c3")
    assert (fourth["approval"], fourth["grant"], fourth["call_id"]) == ("grant", grant, "c4")

    # Another session, or another caller in the same session: held again, nothing runs.
    for user, session in (("alice", "s2"), ("bob", "s1")):
        model = script(call("withdraw", BTC, "c5"))
        agent = Agent(name="trader", model=model, mcp_servers=[server])
        held = await _run(agent, user, session)
        assert [i.call_id for i in held.interruptions] == ["c5"]
    assert len(_ran(record, before)) == 4
    assert len(audit.events()) == 4


async def test_a_plain_approve_is_no_grant(server: MCPServerStdio, record: Path, tmp_path: Path) -> None:
    audit = Audit(tmp_path / "audit.jsonl")
    guard_mcp_server(server, Guard(POLICY, audit=str(audit.path)))
    model = script(call("withdraw", BTC, "c1"), call("withdraw", BTC, "c2"))
    agent: Agent[Any] = Agent(name="trader", model=model, mcp_servers=[server])
    paused = await _run(agent, "alice", "s1")
    state = paused.to_state()
    state.approve(state.get_interruptions()[0])
    resumed = await Runner.run(agent, state)
    assert [i.call_id for i in resumed.interruptions] == ["c2"]  # the next identical call asks again
    (event,) = audit.events()
    assert event["approval"] == "approve"
    assert "grant" not in event


async def test_always_approve_of_a_function_tool_is_a_grant_too(tmp_path: Path) -> None:
    from agents import function_tool

    ran: list[str] = []

    @function_tool
    def withdraw(asset: str, amount: float, address: str) -> str:
        """Withdraw funds."""
        ran.append(asset)
        return "ok"

    audit = Audit(tmp_path / "audit.jsonl")
    guard = Guard(POLICY, audit=str(audit.path))
    tools = guard_tools([withdraw], guard)
    model = script(call("withdraw", BTC, "c1"))
    agent: Agent[Any] = Agent(name="trader", model=model, tools=tools)
    paused = await _run(agent, "alice", "s1")
    state = paused.to_state()
    state.approve(state.get_interruptions()[0], always_approve=True)
    await Runner.run(agent, state)
    model = script(call("withdraw", ETH, "c2"))
    again = await _run(Agent(name="trader", model=model, tools=tools), "alice", "s1")
    assert not again.interruptions
    assert tool_outputs(model)["c2"] == "ok"
    assert ran == ["BTC", "ETH"]
    grant = audit.events()[0]["grant"]
    assert [(e["approval"], e.get("grant")) for e in audit.events()] == [("approve", grant), ("grant", grant)]
