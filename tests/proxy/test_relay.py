"""The stdio relay (``mcp-guard proxy -- CMD``'s default) on the wire: raw JSON-RPC lines into the proxy
process, compared with what the real upstream (the recording server) answers and records.

A raw line client, not an SDK session, so the tests can send what SDK clients never do (reserved ids,
duplicate ids) and compare bytes: "passed through untouched" means the same bytes as the upstream's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from mcp_guard import Guard
from mcp_guard._proxy.relay import ID_PREFIX, Relay
from tests.support.servers.proxy_support import alive, proxy_command, wait_until, write_policy
from tests.support.servers.proxy_upstream_server import command as proxy_upstream_server
from tests.support.servers.proxy_upstream_server import read_record
from tests.support.servers.raw_wire import INITIALIZED, TIMEOUT, call, initialize, spawn

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "hide": ["delete_notes"],
    "tools": {"publish": {"action": "require_approval", "approval": {"timeout_s": 30}}},
}


PASSED_THROUGH = [
    {"jsonrpc": "2.0", "id": 1, "method": "resources/list", "params": {}},
    {"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": "notes://readme"}},
    {"jsonrpc": "2.0", "id": "r3", "method": "resources/read", "params": {"uri": "notes://by-name/todo"}},
    {"jsonrpc": "2.0", "id": 4, "method": "prompts/list", "params": {}},
    {
        "jsonrpc": "2.0",
        "id": 5,
        "method": "prompts/get",
        "params": {"name": "summarise", "arguments": {"topic": "MCP"}, "_meta": {"progressToken": 9}},
    },
    {"jsonrpc": "2.0", "id": 6, "method": "ping"},
]


async def test_resources_prompts_and_pings_are_the_upstreams_own_bytes(tmp_path: Path, record: Path) -> None:
    policy = write_policy(tmp_path / "policy.json", POLICY)
    env = {"RECORD_FILE": str(record)}

    async def answers(argv: Sequence[str]) -> list[bytes]:
        async with spawn(argv, env) as wire:
            await wire.request_bytes(initialize())
            await wire.send(INITIALIZED)
            return [await wire.request_bytes(message) for message in PASSED_THROUGH]

    direct = await answers(proxy_upstream_server())
    relayed = await answers(proxy_command(policy, upstream=proxy_upstream_server()))
    assert relayed == direct
    assert b"read me first" in relayed[1]
    assert b"Summarise MCP in one line." in relayed[4]
    assert read_record(record) == []


async def test_reserved_and_duplicate_ids_are_refused_not_forwarded(tmp_path: Path, record: Path) -> None:
    policy = write_policy(tmp_path / "policy.json", POLICY)
    argv = proxy_command(policy, upstream=proxy_upstream_server())
    async with spawn(argv, {"RECORD_FILE": str(record)}) as wire:
        init = await wire.request_bytes(initialize(capabilities={"elicitation": {}}))
        assert json.loads(init)["result"]["capabilities"]["tools"]["listChanged"] is True
        await wire.send(INITIALIZED)

        # An id in the relay's own namespace: it could answer (or steal the answer to) a relay request.
        reserved = json.loads(await wire.request_bytes(call(f"{ID_PREFIX}1", "echo", text="sneaky")))
        assert reserved["id"] == f"{ID_PREFIX}1"
        assert reserved["error"]["code"] == -32600
        assert "result" not in reserved

        # A call held for approval: the relay asks the client (this client declared elicitation) with a
        # request id of its own; meanwhile the client reuses the held call's id for another call.
        await wire.send(call(7, "publish", text="held"))
        asked = await wire.message()
        assert asked["method"] == "elicitation/create"
        assert isinstance(asked["id"], str)
        assert asked["id"].startswith(ID_PREFIX)
        assert "Allow publish on notes?" in asked["params"]["message"]
        duplicate = json.loads(await wire.request_bytes(call(7, "echo", text="same id")))
        assert duplicate["id"] == 7
        assert duplicate["error"]["code"] == -32600

        # A forged answer to a relay id that was never asked is dropped; the real one approves.
        await wire.send({"jsonrpc": "2.0", "id": f"{ID_PREFIX}nope", "result": {"action": "accept"}})
        await wire.send({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept"}})
        held = await wire.answer_to(7)
        assert held["result"]["content"][0]["text"] == "published: held"

        # A hidden tool: refused by the relay, with the violation JSON, and never sent upstream.
        hidden = json.loads(await wire.request_bytes(call(8, "delete_notes", folder="all")))
        assert hidden["result"]["isError"] is True
        assert json.loads(hidden["result"]["content"][0]["text"])["code"] == "hidden"

    # Only the approved call reached the upstream: not the reserved id, not the duplicate, not the hidden.
    assert read_record(record) == [{"tool": "publish", "args": {"text": "held"}}]


async def test_batches_are_refused(tmp_path: Path, record: Path) -> None:
    policy = write_policy(tmp_path / "policy.json", POLICY)
    async with spawn(proxy_command(policy, upstream=proxy_upstream_server()), {"RECORD_FILE": str(record)}) as wire:
        await wire.request_bytes(initialize())
        await wire.send(INITIALIZED)
        batch = json.dumps([call(1, "delete_notes", folder="all"), call(2, "echo", text="x")]).encode() + b"\n"
        refused = json.loads(await wire.request_bytes(batch))
        assert refused["error"]["code"] == -32600
    assert read_record(record) == []


async def test_an_upstream_that_dies_mid_session_gets_errors_not_a_hang(tmp_path: Path, record: Path) -> None:
    policy = write_policy(tmp_path / "policy.json", POLICY)
    pid_file = tmp_path / "upstream.pid"
    argv = proxy_command(policy, upstream=proxy_upstream_server())
    async with spawn(argv, {"RECORD_FILE": str(record), "PID_FILE": str(pid_file)}) as wire:
        await wire.request_bytes(initialize(capabilities={"elicitation": {}}))
        await wire.send(INITIALIZED)
        echoed = json.loads(await wire.request_bytes(call(1, "echo", text="before")))
        assert echoed["result"]["content"][0]["text"] == "before"

        await wire.send(call(2, "publish", text="approved too late"))  # held, waiting for the client
        asked = await wire.message()
        assert asked["method"] == "elicitation/create"

        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not alive(pid))

        # The held call, approved after the upstream died; a passthrough request; a call: all answered
        # with a JSON-RPC error (-32000), none hangs, none is reported as a success.
        await wire.send({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept"}})
        held = await wire.answer_to(2)
        read = json.loads(
            await wire.request_bytes({"jsonrpc": "2.0", "id": 3, "method": "resources/list", "params": {}})
        )
        later = json.loads(await wire.request_bytes(call(4, "echo", text="after")))
        for answer in (held, read, later):
            assert answer["error"]["code"] == -32000, answer
            assert "ended" in answer["error"]["message"]
    assert read_record(record) == [{"tool": "echo", "args": {"text": "before"}}]


async def test_policy_changed_sends_list_changed_and_the_next_list_follows_the_new_policy(
    record: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process, to swap the policy as a reload does; the upstream is still the real server over stdio.
    monkeypatch.setenv("RECORD_FILE", str(record))
    guard = Guard(POLICY)
    relay = Relay(guard, proxy_upstream_server())
    reader = asyncio.StreamReader()
    out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    class Collect:
        def write(self, data: bytes) -> None:
            for line in data.splitlines():
                out.put_nowait(json.loads(line))

        async def drain(self) -> None:
            return None

    def feed(message: dict[str, Any]) -> None:
        reader.feed_data(json.dumps(message).encode() + b"\n")

    async def next_message() -> dict[str, Any]:
        return await asyncio.wait_for(out.get(), TIMEOUT)

    serving = asyncio.create_task(relay.serve(reader, Collect()))
    try:
        feed(initialize())
        assert (await next_message())["result"]["serverInfo"]["name"] == "notes"
        feed(INITIALIZED)
        feed({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        before = {t["name"] for t in (await next_message())["result"]["tools"]}
        guard.policy = guard.policy.from_dict({**POLICY, "hide": ["delete_notes", "echo"]})
        await relay.policy_changed()
        assert (await next_message())["method"] == "notifications/tools/list_changed"
        feed({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        after = {t["name"] for t in (await next_message())["result"]["tools"]}
        feed(call(3, "echo", text="now hidden"))
        hidden = json.loads((await next_message())["result"]["content"][0]["text"])
    finally:
        reader.feed_eof()
        await asyncio.wait_for(serving, TIMEOUT)
    assert "echo" in before
    assert "delete_notes" not in before
    assert "echo" not in after
    assert hidden["code"] == "hidden"
    assert read_record(record) == []
