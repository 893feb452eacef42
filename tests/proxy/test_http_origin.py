"""The proxy's HTTP front against DNS rebinding: a foreign ``Host`` or ``Origin`` never reaches the upstream.

A web page that rebinds its own name to 127.0.0.1 makes the browser send ``Host: <its name>:PORT`` (and its
``Origin``) to the proxy. Two real proxies (``mcp-guard proxy --listen ... -- <recording server>``, a stdio
upstream per client session): one with the defaults, one widened with ``--allow-host`` / ``--allow-origin``.
Each refused request is also sent, unchanged but for the one header, with a loopback ``Host`` as a control,
so a test cannot pass because the request was malformed. Judged by what the upstream recorded (and by the pid
file each upstream process writes when it starts).
"""

from __future__ import annotations

import json
import subprocess
import sys
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

from mcp_guard._proxy.http import identity_reader
from mcp_guard._proxy.origin import FrontDoor, is_loopback
from tests.support.servers.proxy_support import free_port, http_processes, proxy_command, text, write_policy
from tests.support.servers.proxy_upstream_server import command as upstream_command
from tests.support.servers.proxy_upstream_server import read_record

ATTACKER = "rebind.attacker.example"
WIDE_HOST = "mcp.internal.example"
WIDE_ORIGIN = "https://app.internal.example"


@dataclass
class Front:
    url: str
    port: int


@dataclass
class Deployment:
    record: Path
    pid_file: Path
    default: Front  # loopback names only
    wide: Front  # --allow-host WIDE_HOST --allow-origin WIDE_ORIGIN, identity from X-User

    def ran(self, nonce: str) -> bool:
        return any(nonce in json.dumps(r["args"]) for r in read_record(self.record))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("proxy_origin")
    record, pid_file = tmp / "record.jsonl", tmp / "upstream.pid"
    policy = write_policy(tmp / "policy.json", {"version": "1", "default": "allow"})
    env = {"RECORD_FILE": str(record), "PID_FILE": str(pid_file)}  # the proxy passes its environment upstream
    ports = free_port(), free_port()
    wide_options = ["--allow-host", WIDE_HOST, "--allow-origin", WIDE_ORIGIN, "--identity-header", "X-User"]
    specs = [
        (proxy_command(policy, "--listen", f"127.0.0.1:{ports[0]}", upstream=upstream_command()), ports[0], env),
        (
            proxy_command(policy, "--listen", f"127.0.0.1:{ports[1]}", *wide_options, upstream=upstream_command()),
            ports[1],
            env,
        ),
    ]
    with http_processes(*specs) as (default, wide):
        yield Deployment(record, pid_file, Front(default, ports[0]), Front(wide, ports[1]))


@asynccontextmanager
async def session(front: Front, headers: dict[str, str] | None = None) -> AsyncIterator[tuple[ClientSession, str]]:
    """A real MCP client session through ``front`` (loopback Host); yields it and its ``mcp-session-id``."""
    async with (
        httpx.AsyncClient(headers=headers or {}, timeout=httpx.Timeout(30, read=60)) as http,
        streamable_http_client(front.url, http_client=http) as (read, write, session_id),
        ClientSession(read, write) as client,
    ):
        await client.initialize()
        sid = session_id()
        assert sid
        yield client, sid


def call(nonce: str, request_id: int = 7) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": nonce}},
    }


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "page", "version": "1"}},
}


async def post(front: Front, message: dict[str, Any], **headers: str) -> httpx.Response:
    """One raw streamable-HTTP POST, as a rebinding page's ``fetch`` would send it (``host`` overrides Host)."""
    base = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=60)) as http:
        return await http.post(front.url, json=message, headers={**base, **headers})


def answered(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer in a 200 response (JSON or one SSE event)."""
    assert response.status_code == 200, response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        return dict(json.loads(data[-1]))
    return dict(response.json())


def refused(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert "--allow-" in body["reason"]  # says how to widen it


async def test_a_rebinding_host_cannot_start_a_session_or_an_upstream(deployment: Deployment) -> None:
    before = deployment.pid_file.read_text()  # the proxy's start-up probe wrote it
    front = deployment.default
    response = await post(front, INITIALIZE, host=f"{ATTACKER}:{front.port}")
    refused(response, 421, "misdirected_request")
    assert "mcp-session-id" not in response.headers
    assert deployment.pid_file.read_text() == before  # no upstream process was started for it
    # Control: the same initialize under a loopback name starts a session (and an upstream).
    control = await post(front, INITIALIZE, host=f"127.0.0.1:{front.port}")
    assert answered(control)["result"]["serverInfo"]["name"] == "notes"
    assert deployment.pid_file.read_text() != before


#: Host values a rebinding page could make a browser send (``{port}``: the proxy's).
REBINDING_HOSTS = [
    f"{ATTACKER}:{{port}}",
    f"localhost.{ATTACKER}:{{port}}",
    f"127.0.0.1.{ATTACKER}:{{port}}",
    "localhost:1",  # the right name, another port: another local service's page
    "localhost",  # port 80
    ATTACKER,
]

#: Origin values of pages that are not the proxy's (``{other}``: another local port).
FOREIGN_ORIGINS = [f"http://{ATTACKER}:{{port}}", "null", "http://localhost:{other}", WIDE_ORIGIN, "file://"]


# One client session per test (each starts an upstream process), the cases looped inside it.


async def test_a_rebinding_host_cannot_use_an_open_session(deployment: Deployment) -> None:
    front = deployment.default
    async with session(front) as (client, sid):
        for host in REBINDING_HOSTS:
            nonce = uuid.uuid4().hex
            response = await post(front, call(nonce), host=host.format(port=front.port), **{"mcp-session-id": sid})
            refused(response, 421, "misdirected_request")
            assert not deployment.ran(nonce), host
            # Control: the same request with the proxy's own Host runs.
            control = await post(front, call(nonce), host=f"127.0.0.1:{front.port}", **{"mcp-session-id": sid})
            assert answered(control)["result"]["content"][0]["text"] == nonce
            assert deployment.ran(nonce)
        assert text(await client.call_tool("echo", {"text": "still open"})) == "still open"


async def test_a_foreign_origin_is_refused_403(deployment: Deployment) -> None:
    front = deployment.default
    async with session(front) as (_, sid):
        for origin in FOREIGN_ORIGINS:
            nonce = uuid.uuid4().hex
            bad = origin.format(port=front.port, other=front.port + 1)
            response = await post(front, call(nonce), origin=bad, **{"mcp-session-id": sid})
            refused(response, 403, "forbidden_origin")
            assert not deployment.ran(nonce), origin
            own = f"http://localhost:{front.port}"
            answered(await post(front, call(nonce), origin=own, **{"mcp-session-id": sid}))
            assert deployment.ran(nonce)


async def test_the_loopback_names_with_the_port_are_served(deployment: Deployment) -> None:
    front = deployment.default
    async with session(front) as (_, sid):
        for name in ("127.0.0.1", "localhost", "LocalHost", "[::1]"):
            nonce = uuid.uuid4().hex
            response = await post(front, call(nonce), host=f"{name}:{front.port}", **{"mcp-session-id": sid})
            assert answered(response)["result"]["content"][0]["text"] == nonce
            assert deployment.ran(nonce)


async def test_allow_host_and_allow_origin_widen_the_front(deployment: Deployment) -> None:
    front = deployment.wide
    nonce = uuid.uuid4().hex
    async with session(front, {"X-User": "alice"}) as (_, sid):
        user = {"x-user": "alice", "mcp-session-id": sid}
        for host in (WIDE_HOST, f"{WIDE_HOST}:{front.port}"):
            served = uuid.uuid4().hex
            response = await post(front, call(served), host=host, origin=WIDE_ORIGIN, **user)
            answered(response)
            assert deployment.ran(served)
        # Widened, not opened: other names and origins are still refused.
        refused(await post(front, call(nonce), host=f"{ATTACKER}:{front.port}", **user), 421, "misdirected_request")
        refused(await post(front, call(nonce), origin=f"https://{ATTACKER}", **user), 403, "forbidden_origin")
        refused(await post(front, call(nonce), host=f"{WIDE_HOST}:1", **user), 421, "misdirected_request")
    assert not deployment.ran(nonce)


async def test_the_401_names_the_header_it_expects(deployment: Deployment) -> None:
    nonce = uuid.uuid4().hex
    response = await post(deployment.wide, call(nonce))
    assert response.status_code == 401
    assert "X-User header" in response.json()["reason"]
    assert not deployment.ran(nonce)


def _proxy_exit(policy: Path, *options: str) -> subprocess.CompletedProcess[str]:
    # An upstream that is not an MCP server: the proxy gets past its options, says its piece, and exits.
    upstream = [sys.executable, "-c", "pass"]
    argv = proxy_command(policy, "--listen", f"127.0.0.1:{free_port()}", *options, upstream=upstream)
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)


def test_a_bearer_identity_needs_tokens_or_an_explicit_trust(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.json", {"version": "1", "default": "allow"})
    bare = _proxy_exit(policy, "--identity-from", "bearer")
    assert bare.returncode == 2
    assert bare.stderr.count("\n") == 1
    assert "--tokens FILE" in bare.stderr
    assert "--trust-any-bearer" in bare.stderr
    trusting = _proxy_exit(policy, "--identity-from", "bearer", "--trust-any-bearer")
    warning, failure = trusting.stderr.splitlines()
    assert warning.startswith("mcp-guard proxy: WARNING: --trust-any-bearer")
    assert "did not start as an MCP server" in failure  # it got as far as starting the upstream
    both = _proxy_exit(policy, "--identity-from", "bearer", "--trust-any-bearer", "--tokens", "t.json")
    assert both.returncode == 2
    assert "give one of --tokens, --trust-any-bearer" in both.stderr


def test_a_non_loopback_listen_needs_allow_host(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.json", {"version": "1", "default": "allow"})
    argv = proxy_command(policy, "--listen", f"0.0.0.0:{free_port()}", upstream=[sys.executable, "-c", "pass"])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "--allow-host" in done.stderr


# -- the rules themselves, in process (no server): what each flag admits --------------------------------


def test_the_default_front_admits_only_the_loopback_names_with_the_port() -> None:
    door = FrontDoor.for_listen(8080)
    for host in ("localhost:8080", "127.0.0.1:8080", "[::1]:8080", "LOCALHOST:8080"):
        assert door.host_ok(host), host
    for host in ("localhost", "localhost:80", "localhost:8081", "evil.example:8080", "[::1]", None, "", "::1:8080"):
        assert not door.host_ok(host), host
    assert door.origin_ok(None)  # not a browser, or a same-origin GET
    assert door.origin_ok("http://localhost:8080")
    assert door.origin_ok("http://[::1]:8080")
    for origin in ("null", "http://evil.example:8080", "http://localhost:8081", "https://localhost", "file://", "x"):
        assert not door.origin_ok(origin), origin


def test_allow_host_and_allow_origin_entries() -> None:
    door = FrontDoor.for_listen(
        8080,
        ["mcp.example", "api.example:443", "dev.example:*", "[fd00::1]:9000"],
        ["https://app.example", "http://tool.example:*"],
    )
    admitted = ["mcp.example", "mcp.example:8080", "api.example:443", "dev.example:1", "dev.example", "[fd00::1]:9000"]
    for host in admitted:
        assert door.host_ok(host), host
    for host in ("mcp.example:9", "api.example", "api.example:80", "x.mcp.example", "[fd00::1]"):
        assert not door.host_ok(host), host
    assert door.origin_ok("https://app.example")
    assert door.origin_ok("https://app.example:443")  # the default port, written out
    assert door.origin_ok("http://tool.example:3000")
    assert door.origin_ok("https://api.example")  # a page served under an allowed host is same-origin
    assert not door.origin_ok("http://app.example")  # another scheme is another origin
    assert not door.origin_ok("https://app.example:8443")
    star = FrontDoor.for_listen(8080, ["*"], ["*"])
    assert star.host_ok("anything.example")
    assert star.host_ok(None)
    assert star.origin_ok("null")
    assert not FrontDoor.for_listen(8080, ["*"]).origin_ok("http://anything.example")  # '*' Host is not '*' Origin


@pytest.mark.parametrize("entry", ["http://mcp.example", "mcp.example/path", "a b", "", "mcp.example:port", "[::1"])
def test_a_malformed_allow_host_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="--allow-host"):
        FrontDoor.for_listen(8080, [entry])


@pytest.mark.parametrize("entry", ["app.example", "ftp://app.example", "https://app.example/path", "https://x:y"])
def test_a_malformed_allow_origin_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="--allow-origin"):
        FrontDoor.for_listen(8080, [], [entry])


def test_loopback_listen_addresses() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.5", "myhost", "example.com"):
        assert not is_loopback(host), host


def test_the_bearer_401_names_the_authorization_header() -> None:
    reader = identity_reader("bearer", tokens={"s3cret": "alice"})
    assert "Authorization: Bearer" in reader.expects
    assert "--tokens" in reader.expects
    assert reader.challenge == "Bearer"
