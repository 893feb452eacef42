"""The stdio relay with many tool calls in flight at once: each still gets one answer, one audit event and one
charge, an error result's charge is given back, and a first call (before any listing) is checked against the
schema the upstream lists for it.

Raw JSON-RPC lines into the real proxy process; judged by what the upstream recorded, the raw audit lines and
the store's answer to the next call (a limit of a few calls).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.support.servers.proxy_support import proxy_command, write_policy
from tests.support.servers.proxy_upstream_server import command as proxy_upstream_server
from tests.support.servers.proxy_upstream_server import read_record

TIMEOUT = 20.0


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def _call(rid: Any, tool: str, **args: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": tool, "arguments": args}}


_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}
_INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


class _Wire:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def write(self, *messages: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(_line(m) for m in messages))  # one write: all in flight at once
        await self.proc.stdin.drain()

    async def answers(self, count: int) -> dict[Any, dict[str, Any]]:
        """The next ``count`` answers, by id (each id must be answered once)."""
        assert self.proc.stdout is not None
        got: dict[Any, dict[str, Any]] = {}
        while len(got) < count:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)
            assert raw, "the proxy closed its stdout"
            message = json.loads(raw)
            if "method" in message:
                continue
            assert message["id"] not in got, f"answered twice: {message['id']!r}"
            got[message["id"]] = message
        return got


@asynccontextmanager
async def _relay(argv: Sequence[str], record: Path) -> AsyncIterator[_Wire]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "RECORD_FILE": str(record)},
    )
    wire = _Wire(proc)
    try:
        await wire.write(_INITIALIZE)
        await wire.answers(1)
        await wire.write(_INITIALIZED)
        yield wire
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise


def _events(audit: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines() if line]


def _policy(tmp_path: Path, max_calls: int) -> Path:
    limit = {"counter": "calls", "window": "hour", "max": max_calls, "scope": "global"}
    return write_policy(
        tmp_path / "policy.json",
        {"version": "1", "default": "allow", "tools": {"echo": {"limits": [limit]}, "fail": {"limits": [limit]}}},
    )


def _is_error(answer: dict[str, Any]) -> bool:
    return bool(answer.get("result", {}).get("isError"))


async def test_calls_in_flight_together_get_one_answer_one_event_and_one_charge_each(tmp_path: Path) -> None:
    record, audit = tmp_path / "record.jsonl", tmp_path / "audit.jsonl"
    argv = proxy_command(_policy(tmp_path, 5), "--audit", str(audit), upstream=proxy_upstream_server())
    async with _relay(argv, record) as wire:
        await wire.write(_call(0, "echo", text="list first"))  # the relay lists the tools once, then decides
        assert not _is_error((await wire.answers(1))[0])
        await wire.write(*(_call(i, "echo", text=f"call {i}") for i in range(1, 7)))
        answers = await wire.answers(6)
    # Read in order, reserved in order: calls 1-4 fit the limit of 5 (call 0 took one), 5 and 6 do not.
    assert [i for i in range(1, 7) if not _is_error(answers[i])] == [1, 2, 3, 4]
    for i in (1, 2, 3, 4):
        assert answers[i]["result"]["content"][0]["text"] == f"call {i}"
    for i in (5, 6):
        assert json.loads(answers[i]["result"]["content"][0]["text"])["code"] == "rate_limited"
    assert [r["args"]["text"] for r in read_record(record)] == ["list first", "call 1", "call 2", "call 3", "call 4"]
    events = _events(audit)
    assert sorted(e["call_id"] for e in events) == [str(i) for i in range(7)]  # one event per call
    assert {e["call_id"]: e["outcome"] for e in events} == {
        **{str(i): "ok" for i in range(5)},
        "5": "denied",
        "6": "denied",
    }


async def test_an_error_result_gives_its_charge_back_after_the_answer(tmp_path: Path) -> None:
    record, audit = tmp_path / "record.jsonl", tmp_path / "audit.jsonl"
    argv = proxy_command(_policy(tmp_path, 1), "--audit", str(audit), upstream=proxy_upstream_server())
    async with _relay(argv, record) as wire:
        await wire.write(_call("a", "fail", text="fly"))
        failed = (await wire.answers(1))["a"]
        await wire.write(_call("b", "echo", text="after"))  # fits only if the failed call gave its unit back
        after = (await wire.answers(1))["b"]
        await wire.write(_call("c", "echo", text="over"))
        over = (await wire.answers(1))["c"]
    assert _is_error(failed)
    assert failed["result"]["content"][0]["text"] == "could not fly"
    assert not _is_error(after)
    assert json.loads(over["result"]["content"][0]["text"])["code"] == "rate_limited"
    assert [r["tool"] for r in read_record(record)] == ["fail", "echo"]
    assert [(e["call_id"], e["outcome"]) for e in _events(audit)] == [("a", "error"), ("b", "ok"), ("c", "denied")]


async def test_a_first_call_is_checked_against_the_schema_listed_for_it(tmp_path: Path) -> None:
    record, audit = tmp_path / "record.jsonl", tmp_path / "audit.jsonl"
    argv = proxy_command(_policy(tmp_path, 5), "--audit", str(audit), upstream=proxy_upstream_server())
    async with _relay(argv, record) as wire:
        # The first message after the handshake: the relay must list the upstream's tools before deciding.
        await wire.write(_call(1, "echo", text=5), _call(2, "echo", text="fine"))
        answers = await wire.answers(2)
    assert json.loads(answers[1]["result"]["content"][0]["text"])["code"] == "invalid_arguments"
    assert answers[2]["result"]["content"][0]["text"] == "fine"
    assert read_record(record) == [{"tool": "echo", "args": {"text": "fine"}}]
    assert [(e["call_id"], e["outcome"]) for e in _events(audit)] == [("1", "denied"), ("2", "ok")]
