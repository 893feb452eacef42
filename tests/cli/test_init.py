"""``mcp-guard init``: against real MCP servers over stdio and streamable HTTP, and the policy it writes must
validate and mean what its descriptions say (reads allowed, writes rate-limited, destructive tools held for a human)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcp_guard import Policy
from mcp_guard._cli.init import ServerInfo, ToolInfo, read_server, risk_class, starter_policy
from mcp_guard._cli.main import main
from tests.support.servers.counter_server import command as counter_command

ROOT = Path(__file__).resolve().parents[2]
SERVERS = ROOT / "examples" / "servers"
# The console script pip installs: the command exactly as a user types it.
CONSOLE_SCRIPT = Path(sys.executable).with_name("mcp-guard")


def cli(capfd: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in this process (``main`` is what the console script calls), to save an interpreter start per call.

    capfd, not capsys: the MCP stdio client hands ``sys.stderr`` to the server process, which needs a real fd.
    """
    capfd.readouterr()
    code = main(list(args))
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(["mcp-guard", *args], code, out, err)


@pytest.fixture(scope="module")
def exchange_policy_text() -> str:
    # Once through the real console script, in a fresh process, as a user would run it.
    command = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "mcp_guard._cli.main"]
    run = subprocess.run(
        [*command, "init", "--", sys.executable, str(SERVERS / "exchange_server.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_init_exchange_to_stdout_validates(
    exchange_policy_text: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(exchange_policy_text)
    assert data["default"] == "deny"
    assert set(data["tools"]) == {
        "get_balance",
        "get_open_orders",
        "get_ticker",
        "create_listen_key",
        "keepalive_listen_key",
        "place_order",
        "cancel_order",
        "withdraw",
        "delete_api_key",
    }
    assert all(rule["description"] for rule in data["tools"].values())
    path = tmp_path / "starter.json"
    path.write_text(exchange_policy_text)
    check = cli(capfd, "validate", str(path))
    assert check.returncode == 0, check.stdout + check.stderr


def test_init_exchange_policy_means_what_it_says(exchange_policy_text: str) -> None:
    policy = Policy.from_dict(json.loads(exchange_policy_text))
    read = policy.evaluate("get_balance", {}, server="exchange")
    assert read.action == "allow"
    assert read.limits == ()
    write = policy.evaluate("place_order", {"symbol": "BTCUSD", "side": "buy", "amount": 5}, identity="alice")
    assert write.action == "allow"
    assert [(c.max, c.window_s, c.scope) for c in write.limits] == [(30, 60.0, "identity")]
    assert policy.evaluate("withdraw", {"asset": "USD", "amount": 1, "address": "x"}).action == "require_approval"
    assert policy.evaluate("delete_api_key", {"api_key_id": "k"}).action == "require_approval"
    unknown = policy.evaluate("transfer_everything", {})
    assert (unknown.action, unknown.code) == ("deny", "default_deny")


def test_init_notes_server_to_yaml_file_validates(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "notes.yaml"
    run = cli(capfd, "init", "--output", str(out), "--", sys.executable, str(SERVERS / "notes_server.py"))
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""  # the policy went to the file, not stdout
    assert "5 tools" in run.stderr
    data: dict[str, Any] = yaml.safe_load(out.read_text())
    rules = data["tools"]
    assert "action" not in rules["list_notes"]
    assert rules["add_note"]["limits"][0]["counter"] == "add_note_rate"
    assert rules["delete_note"]["action"] == "require_approval"
    # search_web has no annotations at all: MCP's defaults make it destructive, so a human approves it.
    assert rules["search_web"]["action"] == "require_approval"
    assert "no annotations" in rules["search_web"]["description"]
    check = cli(capfd, "validate", str(out))
    assert check.returncode == 0, check.stdout + check.stderr


async def test_read_server_lists_tools_with_annotations() -> None:
    server = await read_server([sys.executable, str(SERVERS / "notes_server.py")])
    assert server.name == "notes"
    by_name = {t.name: t for t in server.tools}
    assert by_name["read_note"].annotations == {"readOnlyHint": True}
    assert by_name["search_web"].annotations == {}
    assert by_name["delete_note"].description == "Delete a note for good."


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({"readOnlyHint": True}, "read"),
        ({"readOnlyHint": True, "destructiveHint": True}, "read"),  # destructiveHint only counts for writes
        ({"readOnlyHint": False, "destructiveHint": False, "openWorldHint": False}, "write"),
        ({"destructiveHint": False}, "open_world"),  # MCP's default openWorldHint is true
        ({"readOnlyHint": False}, "destructive"),  # MCP's default destructiveHint is true
        ({}, "destructive"),
        ({"openWorldHint": False, "idempotentHint": True}, "destructive"),
    ],
)
def test_risk_class_follows_mcp_defaults(annotations: dict[str, Any], expected: str) -> None:
    assert risk_class(annotations) == expected


def test_starter_policy_is_deterministic_and_loads() -> None:
    server = ServerInfo("svc", (ToolInfo("a", "A.", {"readOnlyHint": True}), ToolInfo("b", None, {})))
    first, second = starter_policy(server), starter_policy(server)
    assert first == second
    assert Policy.from_dict(first).evaluate("b", {}).action == "require_approval"


def test_init_without_command_or_with_a_dead_server_exits_2(capfd: pytest.CaptureFixture[str]) -> None:
    assert cli(capfd, "init").returncode == 2
    missing = cli(capfd, "init", "--timeout", "10", "--", "definitely-not-a-command-mcp-guard")
    assert missing.returncode == 2
    assert "could not read tools" in missing.stderr
    assert missing.stdout == ""


@pytest.fixture(scope="module")
def counter_http_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The counter test server serving streamable HTTP on a free loopback port, for as long as the module runs."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("http")
    env = {**os.environ, "RECORD_FILE": str(folder / "calls.txt")}
    log = folder / "server.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [*counter_command(), "--http", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 30
        while True:  # poll until the port accepts connections (startup is the server's, not a timing guess)
            if process.poll() is not None:
                pytest.fail(f"the HTTP test server exited: {log.read_text(errors='replace')}")
            with socket.socket() as conn:
                if conn.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                pytest.fail("the HTTP test server did not listen within 30 s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_init_reads_a_streamable_http_server(
    counter_http_url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "policy.json"
    run = cli(capfd, "init", "--output", str(out), counter_http_url)
    assert run.returncode == 0, run.stderr
    assert "6 tools from exchange" in run.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    rules = data["tools"]
    assert set(rules) == {"get_balance", "create_listen_key", "place_order", "withdraw", "delete_api_key", "flaky"}
    assert rules["get_balance"].get("action", "allow") == "allow"
    assert rules["withdraw"]["action"] == "require_approval"
    assert "limits" in rules["place_order"]
    assert cli(capfd, "validate", str(out)).returncode == 0


async def test_read_server_over_http_matches_stdio(counter_http_url: str, tmp_path: Path) -> None:
    over_http = await read_server(counter_http_url)
    env_file = tmp_path / "calls.txt"
    os.environ["RECORD_FILE"] = str(env_file)
    try:
        over_stdio = await read_server(counter_command())
    finally:
        del os.environ["RECORD_FILE"]
    assert over_http == over_stdio
    assert {t.name: t.annotations for t in over_http.tools}["withdraw"]["destructiveHint"] is True


def test_init_with_a_url_nobody_serves_exits_2(capfd: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = cli(capfd, "init", "--timeout", "10", f"http://127.0.0.1:{port}/mcp")
    assert run.returncode == 2
    assert f"http://127.0.0.1:{port}/mcp" in run.stderr
    assert run.stdout == ""


def test_init_shows_what_it_waits_for_on_a_terminal_and_nothing_in_a_pipe(tmp_path: Path) -> None:
    import pty

    server = [sys.executable, str(SERVERS / "exchange_server.py")]
    argv = [sys.executable, "-m", "mcp_guard", "init", "--output", str(tmp_path / "p.json"), "--", *server]
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(argv, stderr=follower, stdout=subprocess.PIPE, timeout=120, check=False)
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0
    assert b"reading tools from" in seen
    piped = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert piped.returncode == 0
    assert "reading tools from" not in piped.stderr
