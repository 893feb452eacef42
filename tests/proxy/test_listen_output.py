"""``mcp-guard proxy --listen``: one line on stderr with the URL when it starts, and nothing per client after.

An operator who starts the proxy sees where to point clients; client sessions that come and go (each ends by
disconnecting) leave no SDK traceback behind. Real processes on 127.0.0.1: an HTTP upstream, the proxy, and
two client sessions through the ``mcp`` SDK.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio
import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.support.servers.proxy_support import free_port, http_processes, proxy_command, wait_until, write_policy
from tests.support.servers.proxy_upstream_server import command as proxy_upstream_server


async def list_tools(url: str) -> set[str]:
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(30)) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        return {t.name for t in (await session.list_tools()).tools}


def test_listen_says_where_once_and_clients_leave_no_traceback(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.json", {"version": "1", "default": "allow", "hide": ["purge"]})
    up_port = free_port()
    upstream = ([*proxy_upstream_server(), "--http", str(up_port)], up_port, {"RECORD_FILE": str(tmp_path / "r")})
    with http_processes(upstream) as (upstream_url,):
        port = free_port()
        argv = proxy_command(policy, "--upstream", upstream_url, "--listen", f"127.0.0.1:{port}", "--identity", "a")
        url = f"http://127.0.0.1:{port}/mcp"
        errors = tmp_path / "stderr.txt"
        with errors.open("w") as sink:
            proxy = subprocess.Popen(argv, stderr=sink)
        try:
            # The line is the signal that it listens: a client can connect as soon as it is there.
            assert wait_until(lambda: url in errors.read_text(), timeout=60), errors.read_text()
            for _ in range(2):  # two sessions, each ending with the client going away
                assert "purge" not in anyio.run(list_tools, url)
        finally:
            proxy.terminate()
            proxy.wait(15)
    assert errors.read_text().splitlines() == [f"mcp-guard proxy: serving MCP at {url} (Ctrl-C to stop)"]
