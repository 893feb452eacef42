"""The proxy is transparent (issue 25): everything but the tool calls it judges passes both ways, on every path.

The npm ``@modelcontextprotocol/server-everything`` server is run directly and behind ``mcp-guard proxy``
(the stdio relay, ``--no-relay``, the HTTP front) with one Python ``ClientSession`` that implements the client
side: a sampling model, an elicitation form, a roots list that changes, a logging level, progress. Its
transcript (the upstream's identity and capabilities, the tools it offers this client, each tool's result,
every request the upstream made of the client, the notifications received) must be the same with and
without the proxy. The server's answers are the judge: it registers its sampling, elicitation and roots tools
only for a client that declared those capabilities, and echoes what the client answered.

The npm filesystem server judges roots: when its client declares roots, it serves the client's directories
instead of the one on its command line.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp.types as types
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from pydantic import AnyUrl, FileUrl

from tests.support.servers import fixture_server
from tests.support.servers.proxy_support import (
    REPO,
    filesystem_server,
    free_port,
    http_processes,
    proxy_command,
    text,
    write_policy,
)
from tests.support.servers.raw_wire import SdkWire, call, spawn, typescript_server

EVERYTHING_TOOLS = (
    "echo",
    "get-roots-list",
    "trigger-sampling-request",
    "trigger-elicitation-request",
    "trigger-long-running-operation",
    "toggle-simulated-logging",
    "toggle-subscriber-updates",
)
#: Allows what the transcript calls; one more tool is hidden, to show the policy still applies on each path.
POLICY: dict[str, Any] = {"version": "1", "default": "allow", "hide": ["get-env"]}
WAIT_S = 20.0  # for a notification the upstream sends on its own (the roots sync runs 350 ms after initialize)


def everything_server() -> list[str]:
    """The command line of ``@modelcontextprotocol/server-everything`` over stdio (installed by ``.ci/run``)."""
    prefix = Path(os.environ.get("MCP_GUARD_NPM_PREFIX", REPO / ".mcp-servers"))
    entry = prefix / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    node = shutil.which("node")
    if node is None or not entry.exists():
        message = f"@modelcontextprotocol/server-everything is not installed at {entry} (or node is missing)"
        if os.environ.get("MCP_GUARD_REQUIRE_NPM") == "1":
            pytest.fail(message + " and MCP_GUARD_REQUIRE_NPM=1")
        pytest.skip(message)
    return [node, str(entry), "stdio"]


Streams = tuple[Any, Any]
Connect = Callable[[], AbstractAsyncContextManager[Streams]]


@asynccontextmanager
async def over_stdio(argv: list[str]) -> AsyncIterator[Streams]:
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        yield read, write


@asynccontextmanager
async def over_http(url: str) -> AsyncIterator[Streams]:
    async with streamable_http_client(url) as (read, write, _):
        yield read, write


class Client:
    """The client side of MCP, recording everything the upstream asks of it and tells it."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots
        self.asked: list[dict[str, Any]] = []  # the upstream's requests, in order (method and what matters)
        self.logs: list[types.LoggingMessageNotificationParams] = []
        self.updated: list[str] = []
        self.heard = anyio.Event()

    def _heard(self) -> None:
        self.heard.set()
        self.heard = anyio.Event()

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait for the upstream to say something that makes ``predicate`` true (what it sends on its own)."""
        with anyio.fail_after(WAIT_S):
            while not predicate():
                await self.heard.wait()

    async def sampling(self, _ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        said = [m.content.text for m in params.messages if isinstance(m.content, types.TextContent)]
        self.asked.append({"method": "sampling/createMessage", "messages": said, "maxTokens": params.maxTokens})
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=f"sampled: {' '.join(said)}"),
            model="test-model",
            stopReason="endTurn",
        )

    async def elicitation(self, _ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.asked.append({"method": "elicitation/create", "message": params.message})
        return types.ElicitResult(action="accept", content={"name": "Ada", "check": True, "integer": 7})

    async def list_roots(self, _ctx: Any) -> types.ListRootsResult:
        self.asked.append({"method": "roots/list"})
        roots = [types.Root(uri=FileUrl(p.as_uri()), name=p.name) for p in self.roots]
        self._heard()
        return types.ListRootsResult(roots=roots)

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params)
        self._heard()

    async def on_message(self, message: Any) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ResourceUpdatedNotification
        ):
            self.updated.append(str(message.root.params.uri))
            self._heard()

    def session(self, read: Any, write: Any) -> ClientSession:
        return ClientSession(
            read,
            write,
            sampling_callback=self.sampling,
            elicitation_callback=self.elicitation,
            list_roots_callback=self.list_roots,
            logging_callback=self.logging,
            message_handler=self.on_message,
        )

    def said(self, prefix: str) -> list[str]:
        return [str(log.data) for log in self.logs if str(log.data).startswith(prefix)]


async def transcript(connect: Connect, tmp: Path) -> dict[str, Any]:
    """One client session against the everything server: what it was offered, told and asked, in order."""
    first, second = tmp / "first-root", tmp / "second-root"
    client = Client([first])
    seen: dict[str, Any] = {}
    async with connect() as (read, write), client.session(read, write) as session:
        init = await session.initialize()
        seen["server"] = init.serverInfo.name
        seen["capabilities"] = init.capabilities.model_dump(mode="json", exclude_none=True)
        # The upstream asks for the roots by itself once initialised, and says how many it got.
        await client.until(lambda: bool(client.said("Roots updated")))
        tools = (await session.list_tools()).tools
        seen["tools"] = sorted(t.name for t in tools)

        async def call(name: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> str:
            result = await session.call_tool(name, arguments or {}, **kwargs)
            return ("error: " if result.isError else "") + text(result)

        seen["roots"] = await call("get-roots-list")
        # The client's roots change: it says so (client -> upstream notification), the upstream lists again.
        client.roots = [first, second]
        await session.send_roots_list_changed()
        await client.until(lambda: "Roots updated: 2 root(s) received from client" in client.said("Roots updated"))
        seen["roots_changed"] = await call("get-roots-list")
        seen["roots_said"] = client.said("Roots updated")

        seen["sampling"] = await call("trigger-sampling-request", {"prompt": "a haiku on guards", "maxTokens": 40})
        seen["elicitation"] = await call("trigger-elicitation-request")

        progress: list[list[float | None]] = []

        async def on_progress(done: float, total: float | None, _message: str | None) -> None:
            progress.append([done, total])

        seen["long"] = await call(
            "trigger-long-running-operation", {"duration": 0.3, "steps": 3}, progress_callback=on_progress
        )
        seen["progress"] = progress

        await session.set_logging_level("debug")
        seen["logging_on"] = await call("toggle-simulated-logging")
        levels = {"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"}
        # One simulated message at once (a random level), then every 5 s: the first is enough.
        await client.until(
            lambda: any(log.level in levels and "-level message" in str(log.data) for log in client.logs)
        )
        seen["logging_off"] = await call("toggle-simulated-logging")

        resources = (await session.list_resources()).resources
        uri = str(resources[0].uri)
        await session.subscribe_resource(AnyUrl(uri))
        seen["subscribe_said"] = client.said("Received Subscribe Resource request")
        seen["updates_on"] = await call("toggle-subscriber-updates")
        await client.until(lambda: uri in client.updated)
        seen["updates_off"] = await call("toggle-subscriber-updates")
        seen["prompts"] = sorted(p.name for p in (await session.list_prompts()).prompts)

        seen["echo"] = await call("echo", {"message": "hello"})
        seen["asked"] = client.asked
    return seen


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The transcript without the proxy (the reference), and the directory its roots were under."""
    tmp = tmp_path_factory.mktemp("direct")
    command = everything_server()
    return anyio.run(transcript, lambda: over_stdio(command), tmp), tmp


def _same(direct: tuple[dict[str, Any], Path], proxied: dict[str, Any], tmp: Path) -> None:
    expected, direct_tmp = direct
    # Roots are each run's own directories; the hidden tool is the policy's doing, not the relay's.
    shown = json.loads(
        json.dumps(proxied).replace(tmp.as_uri(), direct_tmp.as_uri()).replace(str(tmp), str(direct_tmp))
    )
    assert shown["tools"] == [t for t in expected["tools"] if t != "get-env"]
    assert "get-env" in expected["tools"]
    for key in expected:
        if key != "tools":
            assert shown[key] == expected[key], key


def test_the_reference_transcript_exercises_every_feature(direct: tuple[dict[str, Any], Path]) -> None:
    """Without the proxy, the client-side features work: the comparisons below are not of two failures."""
    seen, _ = direct
    assert set(EVERYTHING_TOOLS) <= set(seen["tools"])
    assert "first-root" in seen["roots"]
    assert "second-root" in seen["roots_changed"]
    assert "sampled: Resource trigger-sampling-request context: a haiku on guards" in seen["sampling"]
    assert "User provided the requested information" in seen["elicitation"]
    assert "- Name: Ada" in seen["elicitation"]
    assert seen["progress"] == [[1.0, 3.0], [2.0, 3.0], [3.0, 3.0]]
    assert [a["method"] for a in seen["asked"]] == [
        "roots/list",
        "roots/list",
        "sampling/createMessage",
        "elicitation/create",
    ]


@pytest.mark.parametrize("mode", [[], ["--no-relay"]], ids=["relay", "no-relay"])
def test_stdio_proxy_is_transparent(direct: tuple[dict[str, Any], Path], tmp_path: Path, mode: list[str]) -> None:
    policy = write_policy(tmp_path / "policy.json", POLICY)
    argv = proxy_command(policy, *mode, upstream=everything_server())
    _same(direct, anyio.run(transcript, lambda: over_stdio(argv), tmp_path), tmp_path)


def test_http_front_is_transparent(direct: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.json", POLICY)
    port = free_port()
    argv = proxy_command(policy, "--listen", f"127.0.0.1:{port}", upstream=everything_server())
    with http_processes((argv, port, None)) as (url,):
        _same(direct, anyio.run(transcript, lambda: over_http(url), tmp_path), tmp_path)


# -- roots reach the filesystem server ---------------------------------------------------------------------


async def allowed_directories(connect: Connect, root: Path) -> str:
    """What the filesystem server allows a client whose one root is ``root``, once it has asked for the roots."""
    client = Client([root])
    expected = str(root.resolve())  # noqa: ASYNC240 - before the session: nothing else waits on this loop yet
    async with connect() as (read, write), client.session(read, write) as session:
        await session.initialize()
        await client.until(lambda: client.asked != [])  # the server asks for the roots once initialised
        with anyio.fail_after(WAIT_S):
            while True:  # the server applies the answer asynchronously (it resolves each path first)
                shown = text(await session.call_tool("list_allowed_directories", {}))
                if expected in shown:
                    return shown
                await anyio.sleep(0.05)


@pytest.mark.parametrize("path", ["relay", "no-relay", "http"])
def test_filesystem_server_sees_the_clients_roots(tmp_path: Path, path: str) -> None:
    command_line_dir, root = tmp_path / "from-command-line", tmp_path / "client-root"
    command_line_dir.mkdir()
    root.mkdir()
    upstream = [*filesystem_server(), str(command_line_dir)]
    policy = write_policy(tmp_path / "policy.json", POLICY)
    if path == "http":
        port = free_port()
        argv = proxy_command(policy, "--listen", f"127.0.0.1:{port}", upstream=upstream)
        with http_processes((argv, port, None)) as (url,):
            shown = anyio.run(allowed_directories, lambda: over_http(url), root)
    else:
        argv = proxy_command(policy, *(["--no-relay"] if path == "no-relay" else []), upstream=upstream)
        shown = anyio.run(allowed_directories, lambda: over_stdio(argv), root)
    assert str(root.resolve()) in shown
    assert str(command_line_dir.resolve()) not in shown  # replaced by the client's roots


# -- what passes is never a tool call past the guard ---------------------------------------------------------

NESTED_POLICY: dict[str, Any] = {"version": "1", "default": "allow", "hide": ["admin_reset"]}


def carriers() -> list[dict[str, Any]]:
    """Client messages that pass the proxy unjudged (answers, notifications), each carrying a hidden call."""
    hidden = call(901, "admin_reset")
    return [
        # An answer (to a request the upstream never made, as to a sampling request it did) holding a call.
        {"jsonrpc": "2.0", "id": "sampled-1", "result": {"role": "assistant", "model": "m", "request": hidden}},
        {"jsonrpc": "2.0", "id": 902, "result": {"content": {"type": "text", "text": json.dumps(hidden)}}},
        # Notifications holding one, in params and as their text.
        {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": 1, "progress": 1, "x": hidden},
        },
        {"jsonrpc": "2.0", "method": "notifications/roots/list_changed", "params": {"_meta": {"request": hidden}}},
        # A notification named tools/call: no id, so never judged as a call; never passed on either.
        {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "admin_reset", "arguments": {}}},
        # A request that also carries a result is a request: judged (hidden) and refused.
        {**call(903, "admin_reset"), "result": {}},
    ]


@asynccontextmanager
async def raw_session(path: str, argv_for: Callable[..., list[str]], env: dict[str, str]) -> AsyncIterator[Any]:
    if path == "http":
        port = free_port()
        with http_processes((argv_for("--listen", f"127.0.0.1:{port}"), port, env)) as (url,):
            async with streamable_http_client(url) as (read, write, _), read, write:  # this test's own ends
                yield SdkWire(read, write)
    else:
        async with spawn(argv_for(*(["--no-relay"] if path == "no-relay" else [])), env) as wire:
            yield wire


@pytest.mark.parametrize("path", ["relay", "no-relay", "http"])
@pytest.mark.parametrize("upstream", ["python", "typescript"])
async def test_nothing_carries_a_tool_call_past_the_guard(tmp_path: Path, path: str, upstream: str) -> None:
    record = tmp_path / "record.jsonl"
    command = fixture_server.command("recording") if upstream == "python" else typescript_server()
    policy = write_policy(tmp_path / "policy.json", NESTED_POLICY)

    def argv_for(*options: str) -> list[str]:
        return proxy_command(policy, *options, upstream=command)

    async with raw_session(path, argv_for, {"RECORD_FILE": str(record)}) as wire:
        listed = await wire.start()
        assert "admin_reset" not in {t["name"] for t in listed["result"]["tools"]}
        for message in carriers():
            await wire.send(message)
        # Messages reach the upstream in order: once this call ran, every carrier above had arrived.
        ran = await wire.request(call(904, "get_balance", asset="BTC"))
        assert ran["result"].get("isError", False) is False
        refused = await wire.answer_to(903)
    assert json.loads(refused["result"]["content"][0]["text"])["code"] == "hidden"
    assert [r["tool"] for r in json.loads(f"[{','.join(record.read_text().splitlines())}]")] == ["get_balance"]


# -- resumable HTTP streams ----------------------------------------------------------------------------------

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
    """``(event id, message)`` for each SSE event with data (priming events carry none)."""
    event_id, data = None, ""
    async for raw in response.aiter_lines():
        if raw.startswith("id:"):
            event_id = raw[3:].strip()
        elif raw.startswith("data:"):
            data += raw[5:].strip()
        elif raw == "":
            if data:
                yield event_id, json.loads(data)
            event_id, data = None, ""


async def lost_and_resumed(url: str) -> tuple[list[float], dict[str, Any]]:
    """Start a slow call with progress, drop its stream after the first progress, resume with Last-Event-ID:
    the progress seen after resuming, and the call's answer."""
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
        opened = await http.post(
            url, headers=HEADERS, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}
        )
        session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await http.post(url, headers={**HEADERS, **session}, json=initialized)).status_code == 202
        params = {"name": "trigger-long-running-operation", "arguments": {"duration": 1.5, "steps": 3}}
        params["_meta"] = {"progressToken": "slow"}
        request = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}
        last = None
        async with http.stream("POST", url, headers={**HEADERS, **session}, json=request) as response:
            async for event_id, message in sse_events(response):
                if message.get("method") == "notifications/progress":
                    last = event_id
                    break  # the client loses the stream here
        assert last is not None
        progress: list[float] = []
        resume = {**session, "Accept": "text/event-stream", "Last-Event-ID": last}
        async with http.stream("GET", url, headers=resume) as response:
            async for _, message in sse_events(response):
                if message.get("method") == "notifications/progress":
                    progress.append(message["params"]["progress"])
                elif message.get("id") == 2:
                    return progress, message
    raise AssertionError("the resumed stream ended without the call's answer")


def test_http_front_streams_resume_with_last_event_id(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.json", POLICY)
    port = free_port()
    argv = proxy_command(policy, "--listen", f"127.0.0.1:{port}", upstream=everything_server())
    with http_processes((argv, port, None)) as (url,):
        progress, answer = anyio.run(lost_and_resumed, url)
    assert progress == [2, 3]
    assert "Long running operation completed" in answer["result"]["content"][0]["text"]


# -- the proxy's own question and the upstream's ---------------------------------------------------------------


@contextmanager
def proxied(path: str, policy: Path, upstream: list[str]) -> Iterator[Connect]:
    """How a client reaches ``upstream`` through the proxy on ``path``."""
    if path == "http":
        port = free_port()
        argv = proxy_command(policy, "--listen", f"127.0.0.1:{port}", upstream=upstream)
        with http_processes((argv, port, None)) as (url,):
            yield lambda: over_http(url)
    else:
        argv = proxy_command(policy, *(["--no-relay"] if path == "no-relay" else []), upstream=upstream)
        yield lambda: over_stdio(argv)


async def approved_elicitation(connect: Connect, tmp: Path) -> tuple[list[str], str]:
    client = Client([tmp])
    async with connect() as (read, write), client.session(read, write) as session:
        await session.initialize()
        result = await session.call_tool("trigger-elicitation-request", {})
        # The server syncs the roots by itself after initialize: let that end before the session does (the SDK's
        # stdio client fails on a message that arrives as it closes).
        await client.until(lambda: bool(client.said("Roots updated")))
    return [a["message"] for a in client.asked if a["method"] == "elicitation/create"], text(result)


@pytest.mark.parametrize("path", ["relay", "no-relay", "http"])
def test_the_proxys_approval_and_the_upstreams_elicitation_are_two_questions(tmp_path: Path, path: str) -> None:
    # The call needs approval: the proxy asks this client (it declared elicitation) first; once approved, the
    # upstream's own elicitation reaches the same client and its answer reaches the upstream.
    approval = {"trigger-elicitation-request": {"action": "require_approval"}}
    policy = write_policy(tmp_path / "policy.json", {"version": "1", "default": "allow", "tools": approval})
    with proxied(path, policy, everything_server()) as connect:
        asked, result = anyio.run(approved_elicitation, connect, tmp_path)
    assert len(asked) == 2
    assert asked[0].startswith("Allow trigger-elicitation-request on mcp-servers/everything?")
    assert asked[1] == "Please provide inputs for the following fields:"
    assert "- Name: Ada" in result  # the upstream got the client's answer to its own question
