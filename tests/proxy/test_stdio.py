"""``mcp-guard proxy -- CMD``: real MCP clients over stdio, through the proxy process, to real upstream servers.

The judge is what the upstream received: the recording server appends every call to a file, and the npm
filesystem server's effects are on disk. The guard's own view (results, audit) is checked only in addition.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
from agents import Agent, Runner, set_tracing_disabled
from agents.mcp import MCPServerStdio
from agents.testing import ScriptedModel, assistant_message, function_call
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from pydantic import AnyUrl

from mcp_guard import Policy
from tests.support.agents_helpers import tool_outputs
from tests.support.servers.proxy_support import (
    alive,
    filesystem_server,
    proxy_command,
    text,
    violation,
    wait_until,
    write_policy,
)
from tests.support.servers.proxy_upstream_server import command as proxy_upstream_server
from tests.support.servers.proxy_upstream_server import read_record

set_tracing_disabled(True)

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "hide": ["delete_notes"],
    "tools": {
        # Server-qualified: applies only because the proxy passes the upstream's serverInfo.name ("notes").
        "notes/echo": {"limits": [{"counter": "echo", "window": "hour", "max": 3, "scope": "global"}]},
        "write_note": {"deny_if": {"args.text": {"contains": "forbidden"}}, "reason": "no forbidden notes"},
        "publish": {"action": "require_approval", "approval": {"timeout_s": 30}},
        "fail": {"limits": [{"counter": "fail", "window": "hour", "max": 1}]},
    },
    # Applies to purge only through the annotations the upstream declares (destructiveHint).
    "classes": {"destructive": {"deny_if": {"args.folder": {"eq": "/"}}}},
}


@asynccontextmanager
async def proxied(
    argv: list[str], env: dict[str, str] | None = None, **session_kwargs: Any
) -> AsyncIterator[tuple[ClientSession, types.InitializeResult]]:
    params = StdioServerParameters(command=argv[0], args=argv[1:], env={**os.environ, **(env or {})})
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, **session_kwargs) as session,
    ):
        init = await session.initialize()
        yield session, init


# The relay is the stdio default; --no-relay serves the same session through the mcp SDK.
@pytest.mark.parametrize("mode", [[], ["--no-relay"]], ids=["relay", "sdk"])
async def test_client_session_through_the_proxy(tmp_path: Path, record: Path, mode: list[str]) -> None:
    policy = write_policy(tmp_path / "policy.json", POLICY)
    audit = tmp_path / "audit.jsonl"
    pid_file = tmp_path / "upstream.pid"
    options = ["--audit", str(audit), "--identity", "alice", *mode]
    argv = proxy_command(policy, *options, upstream=proxy_upstream_server())
    async with proxied(argv, {"RECORD_FILE": str(record), "PID_FILE": str(pid_file)}) as (session, init):
        assert init.serverInfo.name == "notes"
        assert init.capabilities.tools is not None
        assert init.capabilities.tools.listChanged is True

        listed = {t.name for t in (await session.list_tools()).tools}
        assert listed == {"echo", "write_note", "publish", "fail", "purge"}  # delete_notes is hidden

        echoes = [await session.call_tool("echo", {"text": f"e{i}"}) for i in range(4)]
        assert [text(r) for r in echoes[:3]] == ["e0", "e1", "e2"]
        limited = violation(echoes[3])
        assert limited is not None
        assert limited["code"] == "rate_limited"
        assert limited["rule"] == "/tools/notes~1echo/limits/0"
        assert limited["server"] == "notes"

        denied = violation(await session.call_tool("write_note", {"text": "a forbidden note"}))
        assert denied is not None
        assert denied["code"] == "denied"
        # The rule's own reason, then the check that fired (issue 23; the check alone before).
        assert denied["reason"] == "no forbidden notes (deny_if args.text contains 'forbidden')"
        assert text(await session.call_tool("write_note", {"text": "fine"})) == "stored: fine"

        hidden = violation(await session.call_tool("delete_notes", {"folder": "all"}))
        assert hidden is not None
        assert hidden["code"] == "hidden"

        by_class = violation(await session.call_tool("purge", {"folder": "/"}))
        assert by_class is not None
        assert (by_class["code"], by_class["rule"]) == ("denied", "/classes/destructive/deny_if/args.folder-eq")
        assert text(await session.call_tool("purge", {"folder": "tmp"})) == "purged tmp"

        # This client declared no elicitation and the guard has no other approver: refused, not asked.
        needs = violation(await session.call_tool("publish", {"text": "p"}))
        assert needs is not None
        assert needs["code"] == "approval_required"

        # An upstream isError result is the tool's own failure: passed on as is, and (count_failures off)
        # its quota is given back, so a second call under max=1 reaches the upstream too.
        failures = [await session.call_tool("fail", {"text": f"f{i}"}) for i in range(2)]
        assert all(r.isError and violation(r) is None for r in failures)
        assert [text(r) for r in failures] == ["could not f0", "could not f1"]

        # Resources and prompts pass through untouched.
        resources = await session.list_resources()
        assert [str(r.uri) for r in resources.resources] == ["notes://readme"]
        read = await session.read_resource(AnyUrl("notes://readme"))
        assert read.contents[0].text == "read me first"  # type: ignore[union-attr]
        templates = await session.list_resource_templates()
        assert [t.uriTemplate for t in templates.resourceTemplates] == ["notes://by-name/{name}"]
        by_name = await session.read_resource(AnyUrl("notes://by-name/todo"))
        assert by_name.contents[0].text == "note todo"  # type: ignore[union-attr]
        prompts = await session.list_prompts()
        assert [p.name for p in prompts.prompts] == ["summarise"]
        prompt = await session.get_prompt("summarise", {"topic": "MCP"})
        assert prompt.messages[0].content.text == "Summarise MCP in one line."  # type: ignore[union-attr]
        upstream_pid = int(pid_file.read_text())
        assert alive(upstream_pid)

    # The client is gone: so is the proxy, and it took its upstream with it.
    assert wait_until(lambda: not alive(upstream_pid)), f"upstream {upstream_pid} outlived the proxy"
    received = read_record(record)
    assert received == [
        {"tool": "echo", "args": {"text": "e0"}},
        {"tool": "echo", "args": {"text": "e1"}},
        {"tool": "echo", "args": {"text": "e2"}},
        {"tool": "write_note", "args": {"text": "fine"}},
        {"tool": "purge", "args": {"folder": "tmp"}},
        {"tool": "fail", "args": {"text": "f0"}},
        {"tool": "fail", "args": {"text": "f1"}},
    ]
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(events) == 12  # one per call, whatever the outcome
    assert {e["identity"] for e in events} == {"alice"}
    assert [e["code"] for e in events if e["decision"] == "deny"] == [
        "rate_limited",
        "denied",
        "hidden",
        "denied",
        "approval_required",
    ]


async def test_elicitation_approves_once_and_declines_once(tmp_path: Path, record: Path) -> None:
    policy = write_policy(
        tmp_path / "policy.json",
        {
            "version": "1",
            "default": "allow",
            "tools": {
                "publish": {"action": "require_approval"},
                "write_note": {"action": "require_approval", "approval": {"timeout_s": 0.3}, "redact": ["text"]},
            },
        },
    )
    asked: list[str] = []
    answers = iter(["accept", "decline"])
    late_answer_sent = anyio.Event()

    async def answer(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        if "write_note" in params.message:
            await anyio.sleep(1.0)  # slower than the rule's 0.3 s approval timeout
            late_answer_sent.set()
        return types.ElicitResult(action=next(answers, "accept"))  # type: ignore[arg-type]

    argv = proxy_command(policy, upstream=proxy_upstream_server())
    async with proxied(argv, {"RECORD_FILE": str(record)}, elicitation_callback=answer) as (session, _):
        approved = await session.call_tool("publish", {"text": "first"})
        declined = await session.call_tool("publish", {"text": "second"})
        timed_out = await session.call_tool("write_note", {"text": "slow"})
        # Let the late answer reach the proxy before the session closes (the SDK client does not like
        # messages arriving while it shuts down); the proxy ignores it.
        await late_answer_sent.wait()
        await session.send_ping()

    assert text(approved) == "published: first"
    refused = violation(declined)
    assert refused is not None
    assert (refused["code"], refused["reason"]) == ("approval_denied", "the user declined this call")
    late = violation(timed_out)
    assert late is not None
    assert late["code"] == "approval_timeout"
    assert len(asked) == 3
    # A redacted argument is not shown to the person either (their dialog is a screen that may be logged).
    assert '"text": "[redacted]"' in asked[2]
    assert "slow" not in asked[2]
    assert 'Allow publish on notes?\nArguments: {"text": "first"}' in asked[0]
    assert read_record(record) == [{"tool": "publish", "args": {"text": "first"}}]


@pytest.mark.parametrize("mode", [[], ["--no-relay"]], ids=["relay", "sdk"])
def test_upstream_ends_when_the_proxy_is_terminated(tmp_path: Path, record: Path, mode: list[str]) -> None:
    policy = write_policy(tmp_path / "policy.json", POLICY)
    pid_file = tmp_path / "upstream.pid"
    env = {**os.environ, "RECORD_FILE": str(record), "PID_FILE": str(pid_file)}
    argv = proxy_command(policy, *mode, upstream=proxy_upstream_server())
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        # The upstream serving this client: the one that answered its initialize (--no-relay first reaches the
        # upstream once on its own, to fail in one line if it is not an MCP server; that one has ended by now).
        assert proc.stdin is not None
        assert proc.stdout is not None
        initialize = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        proc.stdin.write(
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize}).encode() + b"\n"
        )
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["id"] == 1
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", timeout=30)
        pid = int(pid_file.read_text())
        assert alive(pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert wait_until(lambda: not alive(pid)), f"upstream {pid} outlived the proxy"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


async def test_agents_sdk_mcp_server_stdio_through_the_proxy(tmp_path: Path, record: Path) -> None:
    policy = write_policy(tmp_path / "policy.json", POLICY)
    argv = proxy_command(policy, upstream=proxy_upstream_server())
    params: Any = {"command": argv[0], "args": argv[1:], "env": {**os.environ, "RECORD_FILE": str(record)}}
    model = ScriptedModel(
        [
            [
                function_call("echo", {"text": "from the agent"}, call_id="c1"),
                function_call("write_note", {"text": "forbidden words"}, call_id="c2"),
            ],
            [assistant_message("done")],
        ]
    )
    async with MCPServerStdio(params=params, name="notes", client_session_timeout_seconds=30) as server:
        names = {t.name for t in await server.list_tools()}
        agent: Agent[Any] = Agent(name="writer", model=model, mcp_servers=[server])
        result = await Runner.run(agent, "go")
    assert result.final_output == "done"
    assert "delete_notes" not in names
    assert names == {"echo", "write_note", "publish", "fail", "purge"}
    outputs = tool_outputs(model)
    assert outputs["c1"] == "from the agent"
    assert '"code": "denied"' in outputs["c2"]
    assert read_record(record) == [{"tool": "echo", "args": {"text": "from the agent"}}]


async def test_third_party_filesystem_server_from_npm(tmp_path: Path) -> None:
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
            "tools": {"create_directory": {"action": "deny", "reason": "no new folders"}},
        },
    )
    async with proxied(proxy_command(policy, upstream=[*server, str(root)])) as (session, init):
        assert init.serverInfo.name == "secure-filesystem-server"
        names = {t.name for t in (await session.list_tools()).tools}
        assert {"read_text_file", "list_directory"} <= names
        assert not names & {"write_file", "edit_file", "move_file", "create_directory"}

        read = await session.call_tool("read_text_file", {"path": str(root / "a.txt")})
        assert not read.isError
        assert "alpha" in text(read)

        made = violation(await session.call_tool("create_directory", {"path": str(root / "new")}))
        written = violation(await session.call_tool("write_file", {"path": str(root / "b.txt"), "content": "x"}))
    assert made is not None
    assert made["code"] == "denied"
    assert written is not None
    assert written["code"] == "hidden"
    # The upstream never acted on either: the disk is the record.
    assert sorted(p.name for p in root.iterdir()) == ["a.txt"]


async def first_pending(inbox: Any) -> list[dict[str, Any]]:
    """The inbox's pending requests once there are any (polled: the inbox page polls the same way)."""
    with anyio.fail_after(20):
        waiting: list[dict[str, Any]] = await inbox.pending()
        while not waiting:
            await anyio.sleep(0.05)  # another process fills the inbox: nothing here to wait on
            waiting = await inbox.pending()
    return waiting


@pytest.mark.redis
async def test_clients_without_elicitation_wait_in_the_inbox(tmp_path: Path, record: Path, redis_url: str) -> None:
    # A client that cannot answer elicitation (a desktop app): the call waits in the shared inbox, and a
    # decision made there (as on the inbox page) is what the upstream gets.
    from mcp_guard import Inbox

    policy = write_policy(tmp_path / "policy.json", POLICY)
    argv = proxy_command(policy, "--inbox", redis_url, upstream=proxy_upstream_server())
    inbox = Inbox(redis_url, policy=Policy.from_dict(POLICY))
    async with proxied(argv, {"RECORD_FILE": str(record)}) as (session, _):
        results: list[types.CallToolResult] = []

        async def publish(text: str) -> None:
            results.append(await session.call_tool("publish", {"text": text}))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(publish, "approved one")
            waiting = await first_pending(inbox)
            assert [(r["tool"], r["args"]["text"]) for r in waiting] == [("publish", "approved one")]
            await inbox.decide(waiting[0]["id"], {"type": "approve"})
        assert text(results[0]) == "published: approved one"
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(publish, "rejected one")
            waiting = await first_pending(inbox)
            await inbox.decide(waiting[0]["id"], {"type": "reject", "message": "not today"})
        refused = violation(results[1])
        assert refused is not None
        assert refused["code"] == "approval_denied"
    assert [(r["tool"], r["args"]) for r in read_record(record) if r["tool"] == "publish"] == [
        ("publish", {"text": "approved one"})
    ]


async def test_a_reloaded_policy_tells_the_client_to_list_tools_again(tmp_path: Path, record: Path) -> None:
    policy = write_policy(tmp_path / "policy.json", {"version": "1", "default": "allow"})
    heard = anyio.Event()

    async def on_message(message: Any) -> None:
        root = getattr(message, "root", None)
        if isinstance(root, types.ToolListChangedNotification):
            heard.set()

    argv = proxy_command(policy, "--reload", upstream=proxy_upstream_server())
    async with proxied(argv, {"RECORD_FILE": str(record)}, message_handler=on_message) as (session, init):
        assert init.capabilities.tools is not None
        assert init.capabilities.tools.listChanged is True
        assert "publish" in {t.name for t in (await session.list_tools()).tools}
        with anyio.fail_after(20):
            # Rewritten until the watcher (which starts in the background) has put it in force.
            while not heard.is_set():
                write_policy(policy, {"version": "1", "default": "allow", "hide": ["publish"]})
                with anyio.move_on_after(0.5):
                    await heard.wait()
        assert "publish" not in {t.name for t in (await session.list_tools()).tools}
        refused = violation(await session.call_tool("publish", {"text": "x"}))
        assert refused is not None
        assert refused["code"] == "hidden"
    assert [r for r in read_record(record) if r["tool"] == "publish"] == []
