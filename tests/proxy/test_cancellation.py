"""Ambiguity keeps its charge on every proxy path (SPEC section 10): the stdio relay, ``--no-relay``, HTTP.

- A client's ``notifications/cancelled`` for a call already running upstream keeps the quota (the tool may
  have acted) and writes one ``cancelled`` event: at 2/minute, two cancelled calls leave no room for a third.
- An upstream that dies mid-call keeps the quota and writes one ``error`` event.
- A cancel for a call the guard still holds (waiting for an approval in the inbox, or for a rate-limit window
  with ``on_rate_limit="wait"``) withdraws it: it never reaches the upstream, its held quota comes back, its
  inbox request is withdrawn (a late approval is refused), and its one event says ``cancelled``.

Judged at the far side: what the upstream (``fixture_server.py waiting``) recorded, the store's counters in a
real redis-server (read through ``Guard.ausage``, which changes nothing), and the raw audit JSONL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client.streamable_http import streamable_http_client

from mcp_guard import Guard, Inbox, Policy
from mcp_guard._proxy.relay import Relay
from tests.support.servers import fixture_server
from tests.support.servers.fixture_server import read_record
from tests.support.servers.proxy_support import HttpProcess, alive, free_port, proxy_command, wait_until, write_policy
from tests.support.servers.raw_wire import INITIALIZED, Messages, SdkWire, call, cancel, initialize, line, spawn

pytestmark = pytest.mark.redis

PATHS = ["relay", "sdk", "http"]


def waiting_server() -> list[str]:
    return fixture_server.command("waiting")


def policy(max_calls: int = 2) -> dict[str, Any]:
    tag = uuid.uuid4().hex  # a fresh counter per test: the redis-server is shared by the session
    limit = {"window": "minute", "max": max_calls, "scope": "global"}
    return {
        "version": "1",
        "default": "allow",
        "tools": {
            "hang": {"limits": [{**limit, "counter": f"hang-{tag}"}]},
            "transfer": {
                "action": "require_approval",
                "approval": {"timeout_s": 60},
                "limits": [{**limit, "counter": f"transfer-{tag}"}],
            },
        },
    }


@asynccontextmanager
async def proxied(path: str, tmp_path: Path, options: list[str], env: dict[str, str]) -> AsyncIterator[Messages]:
    """A client session through ``mcp-guard proxy`` on ``path``, the upstream the waiting server."""
    if path != "http":
        mode = ["--no-relay"] if path == "sdk" else []
        argv = proxy_command(tmp_path / "policy.json", *options, *mode, upstream=waiting_server())
        async with spawn(argv, env) as wire:
            yield wire
        return
    port = free_port()
    argv = proxy_command(tmp_path / "policy.json", *options, "--listen", f"127.0.0.1:{port}", upstream=waiting_server())
    proc = HttpProcess(argv, port, env)
    try:
        url = await anyio.to_thread.run_sync(proc.ready)
        async with streamable_http_client(url) as (read, write, _), read, write:  # this test's own ends
            yield SdkWire(read, write)
    finally:
        await anyio.to_thread.run_sync(proc.stop)


async def until(predicate: Callable[[], Any], what: str) -> Any:
    """Poll ``predicate`` (another process acts: nothing here to wait on) until it holds."""
    with anyio.fail_after(20):
        value = predicate()
        while not value:
            await anyio.sleep(0.05)
            value = predicate()
    assert value, what
    return value


async def until_async(predicate: Callable[[], Awaitable[Any]]) -> Any:
    with anyio.fail_after(20):
        value = await predicate()
        while not value:
            await anyio.sleep(0.05)
            value = await predicate()
    return value


def labels(record: Path) -> list[str]:
    return [r["args"].get("label", r["args"].get("amount")) for r in read_record(record)]


def outcomes(audit: Path) -> dict[str, list[str]]:
    """call_id -> the outcomes of its events, from the raw audit bytes."""
    found: dict[str, list[str]] = {}
    for raw in audit.read_bytes().split(b"\n"):
        if raw:
            event = json.loads(raw)
            found.setdefault(event["call_id"], []).append(event["outcome"])
    return found


async def used(pol: dict[str, Any], redis_url: str, tool: str) -> float:
    guard = Guard(pol, store=redis_url)
    try:
        return sum(u.used for u in await guard.ausage(tool=tool, server="exchange"))
    finally:
        await guard.aclose()


@pytest.mark.parametrize("path", PATHS)
async def test_a_call_cancelled_upstream_keeps_its_charge(tmp_path: Path, redis_url: str, path: str) -> None:
    pol = policy(max_calls=2)
    write_policy(tmp_path / "policy.json", pol)
    record, audit = tmp_path / "record.jsonl", tmp_path / "audit.jsonl"
    options = ["--store", redis_url, "--audit", str(audit)]
    async with proxied(path, tmp_path, options, {"RECORD_FILE": str(record)}) as wire:
        await wire.start()
        for label in ("a", "b"):
            await wire.send(call(label, "hang", label=label))
            await until(lambda label=label: label in labels(record), f"{label} reached the upstream")
            await wire.send(cancel(label))
        third = await wire.request(call("c", "hang", label="c"))
        refused = json.loads(third["result"]["content"][0]["text"])
        assert refused["code"] == "rate_limited"
    assert labels(record) == ["a", "b"]
    assert await used(pol, redis_url, "hang") == 2
    assert outcomes(audit) == {"a": ["cancelled"], "b": ["cancelled"], "c": ["denied"]}


@pytest.mark.parametrize("path", PATHS)
async def test_an_upstream_that_dies_mid_call_keeps_the_charge(tmp_path: Path, redis_url: str, path: str) -> None:
    pol = policy(max_calls=2)
    write_policy(tmp_path / "policy.json", pol)
    record, audit, pid_file = tmp_path / "record.jsonl", tmp_path / "audit.jsonl", tmp_path / "upstream.pid"
    options = ["--store", redis_url, "--audit", str(audit)]
    env = {"RECORD_FILE": str(record), "PID_FILE": str(pid_file)}
    async with proxied(path, tmp_path, options, env) as wire:
        await wire.start()
        await wire.send(call("a", "hang", label="a"))
        await until(lambda: labels(record) == ["a"], "the call reached the upstream")
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not alive(pid))
        answer = await wire.answer_to("a")
        assert "error" in answer or answer["result"]["isError"] is True, answer
    assert labels(record) == ["a"]
    assert await used(pol, redis_url, "hang") == 1  # the tool may have acted: nothing given back
    assert outcomes(audit) == {"a": ["error"]}


@pytest.mark.parametrize("path", PATHS)
async def test_a_cancel_withdraws_a_call_waiting_in_the_inbox(tmp_path: Path, redis_url: str, path: str) -> None:
    pol = policy(max_calls=2)
    write_policy(tmp_path / "policy.json", pol)
    record, audit = tmp_path / "record.jsonl", tmp_path / "audit.jsonl"
    options = ["--store", redis_url, "--audit", str(audit), "--inbox", redis_url]
    inbox = Inbox(redis_url, policy=Policy.from_dict(pol))
    async with proxied(path, tmp_path, options, {"RECORD_FILE": str(record)}) as wire:
        await wire.start()  # a client without elicitation: the call waits in the inbox
        await wire.send(call("t1", "transfer", amount=1))
        waiting = await until_async(inbox.pending)
        assert [(r["tool"], r["args"]) for r in waiting] == [("transfer", {"amount": 1})]
        held = await used(pol, redis_url, "transfer")
        await wire.send(cancel("t1"))

        async def withdrawn() -> bool:
            record_now = await inbox.get(waiting[0]["id"])
            return record_now is None or record_now["status"] != "pending"

        await until_async(withdrawn)
        with pytest.raises(Inbox.DecisionRefused):  # a person approving it now is told it is gone
            await inbox.decide(waiting[0]["id"], {"type": "approve"})
        after = await used(pol, redis_url, "transfer")
        # The session goes on: a later call is decided as usual (and waits; this one is left to time out).
        assert (await wire.request({"jsonrpc": "2.0", "id": "ping", "method": "ping"}))["result"] == {}
    assert held == 1  # an approval pending holds its quota...
    assert after == 0  # ...and a withdrawn one gives it back
    assert read_record(record) == []
    assert outcomes(audit) == {"t1": ["cancelled"]}


# -- a rate-limit window (on_rate_limit="wait" is an option of the Guard, not of the CLI): in-process ---------


class RelayWire(Messages):
    """The relay served in this process: raw lines in through a StreamReader, out through a sink."""

    def __init__(self, relay: Relay) -> None:
        super().__init__()
        self.reader = asyncio.StreamReader()
        self.out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        outbox = self.out

        class Sink:
            def write(self, data: bytes) -> None:
                for raw in data.splitlines():
                    outbox.put_nowait(json.loads(raw))

            async def drain(self) -> None:
                return None

        self.serving = asyncio.ensure_future(relay.serve(self.reader, Sink()))

    async def send(self, message: dict[str, Any]) -> None:
        self.reader.feed_data(line(message))

    async def _next(self) -> dict[str, Any]:
        return await self.out.get()


@asynccontextmanager
async def in_process(guard: Guard) -> AsyncIterator[Messages]:
    """The relay in this process (every CLI path is this relay), so a test can hand the guard a clock and a sleep."""
    wire = RelayWire(Relay(guard, waiting_server()))
    try:
        yield wire
    finally:
        wire.reader.feed_eof()
        await asyncio.wait_for(wire.serving, 20)


async def test_a_cancel_withdraws_a_call_waiting_for_its_rate_limit_window(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    record, audit = tmp_path / "record.jsonl", tmp_path / "audit.jsonl"
    monkeypatch.setenv("RECORD_FILE", str(record))
    pol = policy(max_calls=1)
    pol["tools"]["transfer"].pop("action")
    pol["tools"]["transfer"].pop("approval")
    sleeping = asyncio.Event()

    async def asleep(seconds: float) -> None:  # the window's wait: until the call is cancelled
        sleeping.set()
        await asyncio.Event().wait()

    guard = Guard(pol, store=redis_url, audit=str(audit), on_rate_limit="wait", max_wait_s=120, asleep=asleep)
    async with in_process(guard) as wire:
        await wire.start()
        first = await wire.request(call("t1", "transfer", amount=1))
        assert first["result"]["content"][0]["text"] == "moved 1"
        await wire.send(call("t2", "transfer", amount=2))
        await asyncio.wait_for(sleeping.wait(), 20)
        await wire.send(cancel("t2"))
        await until(lambda: "t2" in outcomes(audit), "the withdrawn call's event")
        assert (await wire.request({"jsonrpc": "2.0", "id": "ping", "method": "ping"}))["result"] == {}
    await guard.aclose()
    assert labels(record) == [1]
    assert await used(pol, redis_url, "transfer") == 1
    assert outcomes(audit) == {"t1": ["ok"], "t2": ["cancelled"]}


async def test_a_cancel_before_the_guard_sees_the_call_withdraws_it(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client never listed tools, so the relay lists the upstream before the guard sees the call; the
    # cancel arrives meanwhile (both lines in one write). The call is never decided, never sent; one event.
    record, audit = tmp_path / "record.jsonl", tmp_path / "audit.jsonl"
    monkeypatch.setenv("RECORD_FILE", str(record))
    pol = policy(max_calls=2)
    guard = Guard(pol, store=redis_url, audit=str(audit))
    async with in_process(guard) as wire:
        await wire.request(initialize())
        await wire.send(INITIALIZED)
        assert isinstance(wire, RelayWire)
        wire.reader.feed_data(line(call("h1", "hang", label="h1")) + line(cancel("h1")))
        await until(lambda: "h1" in outcomes(audit), "the withdrawn call's event")
        assert (await wire.request({"jsonrpc": "2.0", "id": "ping", "method": "ping"}))["result"] == {}
    await guard.aclose()
    assert read_record(record) == []
    assert await used(pol, redis_url, "hang") == 0
    assert outcomes(audit) == {"h1": ["cancelled"]}
    assert wire.answers("h1") == []  # MCP: no answer to a cancelled request
