"""An MCP test server that records every call it *runs*, with the arguments after its own pydantic coercion.

Run it over stdio (``python recording_server.py``); each tool appends one JSON line
``{"tool": ..., "args": {...}}`` to the file named by ``RECORD_FILE`` before doing anything else. The
arguments are the ones the tool function received, after FastMCP validated (and coerced) the model's
raw JSON: ``"force": "true"`` arrives as ``True``, ``"leverage": "100"`` as ``100``, an ``order`` sent as
a JSON string as an ``Order``. A test that reads this file sees what the tool ran with, which is the only
fair judge of a guard: the guard's own view is what is under test.

Imports FastMCP from ``mcp.server.fastmcp`` (mcp 1.x) and falls back to mcp 2's
``mcp.server.mcpserver.MCPServer``. Not for production use.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

try:
    from mcp.server.fastmcp import FastMCP as _Server
except ImportError:  # mcp 2: FastMCP became MCPServer
    from mcp.server.mcpserver import MCPServer as _Server  # type: ignore[no-redef]

from mcp.types import ToolAnnotations

SERVER_NAME = "exchange"

try:
    mcp: Any = _Server(SERVER_NAME, log_level="WARNING")
except TypeError:  # a version without the log_level setting
    mcp = _Server(SERVER_NAME)

READ = ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)
WRITE = ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False, openWorldHint=True)
DESTRUCTIVE = ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=False, openWorldHint=True)


class Order(BaseModel):
    symbol: str
    qty: int


def _record(tool: str, args: dict[str, Any]) -> None:
    path = os.environ.get("RECORD_FILE")
    if path:
        line = json.dumps({"tool": tool, "args": args}, default=str, allow_nan=True)
        with open(path, "a", encoding="utf-8") as fh:  # one short append per call: lines stay whole
            fh.write(line + "\n")


@mcp.tool(annotations=WRITE)
def transfer(amount: int, force: bool = False, leverage: int = 1, order: Order | None = None, memo: str = "") -> str:
    """Move money: ``amount`` units, optionally forced, with leverage and an order attached."""
    _record(
        "transfer",
        {
            "amount": amount,
            "force": force,
            "leverage": leverage,
            "order": None if order is None else order.model_dump(),
            "memo": memo,
        },
    )
    return f"moved {amount}"


@mcp.tool(annotations=DESTRUCTIVE)
def withdraw(asset: str, amount: float) -> str:
    """Withdraw funds to an external address."""
    _record("withdraw", {"asset": asset, "amount": amount})
    return f"withdrew {amount:g} {asset}"


@mcp.tool(annotations=READ)
def get_balance(asset: str) -> str:
    """Return the free balance of one asset."""
    _record("get_balance", {"asset": asset})
    return f"{asset}: 1.5"


@mcp.tool(annotations=DESTRUCTIVE)
def admin_reset() -> str:
    """Reset the account (hidden by the attack tests' policies)."""
    _record("admin_reset", {})
    return "reset"


@mcp.tool(annotations=WRITE)
def fail(amount: int) -> str:
    """Always fails after recording: the server answers with an MCP error result (isError / is_error)."""
    _record("fail", {"amount": amount})
    raise RuntimeError("upstream exploded")


# -- helpers for tests ---------------------------------------------------------------------------------


def server_params(record_file: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``MultiServerMCPClient`` stdio connection dict that starts this server recording into ``record_file``."""
    return {
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(Path(__file__).resolve())],
        "env": {"RECORD_FILE": str(record_file), "PATH": os.environ.get("PATH", "")},
    }


def read_record(record_file: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every call the server ran so far, in order: ``[{"tool": ..., "args": {...}}, ...]``."""
    path = Path(record_file)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


if __name__ == "__main__":
    mcp.run("stdio")
