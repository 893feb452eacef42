"""Coercion bypass (issue 9) through the three LangChain adapters, judged by what the server ran.

The recording FastMCP server coerces like any pydantic server: ``"true"`` runs as ``True``, ``"100"`` as
``100``, an ``order`` sent as JSON text as an object. Each test makes a scripted model send the sixteen
attacks of ``attack_cases.SENDS`` (and one allowed control call) in one turn of ``create_agent``; the server's
record must show the control and nothing else. Async: MCP tools from langchain-mcp-adapters under
``wrap_tools``, ``GuardInterceptor`` and ``GuardMiddleware``. Sync: a plain ``StructuredTool`` forwarding to
the same server under ``wrap_tools`` and ``GuardMiddleware`` (MCP tools have no sync path).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel

from mcp_guard import Guard
from mcp_guard.integrations.langchain import GuardInterceptor, GuardMiddleware, wrap_tools
from tests.support.attack_cases import CONTROL, REFUSED_CODES, SENDS, never_approve, policy, ran_attacks
from tests.support.langchain_helpers import RecordingSession, ThreadedSession, script, tool_messages, violation
from tests.support.marks import module_loop

KINDS = ["deny_if", "approve_if"]


@pytest.fixture(scope="module")
def threaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedSession]:
    session = ThreadedSession(tmp_path_factory.mktemp("coercion-sync") / "record.jsonl").start()
    yield session
    session.close()


def guard_for(kind: str) -> Guard:
    return Guard(policy(kind), approver=never_approve if kind == "approve_if" else None)


def attack_turn() -> AIMessage:
    calls = [{"name": "transfer", "args": args, "id": label, "type": "tool_call"} for label, args in SENDS]
    calls.append({"name": "transfer", "args": CONTROL, "id": "control", "type": "tool_call"})
    return AIMessage("", tool_calls=calls)


def check(state: dict[str, Any], new_record: list[dict[str, Any]], *, payloads: bool = True) -> None:
    """Nothing but the control ran; every attack came back to the model as a refusal."""
    assert ran_attacks(new_record) == []
    assert [r["args"]["memo"] for r in new_record if r["tool"] == "transfer"] == ["control"]
    results = {m.tool_call_id: m for m in tool_messages(state["messages"])}
    assert set(results) == {label for label, _ in SENDS} | {"control"}
    assert results["control"].status == "success"
    for label, _ in SENDS:
        assert results[label].status == "error", label
        if payloads:
            payload = violation(results[label])
            assert payload is not None, (label, results[label].content)
            assert payload["code"] in REFUSED_CODES, (label, payload)


# -- async: MCP tools ------------------------------------------------------------------------------------


async def run_async(recording_session: RecordingSession, tools: list[BaseTool], middleware: list[Any]) -> None:
    before = len(recording_session.record())
    agent = create_agent(script(attack_turn()), tools, middleware=middleware)
    state = await agent.ainvoke({"messages": [("user", "go")]})
    check(state, recording_session.record()[before:])


@module_loop
@pytest.mark.parametrize("kind", KINDS)
async def test_wrap_tools_mcp(recording_session: RecordingSession, kind: str) -> None:
    await run_async(recording_session, wrap_tools(await recording_session.tools(), guard_for(kind)), [])


@module_loop
@pytest.mark.parametrize("kind", KINDS)
async def test_interceptor(recording_session: RecordingSession, kind: str) -> None:
    tools = await recording_session.tools(tool_interceptors=[GuardInterceptor(guard_for(kind))])
    await run_async(recording_session, tools, [])


@module_loop
@pytest.mark.parametrize("kind", KINDS)
async def test_interceptor_outside_an_agent_with_learned_schemas(
    recording_session: RecordingSession, kind: str
) -> None:
    # No ToolRuntime outside create_agent: the interceptor learns the schemas from the loaded tools.
    interceptor = GuardInterceptor(guard_for(kind))
    tools = await recording_session.tools(tool_interceptors=[interceptor])
    interceptor.learn(tools)
    (transfer,) = [t for t in tools if t.name == "transfer"]
    before = len(recording_session.record())
    for label, args in SENDS:
        message = await transfer.ainvoke({"type": "tool_call", "name": "transfer", "args": args, "id": label})
        payload = violation(message)
        assert payload is not None, (label, message)
        assert payload["code"] in REFUSED_CODES, (label, payload)
    assert ran_attacks(recording_session.record()[before:]) == []


@module_loop
@pytest.mark.parametrize("kind", KINDS)
async def test_middleware_mcp(recording_session: RecordingSession, kind: str) -> None:
    await run_async(recording_session, await recording_session.tools(), [GuardMiddleware(guard_for(kind))])


# -- sync: a plain tool that forwards to the server ---------------------------------------------------------


class Order(BaseModel):
    symbol: str
    qty: int


class TransferArgs(BaseModel):
    amount: int
    force: bool = False
    leverage: int = 1
    order: Order | None = None
    memo: str = ""


def plain_transfer(threaded: ThreadedSession) -> StructuredTool:
    def transfer(**kwargs: Any) -> str:
        order = kwargs.get("order")
        args = {**kwargs, "order": order.model_dump() if isinstance(order, BaseModel) else order}
        return threaded.call_sync("transfer", {k: v for k, v in args.items() if v is not None})

    return StructuredTool.from_function(
        func=transfer, name="transfer", description="Move money.", args_schema=TransferArgs
    )


def run_sync(threaded: ThreadedSession, tools: list[BaseTool], middleware: list[Any]) -> None:
    before = len(threaded.inner.record())
    agent = create_agent(script(attack_turn()), tools, middleware=middleware)
    state = agent.invoke({"messages": [("user", "go")]})
    # LangChain validates a plain tool's input with its pydantic schema before the tool (and so the guard)
    # runs: some attacks end as LangChain's validation error rather than a policy payload. The judge is the
    # server's record either way.
    check(state, threaded.inner.record()[before:], payloads=False)


@pytest.mark.parametrize("kind", KINDS)
def test_wrap_tools_sync(threaded: ThreadedSession, kind: str) -> None:
    run_sync(threaded, wrap_tools([plain_transfer(threaded)], guard_for(kind)), [])


@pytest.mark.parametrize("kind", KINDS)
def test_middleware_sync(threaded: ThreadedSession, kind: str) -> None:
    run_sync(threaded, [plain_transfer(threaded)], [GuardMiddleware(guard_for(kind))])
