"""Reading framework result objects across the versions we support (mcp 1.x and 2.x).

mcp 2 renamed ``CallToolResult.isError`` to ``is_error`` (snake_case fields throughout); reading only one
name made a failed call look successful (audited ``ok``, its quota kept). Every place that asks whether a
result is an error goes through :func:`result_is_error`.
"""

from __future__ import annotations

from typing import Any


def result_is_error(value: Any) -> bool:
    """True for an MCP ``CallToolResult`` marked as an error (either spelling) or a LangChain error ``ToolMessage``."""
    if getattr(value, "isError", None) is True or getattr(value, "is_error", None) is True:
        return True
    if isinstance(value, dict):  # a result already dumped to JSON-like data
        return value.get("isError") is True or value.get("is_error") is True
    return getattr(value, "status", None) == "error"
