"""Shared pieces of the Agents SDK tests: a scripted run against a guarded server, and reading what the model got.

Offline: ``agents.testing.ScriptedModel`` plays the model, tracing is off, and the MCP server is the real
counter server (``tests/support/servers/counter_server.py``) over stdio.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from agents import Agent, RunConfig, Runner
from agents.mcp import MCPServerStdio
from agents.result import RunResult
from agents.testing import ScriptedModel, assistant_message, function_call

from tests.support.clock import FakeClock

Clock = FakeClock  # the shared fake clock (tests/support/clock.py), under the name these tests use


@contextlib.asynccontextmanager
async def counter_server(counter: Path, name: str) -> AsyncIterator[MCPServerStdio]:
    """The real counter server over stdio, as the SDK's ``MCPServerStdio`` named ``name``, counting into ``counter``."""
    from tests.support.servers.counter_server import (
        server_params,  # imported here: the recording tests need only their server
    )

    p = server_params(counter)
    params: Any = {"command": p["command"], "args": p["args"], "env": p["env"]}
    async with MCPServerStdio(params=params, name=name, client_session_timeout_seconds=30) as srv:
        yield srv


def call(tool: str, args: dict[str, Any] | str, call_id: str) -> Any:
    """One scripted function call (``args`` may be raw text, to script malformed JSON)."""
    return function_call(tool, args, call_id=call_id)


def script(*turns: Sequence[Any] | Any, final: str = "done") -> ScriptedModel:
    """A model that makes each turn's calls, then answers ``final``."""
    steps: list[Any] = [list(t) if isinstance(t, (list, tuple)) else [t] for t in turns]
    steps.append([assistant_message(final)])
    return ScriptedModel(steps)


async def run(
    model: ScriptedModel,
    *,
    mcp_servers: Sequence[Any] = (),
    tools: Sequence[Any] = (),
    context: Any = None,
    run_config: RunConfig | None = None,
) -> tuple[Agent[Any], RunResult]:
    agent: Agent[Any] = Agent(name="trader", model=model, mcp_servers=list(mcp_servers), tools=list(tools))
    result = await Runner.run(agent, "go", context=context, run_config=run_config)
    return agent, result


def tool_outputs(model: ScriptedModel, call_index: int = -1) -> dict[str, str]:
    """What the model received as tool results in one of its calls, by call id (text)."""
    outputs: dict[str, str] = {}
    for item in model.calls[call_index].input:
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            output = item["output"]
            if isinstance(output, list):  # MCP content parts
                output = "".join(part.get("text", "") for part in output)
            outputs[item["call_id"]] = output
    return outputs


def violation(text: str) -> dict[str, Any] | None:
    """The policy violation payload in a tool result, or None when the result is not one."""
    try:
        payload = json.loads(text)
    except ValueError:
        return None
    if isinstance(payload, dict) and payload.get("error") == "policy_violation":
        return payload
    return None


def tools_sent(model: ScriptedModel, call_index: int = 0) -> list[str]:
    return [t.name for t in model.calls[call_index].tools]


@contextlib.asynccontextmanager
async def recording_server(record: Path, name: str = "exchange") -> AsyncIterator[MCPServerStdio]:
    """The recording server (``support/servers/recording_server.py``) over stdio, as ``MCPServerStdio`` ``name``."""
    from tests.support.servers.recording_server import server_params as recording_params

    p = recording_params(record)
    params: Any = {"command": p["command"], "args": p["args"], "env": p["env"]}
    async with MCPServerStdio(params=params, name=name, client_session_timeout_seconds=30) as srv:
        yield srv
