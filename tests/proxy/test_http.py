"""``mcp-guard proxy --upstream URL --listen HOST:PORT``: real clients over streamable HTTP on 127.0.0.1.

One recording upstream (HTTP) and the proxies in front of it are started once for the module; each test
marks its calls with its own nonce and judges by what the upstream recorded for that nonce.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp.types as types
import pytest
from agents import Agent, Runner, set_tracing_disabled
from agents.mcp import MCPServerStreamableHttp
from agents.testing import ScriptedModel, assistant_message, function_call
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.support.agents_helpers import tool_outputs
from tests.support.agents_helpers import violation as output_violation
from tests.support.servers.proxy_support import (
    filesystem_server,
    free_port,
    http_processes,
    proxy_command,
    text,
    violation,
    write_policy,
)
from tests.support.servers.proxy_upstream_server import command as proxy_upstream_server
from tests.support.servers.proxy_upstream_server import read_record

set_tracing_disabled(True)

MAX_ECHO = 5
TOKENS = {f"token-{i}": f"agent-{i}" for i in range(4)}


def _policy() -> dict[str, Any]:
    return {
        "version": "1",
        "default": "allow",
        "hide": ["delete_notes"],
        "tools": {
            # A fresh counter per run: the redis-server is shared by the whole test session.
            "echo": {
                "limits": [
                    {"counter": f"echo-{uuid.uuid4().hex}", "window": "hour", "max": MAX_ECHO, "scope": "global"}
                ]
            },
            "write_note": {"deny_if": {"identity": {"eq": "mallory"}}},
            "publish": {"action": "require_approval"},
        },
    }


class Deployment:
    """One HTTP upstream and four proxies in front of it sharing one redis-server.

    Proxies 0 and 1 take the identity from a bearer token (mapped by a tokens file), 2 and 3 from ``X-User``.
    """

    def __init__(self, record: Path, proxies: list[str]) -> None:
        self.record, self.proxies = record, proxies
        self.bearer_proxy, self.header_proxy = proxies[0], proxies[2]

    def received(self, nonce: str) -> list[dict[str, Any]]:
        return [r for r in read_record(self.record) if nonce in json.dumps(r["args"])]

    def identify(self, i: int) -> dict[str, str]:
        return {"Authorization": f"Bearer token-{i}"} if i < 2 else {"X-User": f"agent-{i}"}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("proxy_http")
    record = tmp / "record.jsonl"
    policy = write_policy(tmp / "policy.json", _policy())
    tokens = tmp / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    up_port = free_port()
    upstream_argv = [*proxy_upstream_server(), "--http", str(up_port)]
    with http_processes((upstream_argv, up_port, {"RECORD_FILE": str(record)})) as (upstream,):
        specs = []
        for i in range(4):
            port = free_port()
            who = ["--identity-from", "bearer", "--tokens", str(tokens)] if i < 2 else ["--identity-header", "X-User"]
            argv = proxy_command(
                policy, "--upstream", upstream, "--listen", f"127.0.0.1:{port}", "--store", redis_server, *who
            )
            specs.append((argv, port, None))
        with http_processes(*specs) as urls:
            yield Deployment(record, urls)


@asynccontextmanager
async def client(url: str, headers: dict[str, str], **session_kwargs: Any) -> AsyncIterator[ClientSession]:
    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=120)) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write, **session_kwargs) as session,
    ):
        await session.initialize()
        yield session


async def test_identity_from_a_header(deployment: Deployment) -> None:
    nonce = uuid.uuid4().hex
    async with client(deployment.header_proxy, {"X-User": "alice"}) as alice:
        names = {t.name for t in (await alice.list_tools()).tools}
        assert names == {"echo", "write_note", "publish", "fail", "purge"}
        assert text(await alice.call_tool("write_note", {"text": f"alice {nonce}"})) == f"stored: alice {nonce}"
    async with client(deployment.header_proxy, {"X-User": "mallory"}) as mallory:
        refused = violation(await mallory.call_tool("write_note", {"text": f"mallory {nonce}"}))
        hidden = violation(await mallory.call_tool("delete_notes", {"folder": nonce}))
    assert refused is not None
    assert refused["code"] == "denied"
    assert refused["rule"] == "/tools/write_note/deny_if/identity-eq"
    assert hidden is not None
    assert hidden["code"] == "hidden"
    assert deployment.received(nonce) == [{"tool": "write_note", "args": {"text": f"alice {nonce}"}}]


async def test_requests_without_an_identity_are_refused(deployment: Deployment) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(timeout=30) as http:
        no_header = await http.post(deployment.header_proxy, json=initialize, headers=headers)
        no_token = await http.post(deployment.bearer_proxy, json=initialize, headers=headers)
        bad_token = await http.post(
            deployment.bearer_proxy, json=initialize, headers={**headers, "Authorization": "Bearer guess"}
        )
        good_token = await http.post(
            deployment.bearer_proxy, json=initialize, headers={**headers, "Authorization": "Bearer token-0"}
        )
    assert [r.status_code for r in (no_header, no_token, bad_token)] == [401, 401, 401]
    assert good_token.status_code == 200


async def test_elicitation_over_http(deployment: Deployment) -> None:
    nonce = uuid.uuid4().hex
    answers = iter(["accept", "decline"])

    async def answer(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action=next(answers))  # type: ignore[arg-type]

    async with client(deployment.header_proxy, {"X-User": "alice"}, elicitation_callback=answer) as session:
        approved = await session.call_tool("publish", {"text": f"yes {nonce}"})
        declined = violation(await session.call_tool("publish", {"text": f"no {nonce}"}))
    assert text(approved) == f"published: yes {nonce}"
    assert declined is not None
    assert declined["code"] == "approval_denied"
    assert deployment.received(nonce) == [{"tool": "publish", "args": {"text": f"yes {nonce}"}}]


# The Agents SDK's MCPServerStreamableHttp still calls the SDK's deprecated streamablehttp_client.
_SDK_DEPRECATION = pytest.mark.filterwarnings("ignore:Use `streamable_http_client` instead:DeprecationWarning")


@_SDK_DEPRECATION
async def test_agents_sdk_streamable_http_through_the_proxy(deployment: Deployment) -> None:
    nonce = uuid.uuid4().hex
    model = ScriptedModel(
        [
            [
                function_call("write_note", {"text": f"bob {nonce}"}, call_id="c1"),
                function_call("publish", {"text": f"bob {nonce}"}, call_id="c2"),
            ],
            [assistant_message("done")],
        ]
    )
    params: Any = {"url": deployment.header_proxy, "headers": {"X-User": "bob"}}
    async with MCPServerStreamableHttp(params=params, name="notes", client_session_timeout_seconds=30) as server:
        names = {t.name for t in await server.list_tools()}
        agent: Agent[Any] = Agent(name="writer", model=model, mcp_servers=[server])
        result = await Runner.run(agent, "go")
    assert result.final_output == "done"
    assert names == {"echo", "write_note", "publish", "fail", "purge"}
    outputs = tool_outputs(model)
    assert outputs["c1"] == f"stored: bob {nonce}"
    refused = output_violation(outputs["c2"])
    assert refused is not None
    assert refused["code"] == "approval_required"  # the Agents SDK client declares no elicitation
    assert deployment.received(nonce) == [{"tool": "write_note", "args": {"text": f"bob {nonce}"}}]


async def test_four_proxies_sharing_one_redis_admit_exactly_max(deployment: Deployment) -> None:
    nonce = uuid.uuid4().hex
    per_client = 4
    results: list[types.CallToolResult] = []

    async def hammer(i: int, url: str) -> None:
        async with client(url, deployment.identify(i)) as session:
            for n in range(per_client):
                results.append(await session.call_tool("echo", {"text": f"{nonce} {i} {n}"}))

    async with anyio.create_task_group() as tg:
        for i, url in enumerate(deployment.proxies):
            tg.start_soon(hammer, i, url)

    assert len(results) == 4 * per_client
    admitted = [r for r in results if not r.isError]
    limited = [violation(r) for r in results if r.isError]
    assert len(admitted) == MAX_ECHO
    assert all(v is not None and v["code"] == "rate_limited" for v in limited)
    assert len(deployment.received(nonce)) == MAX_ECHO  # what the upstream got, across all four proxies


@_SDK_DEPRECATION
async def test_agents_sdk_over_http_in_front_of_the_npm_filesystem_server(tmp_path: Path) -> None:
    server = filesystem_server()
    root = tmp_path / "files"
    root.mkdir()
    (root / "a.txt").write_text("alpha")
    policy = write_policy(
        tmp_path / "policy.json",
        {
            "version": "1",
            "default": "allow",
            "hide": ["write_file", "edit_file", "move_file"],
            # Listed (its calls are checked), unlike a tool denied outright.
            "tools": {"create_directory": {"deny_if": {"args.path": {"contains": "new"}}}},
        },
    )
    port = free_port()
    # HTTP in front, the npm server over stdio behind: one upstream process per client session.
    argv = proxy_command(policy, "--listen", f"127.0.0.1:{port}", upstream=[*server, str(root)])
    model = ScriptedModel(
        [
            [
                function_call("list_directory", {"path": str(root)}, call_id="c1"),
                function_call("create_directory", {"path": str(root / "new")}, call_id="c2"),
            ],
            [assistant_message("done")],
        ]
    )
    with http_processes((argv, port, None)) as (url,):
        params: Any = {"url": url}
        async with MCPServerStreamableHttp(params=params, name="fs", client_session_timeout_seconds=30) as mcp_server:
            names = {t.name for t in await mcp_server.list_tools()}
            agent: Agent[Any] = Agent(name="filer", model=model, mcp_servers=[mcp_server])
            result = await Runner.run(agent, "go")
    assert result.final_output == "done"
    assert {"list_directory", "create_directory"} <= names
    assert not names & {"write_file", "edit_file", "move_file"}
    outputs = tool_outputs(model)
    assert "a.txt" in outputs["c1"]
    refused = output_violation(outputs["c2"])
    assert refused is not None
    assert refused["code"] == "denied"
    assert sorted(p.name for p in root.iterdir()) == ["a.txt"]  # the upstream never created the folder
