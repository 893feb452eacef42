"""``mcp-guard proxy --listen ... --jwt-keys FILE``: identity and claims from bearer JWTs, real processes on 127.0.0.1.

One recording upstream (HTTP) and two proxies in front of it: one verifying with a JWKS (RSA and EC keys,
with an issuer), one with a PEM public key and ``--identity-claim email``. Judged at the far side: what
the upstream recorded, the proxies' raw audit lines, and the HTTP status and challenge a bad token gets.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mcp_guard._cli.main import main
from tests.support.jwt_helpers import (
    AUDIENCE,
    ISSUER,
    claims,
    ec_key,
    hs256_with_secret,
    public_jwk,
    public_pem,
    rsa_key,
    token,
    unsigned_token,
)
from tests.support.servers.proxy_support import free_port, http_processes, proxy_command, text, violation, write_policy
from tests.support.servers.proxy_upstream_server import command as proxy_upstream_server
from tests.support.servers.proxy_upstream_server import read_record

ISSUER_KEY, OTHER_KEY, EC_KEY = rsa_key(), rsa_key(), ec_key()
ECHO_MAX = 2


def _policy() -> dict[str, Any]:
    return {
        "version": "1",
        "default": "allow",
        "tools": {
            # Per caller: the counter is scoped by identity, so each token's subject has its own budget.
            "echo": {
                "limits": [
                    {"counter": f"echo-{uuid.uuid4().hex}", "window": "hour", "max": ECHO_MAX, "scope": "identity"}
                ]
            },
            "publish": {"require": {"claims.scope": {"contains": "payments"}}},
            "write_note": {"require": {"claims.tenant.id": {"eq": "acme"}}},
        },
    }


@dataclass
class Deployment:
    record: Path
    jwks_proxy: str
    pem_proxy: str
    jwks_audit: Path
    pem_audit: Path

    def received(self, nonce: str) -> list[dict[str, Any]]:
        return [r for r in read_record(self.record) if nonce in json.dumps(r["args"])]


def _audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("proxy_jwt")
    record, policy = tmp / "record.jsonl", write_policy(tmp / "policy.json", _policy())
    jwks = tmp / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(ISSUER_KEY, "rsa-1"), public_jwk(EC_KEY, "ec-1")]}))
    pem = tmp / "issuer.pem"
    pem.write_bytes(public_pem(ISSUER_KEY))
    up_port = free_port()
    upstream_argv = [*proxy_upstream_server(), "--http", str(up_port)]
    with http_processes((upstream_argv, up_port, {"RECORD_FILE": str(record)})) as (upstream,):
        common = ["--upstream", upstream, "--jwt-audience", AUDIENCE]
        ports = free_port(), free_port()
        jwks_argv = proxy_command(
            policy,
            *common,
            "--listen",
            f"127.0.0.1:{ports[0]}",
            "--jwt-keys",
            str(jwks),
            "--jwt-issuer",
            ISSUER,
            "--audit",
            str(tmp / "jwks_audit.jsonl"),
        )
        pem_argv = proxy_command(
            policy,
            *common,
            "--listen",
            f"127.0.0.1:{ports[1]}",
            "--jwt-keys",
            str(pem),
            "--identity-claim",
            "email",
            "--audit",
            str(tmp / "pem_audit.jsonl"),
        )
        with http_processes((jwks_argv, ports[0], None), (pem_argv, ports[1], None)) as (jwks_url, pem_url):
            yield Deployment(record, jwks_url, pem_url, tmp / "jwks_audit.jsonl", tmp / "pem_audit.jsonl")


@asynccontextmanager
async def client(url: str, bearer: str) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {bearer}"}
    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=120)) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def _code(result: Any) -> str:
    payload = violation(result)
    return payload["code"] if payload else text(result)


async def test_a_valid_tokens_sub_is_the_identity_and_its_claims_drive_conditions(deployment: Deployment) -> None:
    nonce = uuid.uuid4().hex
    seen = len(_audit(deployment.jwks_audit))
    alice = token(ISSUER_KEY, claims("alice", scope="read payments", tenant={"id": "acme"}))
    bob = token(EC_KEY, claims("bob", scope="read", tenant={"id": "globex"}), alg="ES256", kid="ec-1")
    anonymous_tenant = token(ISSUER_KEY, claims("carol", scope="payments"))
    outcomes: list[tuple[str, str, str]] = []
    async with client(deployment.jwks_proxy, alice) as session:
        for i in range(ECHO_MAX + 1):
            outcomes.append(("alice", "echo", _code(await session.call_tool("echo", {"text": f"a{i} {nonce}"}))))
        outcomes.append(("alice", "publish", _code(await session.call_tool("publish", {"text": f"a {nonce}"}))))
        outcomes.append(("alice", "write_note", _code(await session.call_tool("write_note", {"text": f"a {nonce}"}))))
    async with client(deployment.jwks_proxy, bob) as session:
        outcomes.append(("bob", "echo", _code(await session.call_tool("echo", {"text": f"b {nonce}"}))))
        outcomes.append(("bob", "publish", _code(await session.call_tool("publish", {"text": f"b {nonce}"}))))
        outcomes.append(("bob", "write_note", _code(await session.call_tool("write_note", {"text": f"b {nonce}"}))))
    async with client(deployment.jwks_proxy, anonymous_tenant) as session:
        outcomes.append(("carol", "write_note", _code(await session.call_tool("write_note", {"text": f"c {nonce}"}))))
    assert outcomes == [
        ("alice", "echo", f"a0 {nonce}"),
        ("alice", "echo", f"a1 {nonce}"),
        ("alice", "echo", "rate_limited"),  # alice's budget is spent ...
        ("alice", "publish", f"published: a {nonce}"),
        ("alice", "write_note", f"stored: a {nonce}"),
        ("bob", "echo", f"b {nonce}"),  # ... bob's is his own: the limit counts per sub
        ("bob", "publish", "requirement_failed"),  # his scope has no "payments"
        ("bob", "write_note", "requirement_failed"),  # tenant globex
        ("carol", "write_note", "identity_required"),  # her token has no tenant claim
    ]
    assert deployment.received(nonce) == [
        {"tool": "echo", "args": {"text": f"a0 {nonce}"}},
        {"tool": "echo", "args": {"text": f"a1 {nonce}"}},
        {"tool": "publish", "args": {"text": f"a {nonce}"}},
        {"tool": "write_note", "args": {"text": f"a {nonce}"}},
        {"tool": "echo", "args": {"text": f"b {nonce}"}},
    ]
    events = _audit(deployment.jwks_audit)[seen:]
    assert [(e["identity"], e["tool"], e["code"]) for e in events] == [
        ("alice", "echo", None),
        ("alice", "echo", None),
        ("alice", "echo", "rate_limited"),
        ("alice", "publish", None),
        ("alice", "write_note", None),
        ("bob", "echo", None),
        ("bob", "publish", "requirement_failed"),
        ("bob", "write_note", "requirement_failed"),
        ("carol", "write_note", "identity_required"),
    ]
    assert all(alice not in json.dumps(e) for e in events)  # the token itself is never audited


async def test_the_identity_claim_option_and_a_pem_key(deployment: Deployment) -> None:
    nonce = uuid.uuid4().hex
    seen = len(_audit(deployment.pem_audit))
    dora = token(ISSUER_KEY, claims("u-123", email="dora@acme.test", scope="payments"), kid=None)
    async with client(deployment.pem_proxy, dora) as session:
        assert _code(await session.call_tool("publish", {"text": nonce})) == f"published: {nonce}"
    assert deployment.received(nonce) == [{"tool": "publish", "args": {"text": nonce}}]
    assert [e["identity"] for e in _audit(deployment.pem_audit)[seen:]] == ["dora@acme.test"]


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream"}


def _bad_tokens() -> dict[str, str | None]:
    now = int(time.time())
    return {
        "missing": None,
        "not a JWT": "guess",
        "expired": token(ISSUER_KEY, claims(exp=now - 3600)),
        "wrong audience": token(ISSUER_KEY, claims(aud="https://other.test/mcp")),
        "wrong issuer": token(ISSUER_KEY, claims(iss="https://evil.test")),
        "wrong key": token(OTHER_KEY, claims()),
        "alg none": unsigned_token(claims()),
        "HS256 keyed with the RSA public key's PEM": hs256_with_secret(claims(), public_pem(ISSUER_KEY)),
        "HS256 with the PEM, no kid": hs256_with_secret(claims(), public_pem(ISSUER_KEY), kid=None),
    }


async def test_bad_tokens_get_401_and_never_reach_the_upstream(deployment: Deployment) -> None:
    """A session opened with a valid token; the same session's tool call with each bad token instead.

    The upstream records nothing for the bad calls (the proxy answered 401 before reading the message), and
    the very same request with the valid token goes through: only the token differs.
    """
    good = token(ISSUER_KEY, claims(f"probe-{uuid.uuid4().hex}", email="probe@acme.test"))  # its own echo budget
    answers: dict[str, tuple[int, str, str]] = {}
    async with httpx.AsyncClient(timeout=30) as http:
        for name, url in (("jwks", deployment.jwks_proxy), ("pem", deployment.pem_proxy)):
            opened = await http.post(url, json=INITIALIZE, headers={**ACCEPT, "Authorization": f"Bearer {good}"})
            assert opened.status_code == 200
            session = {**ACCEPT, "mcp-session-id": opened.headers["mcp-session-id"]}
            ready = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            await http.post(url, json=ready, headers={**session, "Authorization": f"Bearer {good}"})
            nonce = uuid.uuid4().hex
            for label, bad in _bad_tokens().items():
                call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call"}
                call["params"] = {"name": "echo", "arguments": {"text": f"{label} {nonce}"}}
                headers = session if bad is None else {**session, "Authorization": f"Bearer {bad}"}
                response = await http.post(url, json=call, headers=headers)
                body = response.json()
                answers[f"{name}: {label}"] = (
                    response.status_code,
                    response.headers.get("www-authenticate", ""),
                    body.get("error", ""),
                )
            assert deployment.received(nonce) == []
            control = {"jsonrpc": "2.0", "id": 3, "method": "tools/call"}
            control["params"] = {"name": "echo", "arguments": {"text": f"control {nonce}"}}
            accepted = await http.post(url, json=control, headers={**session, "Authorization": f"Bearer {good}"})
            assert accepted.status_code == 200
            assert f"control {nonce}" in accepted.text, accepted.text  # the echo's result, streamed back
            assert deployment.received(nonce) == [{"tool": "echo", "args": {"text": f"control {nonce}"}}]
    assert len(answers) == 2 * len(_bad_tokens())
    for label, (status, challenge, error) in answers.items():
        assert status == 401, label
        assert challenge.startswith('Bearer error="invalid_token", error_description="'), label
        assert error == "invalid_token", label


async def test_the_reason_is_short_and_says_what_is_wrong(deployment: Deployment) -> None:
    now = int(time.time())
    cases = {
        "the token has expired": token(ISSUER_KEY, claims(exp=now - 3600)),
        "the token was not issued for this audience": token(ISSUER_KEY, claims(aud="x")),
        "unsigned tokens (alg none) are not accepted": unsigned_token(claims()),
    }
    async with httpx.AsyncClient(timeout=30) as http:
        for reason, bad in cases.items():
            response = await http.post(
                deployment.jwks_proxy, json=INITIALIZE, headers={**ACCEPT, "Authorization": f"Bearer {bad}"}
            )
            assert response.status_code == 401
            assert response.json() == {"error": "invalid_token", "error_description": reason}
            assert response.headers["www-authenticate"].endswith(f'error_description="{reason}"')


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--jwt-keys", "KEYS"], "--jwt-keys needs --jwt-audience"),
        (["--jwt-audience", "a"], "--jwt-audience goes with --jwt-keys"),
        (["--jwt-keys", "KEYS", "--jwt-audience", "a", "--identity", "x"], "takes the identity from the token"),
        (["--jwt-keys", "KEYS", "--jwt-secret", "KEYS", "--jwt-audience", "a"], "give one of --jwt-keys and"),
        (["--jwt-keys", "PRIVATE", "--jwt-audience", "a"], "a private key"),
        (["--jwt-secret", "PEM", "--jwt-audience", "a"], "looks like a key file"),
        (["--jwt-keys", "MISSING", "--jwt-audience", "a"], "cannot read the keys file"),
    ],
)
def test_configuration_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    from cryptography.hazmat.primitives import serialization

    files = {
        "KEYS": tmp_path / "jwks.json",
        "PEM": tmp_path / "issuer.pem",
        "PRIVATE": tmp_path / "private.pem",
        "MISSING": tmp_path / "missing.json",
    }
    files["KEYS"].write_text(json.dumps({"keys": [public_jwk(ISSUER_KEY, "rsa-1")]}))
    files["PEM"].write_bytes(public_pem(ISSUER_KEY))
    files["PRIVATE"].write_bytes(
        ISSUER_KEY.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    policy = write_policy(tmp_path / "policy.json", {"version": "1", "default": "allow"})
    argv = ["proxy", "--policy", str(policy), "--upstream", "http://127.0.0.1:9/mcp", "--listen", "127.0.0.1:0"]
    argv += [str(files[o]) if o in files else o for o in options]
    assert main(argv) == 2  # refused before anything starts: no upstream is contacted, no port is bound
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert message in lines[0]
