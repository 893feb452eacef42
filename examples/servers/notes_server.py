"""A second, tiny MCP server (stdio): a notebook of text notes kept in memory.

It exists so ``mcp-guard init`` is shown (and tested) against a server other than the exchange demo, one
whose tools mix annotated and unannotated tools the way real servers do.
"""

from __future__ import annotations

# ToolError, not ValueError, for failures the model should read: mcp 2 hides any other exception's text.
try:  # mcp 2.x renamed FastMCP to MCPServer
    from mcp.server.mcpserver import MCPServer as FastMCP
    from mcp.server.mcpserver.exceptions import ToolError
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import FastMCP  # type: ignore[no-redef]
    from mcp.server.fastmcp.exceptions import ToolError  # type: ignore[no-redef]
from mcp.types import ToolAnnotations

mcp = FastMCP("notes", log_level="WARNING")

NOTES: dict[str, str] = {"welcome": "Notes live in memory and vanish when the server stops."}


@mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))
def list_notes() -> list[str]:
    """Titles of all notes."""
    return sorted(NOTES)


@mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))
def read_note(title: str) -> str:
    """The text of one note."""
    if title not in NOTES:
        raise ToolError(f"no note {title!r}")
    return NOTES[title]


@mcp.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False))
def add_note(title: str, text: str) -> str:
    """Add a note (an existing title is an error, so nothing is overwritten)."""
    if title in NOTES:
        raise ToolError(f"note {title!r} exists")
    NOTES[title] = text
    return title


@mcp.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=True))
def delete_note(title: str) -> str:
    """Delete a note for good."""
    NOTES.pop(title, None)
    return title


@mcp.tool()
def search_web(query: str) -> str:
    """Pretend to search the web. Unannotated on purpose: MCP says to assume it may be destructive."""
    return f"no results for {query!r} (this demo server is offline)"


if __name__ == "__main__":
    mcp.run("stdio")
