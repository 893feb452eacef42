"""A small MCP server for the inbox tests that records every call it receives, with its arguments.

Run it as a subprocess over stdio. Each call appends one JSON line ``{"tool": ..., "args": {...}}`` to the file
named by ``RECORD_FILE`` before anything else, so a test proves which calls (and which arguments) reached the
server without trusting the guard's own view. Not for production use: it moves no money.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from mcp.server.fastmcp import FastMCP
from mcp.types import ToolAnnotations

mcp = FastMCP("exchange", log_level="WARNING")


def _record(tool: str, args: dict[str, Any]) -> None:
    path = os.environ.get("RECORD_FILE")
    if path:
        # One short append per call (O_APPEND): lines from several server processes stay whole.
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"tool": tool, "args": args}) + "\n")


@mcp.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False))
def place_order(symbol: str, amount: float, account: str, note: str = "") -> str:
    """Place a market order for ``amount`` USD of ``symbol`` on ``account``."""
    _record("place_order", {"symbol": symbol, "amount": amount, "account": account, "note": note})
    return f"order placed: {amount:g} USD of {symbol}"


def server_params(record_file: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``MultiServerMCPClient`` stdio connection that starts this server recording into ``record_file``."""
    return {
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(Path(__file__).resolve())],
        "env": {"RECORD_FILE": str(record_file), "PATH": os.environ.get("PATH", "")},
    }


def read_record(record_file: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every call the servers received so far, in order."""
    path = Path(record_file)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


if __name__ == "__main__":
    mcp.run("stdio")
