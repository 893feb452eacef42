"""Smuggling through ``mcp-guard proxy`` (SPEC section 10, "Forward what was judged").

Each attempt goes as raw bytes into the real proxy process, in front of a real upstream whose own SDK reads
what the proxy forwards: the Python MCP SDK (``fixture_server.py recording``: ``TextIOWrapper`` with universal
newlines, so a bare CR ends a message there) and the npm TypeScript SDK (``ts_recording_server.mjs``: its
``ReadBuffer`` splits on LF and decodes invalid UTF-8 to U+FFFD). The judge is what the upstream recorded:

- no hidden tool and no ``deny_if``-forbidden call ever runs, however it is wrapped;
- every call that ran has exactly one audit event, and ran with exactly the arguments that event describes
  (the audit's HMAC fingerprints, keyed by this test, against the values the upstream recorded);
- what is well-formed still runs: a message split across writes, a CRLF line ending, line separators inside
  strings.

The relay must also answer each refused message with a JSON-RPC error (never leave the client waiting on an
id it could read). ``--no-relay`` is read by the SDK's own stdio server and forwarded from its parse: the same
far-side rules hold there.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mcp_guard._audit.events import describe_value
from tests.support.servers import fixture_server, hostile_upstream
from tests.support.servers.proxy_support import proxy_command, write_policy
from tests.support.servers.raw_wire import INITIALIZED, call, initialize, line, spawn, typescript_server

KEY = "smuggling-test-fingerprint-key"
FORBIDDEN = 100  # transfer: deny_if args.amount > FORBIDDEN
POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "hide": ["admin_reset"],
    "tools": {"transfer": {"deny_if": {"args.amount": {"gt": FORBIDDEN}}}},
}
OVERSIZE = 9 << 20  # above the relay's 8 MiB bound on one client message


def python_server() -> list[str]:
    return fixture_server.command("recording")


UPSTREAMS: dict[str, Callable[[], list[str]]] = {"python": python_server, "typescript": typescript_server}


def cr_wrapped(rid: int, inner: dict[str, Any]) -> bytes:
    """One JSON object to a strict reader (CR is JSON whitespace), three lines to a universal-newline reader:
    ``{...,"x":`` / the inner message / ``}``. The strict reader sees a get_balance call carrying a value."""
    outer = json.dumps(call(rid, "get_balance", asset="BTC"))[:-1]
    return f'{outer},"x":\r{json.dumps(inner)}\r}}\n'.encode()


def transfer_line(rid: int, amount: Any, memo: str = "") -> str:
    return json.dumps(call(rid, "transfer", amount=amount, memo=memo))


# id -> the bytes sent. Ids >= 100 are messages hidden inside another one.
ATTACKS: dict[int, bytes] = {
    # A hidden tool and a forbidden amount, each behind a bare CR inside an allowed call.
    1: cr_wrapped(1, call(101, "admin_reset")),
    2: cr_wrapped(2, call(102, "transfer", amount=1_000_000)),
    # A bare CR as whitespace, nothing hidden: still two messages to the Python SDK, so refused.
    3: transfer_line(3, 3).replace(', "id"', ',\r"id"').encode() + b"\n",
    # Duplicate keys: which one counts differs between parsers (first wins for some).
    4: b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"transfer",'
    b'"arguments":{"amount":1000000,"amount":4}}}\n',
    5: b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"admin_reset","name":"get_balance",'
    b'"arguments":{"asset":"BTC"}}}\n',
    # A UTF-8 byte order mark, a NUL, a byte that is not UTF-8, a surrogate encoded in UTF-8 (CESU-8):
    # Python's json.loads(bytes) takes the BOM and the surrogate; both SDKs read U+FFFD or fail.
    6: b"\xef\xbb\xbf" + transfer_line(6, 6).encode() + b"\n",
    7: transfer_line(7, 7, "a\x00b").replace("\\u0000", "\x00").encode() + b"\n",
    8: transfer_line(8, 8, "@").replace("@", "\udcff").encode("utf-8", "surrogateescape") + b"\n",
    9: transfer_line(9, 9, "@").encode().replace(b"@", b"\xed\xa0\x80") + b"\n",
    # An escaped lone surrogate: the Python SDK's JSON parser refuses it, JavaScript keeps it.
    10: transfer_line(10, 10, "@").replace("@", "\\ud800").encode() + b"\n",
    # Numbers JSON has no value for in a double, or that JavaScript reads as another number.
    11: transfer_line(11, 0).replace('"amount": 0', '"amount": 1e400').encode() + b"\n",
    12: transfer_line(12, 2**53 + 1).encode() + b"\n",
    15: line(call(15, "get_balance", asset="BTC", nonce=2**53 + 1)),  # allowed, but JavaScript reads 2**53
    # Two messages on one line (one write, no newline between them).
    13: (json.dumps(call(13, "get_balance", asset="BTC")) + json.dumps(call(113, "admin_reset"))).encode() + b"\n",
    # More than the bound on one message; its tail, past the bound, is a complete hidden call.
    14: b" " * OVERSIZE + line(call(114, "admin_reset")),
}
# Well-formed, and so run: line separators inside a string, a CRLF ending, a message split across writes.
SEPARATORS = "a\u2028b\u2029c\x85d\re\x0bf\x0cg"
WELL_FORMED: dict[int, bytes] = {
    20: json.dumps(call(20, "transfer", amount=20, memo=SEPARATORS), ensure_ascii=False).encode() + b"\n",
    21: line(call(21, "transfer", amount=21)).replace(b"\n", b"\r\n"),
}
SPLIT = line(call(22, "transfer", amount=22, memo="split"))
SENTINEL = 99
# What the relay must have run, in any order (the upstream handles requests concurrently).
RAN = Counter({("transfer", 20): 1, ("transfer", 21): 1, ("transfer", 22): 1, ("get_balance", None): 1})


def read_record(path: Path) -> list[dict[str, Any]]:
    # Split on LF only: JavaScript's JSON.stringify leaves U+2028 raw, and str.splitlines() splits on it.
    return [json.loads(raw) for raw in path.read_bytes().split(b"\n") if raw] if path.exists() else []


def audit_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in path.read_bytes().split(b"\n") if raw]


def ran_as_audited(record: list[dict[str, Any]], events: list[dict[str, Any]]) -> list[str]:
    """Every recorded call paired with its own audit event: same tool, an outcome that let it run, and each
    argument the event describes with the fingerprint of the value the upstream ran with. The problems."""
    problems = []
    free = [e for e in events if e["decision"] == "allow" and e["outcome"] in ("ok", "error", "cancelled")]
    for ran in record:
        match = next((e for e in free if _same_call(ran, e)), None)
        if match is None:
            problems.append(f"ran with no audit event of its own: {ran!r}")
        else:
            free.remove(match)
    problems += [f"an audit event with no call that ran: {e!r}" for e in free]
    return problems


def _same_call(ran: dict[str, Any], event: dict[str, Any]) -> bool:
    if ran["tool"] != event["tool"] or not isinstance(event["args"], dict):
        return False
    return all(
        name in ran["args"] and describe_value(ran["args"][name], KEY.encode()).get("fp") == summary.get("fp")
        for name, summary in event["args"].items()
    )


def never_ran_forbidden(record: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        r
        for r in record
        if r["tool"] == "admin_reset"
        or (r["tool"] == "transfer" and not (isinstance(r["args"].get("amount"), int) and r["args"]["amount"] <= 100))
    ]


async def run_attacks(argv: list[str], env: dict[str, str]) -> dict[Any, list[dict[str, Any]]]:
    """Open a session, send every attempt, then a sentinel call; the answers seen, by id."""
    async with spawn(argv, env) as wire:
        listed = await wire.start()
        assert "admin_reset" not in {t["name"] for t in listed["result"]["tools"]}
        for raw in (*ATTACKS.values(), *WELL_FORMED.values()):
            await wire.send(raw)
        # A message split across three writes: nothing may act on it before its newline.
        for part in (SPLIT[:20], SPLIT[20:45], SPLIT[45:]):
            await wire.send(part)
            await asyncio.sleep(0.05)  # separate reads on the proxy's side, not a wait for a result
        await wire.request(call(SENTINEL, "get_balance", asset="BTC"))
        for rid in (*WELL_FORMED, 22):
            await wire.answer_to(rid)
        answers: dict[Any, list[dict[str, Any]]] = {}
        for message in wire.seen:
            if "method" not in message:
                answers.setdefault(message.get("id"), []).append(message)
    return answers


@pytest.mark.parametrize("upstream", list(UPSTREAMS))
async def test_the_relay_forwards_only_what_it_judged(tmp_path: Path, upstream: str) -> None:
    command = UPSTREAMS[upstream]()
    record, audit = tmp_path / "record.jsonl", tmp_path / "audit.jsonl"
    policy = write_policy(tmp_path / "policy.json", POLICY)
    argv = proxy_command(policy, "--audit", str(audit), upstream=command)
    answers = await run_attacks(argv, {"RECORD_FILE": str(record), "MCP_GUARD_AUDIT_KEY": KEY})

    ran = read_record(record)
    assert never_ran_forbidden(ran) == []
    assert ran_as_audited(ran, audit_events(audit)) == []
    assert Counter((r["tool"], r["args"].get("amount")) for r in ran) == RAN
    assert [r["args"]["memo"] for r in ran if r["args"].get("amount") == 20] == [SEPARATORS]

    # Each refused message is answered with a JSON-RPC error: under its id where the relay could read one,
    # else under null (a parse error). None of the hidden inner ids is ever answered: they were never seen.
    for rid in ATTACKS:
        assert rid not in answers or [a.get("error", {}).get("code") for a in answers[rid]] == [-32600], answers[rid]
    assert {1, 2, 3, 4, 5, 10, 11, 12, 15} <= set(answers)
    null_errors = [a["error"]["code"] for a in answers.get(None, [])]
    assert sorted(null_errors) == [-32700] * 5 + [-32600]  # 6-9 and 13 cannot be read; 14 is too long
    assert not any(rid in answers for rid in (101, 102, 113, 114))
    for rid in (*WELL_FORMED, 22, SENTINEL):
        assert [a.get("result", {}).get("isError", False) for a in answers[rid]] == [False]


@pytest.mark.parametrize("upstream", list(UPSTREAMS))
async def test_the_sdk_path_forwards_only_what_it_judged(tmp_path: Path, upstream: str) -> None:
    # --no-relay: the SDK's own stdio server reads the client (universal newlines, U+FFFD for bad bytes), so
    # it reads some attempts differently from the relay; but what it forwards is its parse, re-serialised, and
    # parsed again by the relay, which judges it by the relay's rules.
    command = UPSTREAMS[upstream]()
    record, audit = tmp_path / "record.jsonl", tmp_path / "audit.jsonl"
    policy = write_policy(tmp_path / "policy.json", POLICY)
    argv = proxy_command(policy, "--audit", str(audit), "--no-relay", upstream=command)
    answers = await run_attacks(argv, {"RECORD_FILE": str(record), "MCP_GUARD_AUDIT_KEY": KEY})

    ran = read_record(record)
    assert never_ran_forbidden(ran) == []
    assert ran_as_audited(ran, audit_events(audit)) == []
    assert Counter((r["tool"], r["args"].get("amount")) for r in ran) >= RAN
    # The SDK parsed 2**53 + 1 exactly; the relay refuses it (as on its own path) rather than let a TypeScript
    # upstream round it.
    assert [a["error"]["code"] for a in answers[15]] == [-32600]


def strict_object(raw: bytes) -> dict[str, Any]:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        assert len({k for k, _ in pairs}) == len(pairs), f"duplicate keys in {raw!r}"
        return dict(pairs)

    parsed = json.loads(raw.decode("ascii"), object_pairs_hook=unique)
    assert isinstance(parsed, dict)
    return parsed


async def test_the_relay_forwards_only_what_it_parsed_from_the_upstream_too(tmp_path: Path) -> None:
    # The other direction, from an upstream that writes what no SDK does (tests/support/servers/hostile_upstream.py).
    record = tmp_path / "received.jsonl"
    policy = write_policy(tmp_path / "policy.json", POLICY)
    argv = proxy_command(policy, upstream=[sys.executable, str(Path(hostile_upstream.__file__))])
    async with spawn(argv, {"RECORD_FILE": str(record)}) as wire:
        await wire.request(initialize())
        await wire.send(INITIALIZED)
        smuggled = await wire.request({"jsonrpc": "2.0", "id": "cr", "method": "tools/list"})
        doubled = await wire.request({"jsonrpc": "2.0", "id": "dup", "method": "tools/list"})
        listed = await wire.request({"jsonrpc": "2.0", "id": "ok", "method": "tools/list"})
        echoed = await wire.request(call(1, "echo"))
        asked = await wire.request(call(2, "ask"))
    # Refused answers reach the client as errors under their ids, never as a listing of any kind.
    assert smuggled["error"]["code"] == doubled["error"]["code"] == -32600
    tools = listed["result"]["tools"]
    assert [t["name"] for t in tools] == ["echo", "ask"]
    assert tools[0]["description"] == f"says {hostile_upstream.SEPARATED}"
    assert echoed["result"]["content"][0]["text"] == hostile_upstream.SEPARATED
    assert echoed["result"]["structuredContent"]["big"] == hostile_upstream.BIG  # not judged: passed as it is
    assert asked["result"]["content"][0]["text"] == "asked"
    # Every line the client got: ASCII (no raw separator any reader could split on), no CR, one strict object.
    assert wire.lines
    for raw in wire.lines:
        assert b"\r" not in raw
        strict_object(raw)
        assert b"admin_reset" not in raw
    assert not any(m.get("method") == "sampling/createMessage" for m in wire.seen)
    # The upstream's own request with duplicate keys was refused back to it, under its id.
    received = [json.loads(raw) for raw in record.read_bytes().split(b"\n") if raw]
    assert [m["error"]["code"] for m in received if m.get("id") == "s1"] == [-32600]
