"""A small MCP server for tests, modelled on an exchange account, that counts every call it receives.

Run it as a subprocess over stdio (``python counter_server.py``). Each tool call appends one line
``<tool>\\n`` to the file named by ``COUNTER_FILE`` *before* doing anything else, so a test can prove that a
denied call never reached the server without trusting any guard's own bookkeeping.

The MCP annotations are honest: ``get_balance`` is read-only, ``create_listen_key`` and ``place_order``
write, ``withdraw`` and ``delete_api_key`` are destructive. ``flaky`` always fails (an MCP error result).
Not for production use: it keeps no state and moves no money.
"""

from __future__ import annotations

import collections
import os
import sys
from pathlib import Path
from typing import Any

# ToolError, not ValueError, for failures the model should read: mcp 2 hides any other exception's text.
try:  # mcp 2.x renamed FastMCP to MCPServer
    from mcp.server.mcpserver import MCPServer as FastMCP
    from mcp.server.mcpserver.exceptions import ToolError
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import FastMCP  # type: ignore[no-redef]
    from mcp.server.fastmcp.exceptions import ToolError  # type: ignore[no-redef]
from mcp.types import ToolAnnotations

SERVER_NAME = "exchange"

# WARNING: keep the per-request INFO lines out of the test output (they go to stderr).
mcp = FastMCP(SERVER_NAME, log_level="WARNING")

READ = ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)
WRITE = ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False, openWorldHint=True)
DESTRUCTIVE = ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=False, openWorldHint=True)


def _count(tool: str) -> None:
    path = os.environ.get("COUNTER_FILE")
    if path:
        # One short append per call: O_APPEND keeps the line whole even if calls overlap.
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{tool}\n")


@mcp.tool(annotations=READ)
def get_balance(asset: str) -> str:
    """Return the free balance of one asset."""
    _count("get_balance")
    return f"{asset}: 1.5"


@mcp.tool(annotations=WRITE)
def create_listen_key() -> str:
    """Create a user-data stream listen key."""
    _count("create_listen_key")
    return "listen-key-0001"


@mcp.tool(annotations=WRITE)
def place_order(symbol: str, side: str, amount: float) -> str:
    """Place a market order."""
    _count("place_order")
    return f"order placed: {side} {amount:g} {symbol}"


@mcp.tool(annotations=DESTRUCTIVE)
def withdraw(asset: str, amount: float, address: str) -> str:
    """Withdraw funds to an external address."""
    _count("withdraw")
    return f"withdrew {amount:g} {asset} to {address}"


@mcp.tool(annotations=DESTRUCTIVE)
def delete_api_key(key_id: str) -> str:
    """Delete an API key."""
    _count("delete_api_key")
    return f"deleted {key_id}"


@mcp.tool(annotations=READ)
def flaky() -> str:
    """Always fails: FastMCP turns the exception into an MCP result with isError=True."""
    _count("flaky")
    raise ToolError("upstream exploded")


# -- helpers for tests ---------------------------------------------------------------------------------


def server_params(counter_file: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``MultiServerMCPClient`` stdio connection dict that starts this server counting into ``counter_file``."""
    return {
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(Path(__file__).resolve())],
        "env": {"COUNTER_FILE": str(counter_file), "PATH": os.environ.get("PATH", "")},
    }


def read_counts(counter_file: str | os.PathLike[str]) -> collections.Counter[str]:
    """How many calls each tool has received so far (an empty Counter if none)."""
    path = Path(counter_file)
    if not path.exists():
        return collections.Counter()
    return collections.Counter(line for line in path.read_text(encoding="utf-8").splitlines() if line)


def serve_streamable_http(port: int) -> None:
    """Serve over streamable HTTP on 127.0.0.1:``port`` at ``/mcp``, with either major version of the mcp SDK."""
    settings = getattr(mcp, "settings", None)
    if hasattr(settings, "port"):  # mcp 1.x: host and port are server settings
        settings.host = "127.0.0.1"  # type: ignore[union-attr]
        settings.port = port  # type: ignore[union-attr]
        mcp.run("streamable-http")
    else:  # mcp 2.x: they are arguments of run()
        mcp.run("streamable-http", host="127.0.0.1", port=port)  # type: ignore[call-arg]


if __name__ == "__main__":
    # ``counter_server.py`` speaks stdio; ``counter_server.py --http PORT`` serves streamable HTTP on loopback.
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        serve_streamable_http(int(sys.argv[2]))
    else:
        mcp.run("stdio")
