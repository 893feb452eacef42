"""An MCP server for the proxy tests that records every tool call it RECEIVES, with its arguments.

Each call appends one JSON line ``{"tool": ..., "args": {...}}`` to the file named by ``RECORD_FILE`` before
doing anything else: that file, not any guard's bookkeeping, is what the tests judge by. At start-up the
server writes its process id to ``PID_FILE`` (when set), so a test can prove the proxy ended it.

``python proxy_upstream_server.py`` serves stdio; ``python proxy_upstream_server.py --http PORT`` serves streamable
HTTP on 127.0.0.1:PORT at ``/mcp``. Besides tools it has a resource, a resource template and a prompt, so
the proxy's pass-through of those can be checked. Not for production use.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from mcp.server.fastmcp import FastMCP
from mcp.types import CallToolResult, TextContent, ToolAnnotations

SERVER_NAME = "notes"

mcp = FastMCP(SERVER_NAME, log_level="WARNING")

READ = ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)
WRITE = ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False, openWorldHint=False)
DESTRUCTIVE = ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=False, openWorldHint=False)


def _record(tool: str, args: dict[str, Any]) -> None:
    path = os.environ.get("RECORD_FILE")
    if path:
        # One short O_APPEND write per call keeps lines whole when several processes record into one file.
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"tool": tool, "args": args}) + "\n")


@mcp.tool(annotations=READ)
def echo(text: str) -> str:
    """Return the text unchanged."""
    _record("echo", {"text": text})
    return text


@mcp.tool(annotations=WRITE)
def write_note(text: str) -> str:
    """Store a note."""
    _record("write_note", {"text": text})
    return f"stored: {text}"


@mcp.tool(annotations=DESTRUCTIVE)
def delete_notes(folder: str) -> str:
    """Delete every note in a folder."""
    _record("delete_notes", {"folder": folder})
    return f"deleted {folder}"


@mcp.tool(annotations=DESTRUCTIVE)
def purge(folder: str) -> str:
    """Erase a folder for good (no tool rule names it: the tests reach it through ``classes``)."""
    _record("purge", {"folder": folder})
    return f"purged {folder}"


@mcp.tool(annotations=WRITE)
def publish(text: str) -> str:
    """Publish a note to the world (the tests put it behind an approval)."""
    _record("publish", {"text": text})
    return f"published: {text}"


@mcp.tool(annotations=READ)
def fail(text: str) -> CallToolResult:
    """Always answers with an MCP error result (``isError``), as a tool that failed does."""
    _record("fail", {"text": text})
    return CallToolResult(isError=True, content=[TextContent(type="text", text=f"could not {text}")])


@mcp.resource("notes://readme", mime_type="text/plain")
def readme() -> str:
    """The notes read-me."""
    return "read me first"


@mcp.resource("notes://by-name/{name}")
def note(name: str) -> str:
    """One note by name."""
    return f"note {name}"


@mcp.prompt()
def summarise(topic: str) -> str:
    """Ask for a summary of a topic."""
    return f"Summarise {topic} in one line."


# -- helpers for tests ---------------------------------------------------------------------------------


def command() -> list[str]:
    """The command line that starts this server over stdio."""
    return [sys.executable, str(Path(__file__).resolve())]


def read_record(record_file: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every call the server has received so far, in order."""
    path = Path(record_file)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


if __name__ == "__main__":
    pid_file = os.environ.get("PID_FILE")
    if pid_file:
        Path(pid_file).write_text(str(os.getpid()), encoding="utf-8")
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        mcp.settings.host = "127.0.0.1"
        mcp.settings.port = int(sys.argv[2])
        mcp.run("streamable-http")
    else:
        mcp.run("stdio")
