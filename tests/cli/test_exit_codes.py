"""Every subcommand, run as the real CLI in a subprocess: the exit code of the table, and one line on stderr.

0 ok, 1 invalid policy, 2 bad input or environment, 3 refused, 4 needs approval. A port in use, an upstream
that cannot be reached or is not an MCP server, a store URL with an option the driver does not know: one line
naming what and where, exit 2, and no third-party traceback (the ``mcp`` SDK logs one for each line of a
server that is not JSON-RPC; uvicorn prints its own error for a port in use and exits 3).

The cases are independent processes, so they are all started at once and awaited together (the suite stays
fast); each test then reads its own case's outcome.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.servers.proxy_support import free_port
from tests.support.servers.proxy_upstream_server import command as upstream_command

CLI = [sys.executable, "-c", "import sys; from mcp_guard._cli.main import main; sys.exit(main())"]
NOT_MCP = [sys.executable, "-c", "print('hello, I am not an MCP server')"]
TOKEN = "t" * 40


@dataclass
class Case:
    argv: list[str]
    code: int
    says: tuple[str, ...]  # substrings of the one stderr line
    env: dict[str, str] | None = None


@dataclass
class Outcome:
    code: int
    stderr: str


@dataclass
class Setup:
    tmp: Path
    busy_port: int
    http_port: int
    pid_file: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("exit_codes")
    (tmp / "policy.json").write_text(json.dumps({"version": "1", "default": "allow"}))
    limited = {"x": {"limits": [{"counter": "c", "window": "minute", "max": 3, "scope": "identity"}]}}
    (tmp / "limited.json").write_text(json.dumps({"version": "1", "default": "allow", "tools": limited}))
    (tmp / "invalid.json").write_text(json.dumps({"version": "1", "default": "maybe"}))
    with socket.socket() as busy, _not_mcp_http_server() as http_port:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield Setup(tmp, busy.getsockname()[1], http_port, tmp / "upstream.pid")


class _NotMCP(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # an ordinary web server: no MCP at this URL
        self.send_error(404, "no such page")

    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def _not_mcp_http_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotMCP)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def cases(s: Setup) -> dict[str, Case]:
    policy, tmp = str(s.tmp / "policy.json"), s.tmp
    proxy = [*CLI, "proxy", "--policy", policy]
    listen = ["--listen", f"127.0.0.1:{free_port()}"]
    nowhere = f"http://127.0.0.1:{free_port()}/mcp"
    web_page = f"http://127.0.0.1:{s.http_port}/mcp"
    return {
        "init_not_mcp": Case(
            [*CLI, "init", "--timeout", "60", "--", *NOT_MCP], 2, ("mcp-guard init:", "hello, I am not an MCP")
        ),
        "init_cannot_write": Case(
            [*CLI, "init", "--output", str(tmp / "no-such-dir" / "policy.json"), "--", *upstream_command()],
            2,
            ("mcp-guard init: cannot write", "no-such-dir"),
            env={"FASTMCP_LOG_LEVEL": "WARNING"},  # the server's own stderr passes through: keep it quiet
        ),
        "init_unreachable": Case([*CLI, "init", nowhere], 2, ("mcp-guard init:", nowhere)),
        "proxy_missing_policy": Case(
            [*CLI, "proxy", "--policy", str(tmp / "missing.json"), "--", *NOT_MCP],
            2,
            ("mcp-guard proxy: cannot read policy", "missing.json"),
        ),
        "proxy_policy_is_a_directory": Case(
            [*CLI, "proxy", "--policy", str(tmp), "--", *NOT_MCP], 2, ("mcp-guard proxy: cannot read policy",)
        ),
        "proxy_port_in_use": Case(
            [*proxy, "--listen", f"127.0.0.1:{s.busy_port}", "--", *upstream_command()],
            2,
            ("mcp-guard proxy: cannot listen on", f"127.0.0.1:{s.busy_port}"),
            env={"PID_FILE": str(s.pid_file)},
        ),
        "proxy_unreachable_url_http": Case(
            [*proxy, *listen, "--upstream", nowhere], 2, ("mcp-guard proxy: no MCP server answered at", nowhere)
        ),
        "proxy_unreachable_url_stdio": Case(
            [*proxy, "--upstream", nowhere], 2, ("mcp-guard proxy: no MCP server answered at", nowhere)
        ),
        "proxy_url_not_mcp": Case(
            [*proxy, *listen, "--upstream", web_page], 2, ("no MCP server answered at", web_page)
        ),
        "proxy_process_not_mcp_http": Case(
            [*proxy, "--listen", f"127.0.0.1:{free_port()}", "--", *NOT_MCP],
            2,
            ("did not start as an MCP server", "hello, I am not an MCP"),
        ),
        "proxy_process_not_mcp_no_relay": Case(
            [*proxy, "--no-relay", "--", *NOT_MCP], 2, ("did not start as an MCP server", "hello, I am not an MCP")
        ),
        "proxy_bad_store_option": Case(
            [*proxy, "--store", "redis://127.0.0.1:1/0?colour=blue", "--", *NOT_MCP], 2, ("colour",)
        ),
        "inbox_port_in_use": Case(
            [*CLI, "inbox", "--store", "memory://", "--token", TOKEN, "--port", str(s.busy_port)],
            2,
            ("mcp-guard inbox: cannot listen on", f"127.0.0.1:{s.busy_port}"),
        ),
        "usage_missing_policy": Case(
            [*CLI, "usage", str(tmp / "missing.json"), "--store", "memory://"], 2, ("cannot read policy",)
        ),
        "usage_bad_store_option": Case(
            [*CLI, "usage", str(tmp / "limited.json"), "--store", "redis://127.0.0.1:1/0?colour=blue"],
            2,
            ("invalid Redis store option", "colour"),
        ),
        "audit_missing_file": Case([*CLI, "audit", str(tmp / "missing.jsonl")], 2, ("cannot read",)),
        "proxy_invalid_policy": Case([*CLI, "proxy", "--policy", str(tmp / "invalid.json"), "--", *NOT_MCP], 1, ()),
    }


@pytest.fixture(scope="module")
def outcomes(setup: Setup) -> dict[str, tuple[Case, Outcome]]:
    """Every case run at once (each its own process): the case and its exit code and stderr."""
    todo = cases(setup)
    started = {
        name: subprocess.Popen(
            case.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, **(case.env or {})},
        )
        for name, case in todo.items()
    }
    done = {}
    for name, proc in started.items():
        _, err = proc.communicate(b"", timeout=180)  # stdin closed at once: a stdio client that left
        done[name] = (todo[name], Outcome(proc.returncode, err.decode("utf-8", "replace")))
    return done


NAMES = sorted(cases(Setup(Path("/t"), 1, 2, Path("/p"))))


@pytest.mark.parametrize("name", NAMES)
def test_one_line_and_the_exit_code_of_the_table(name: str, outcomes: dict[str, tuple[Case, Outcome]]) -> None:
    case, outcome = outcomes[name]
    assert "Traceback" not in outcome.stderr, outcome.stderr
    if case.code == 1:  # an invalid policy prints one line per problem, as validate does
        assert outcome.code == 1, outcome.stderr
        return
    assert outcome.stderr.count("\n") == 1, outcome.stderr
    assert outcome.code == case.code, outcome.stderr
    for text in case.says:
        assert text in outcome.stderr


def test_a_port_in_use_starts_no_upstream(setup: Setup, outcomes: dict[str, tuple[Case, Outcome]]) -> None:
    assert outcomes["proxy_port_in_use"][1].code == 2
    assert not setup.pid_file.exists()  # the upstream server writes it as it starts
