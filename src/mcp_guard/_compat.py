"""Reading and building framework objects across the versions we support (mcp 1.x and 2.x).

mcp 2 renamed the camelCase fields of its types to snake_case (``CallToolResult.isError`` became
``is_error``, ``Tool.inputSchema`` became ``input_schema``, ``ToolAnnotations.readOnlyHint`` became
``read_only_hint``). Reading only one name made a failed call look successful (audited ``ok``, its quota
kept). Every place that reads or builds these objects goes through this module; the wire form (camelCase
JSON) is what both major versions parse, so results are built by validating that form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def result_is_error(value: Any) -> bool:
    """True for an MCP ``CallToolResult`` marked as an error (either spelling) or a LangChain error ``ToolMessage``."""
    if getattr(value, "isError", None) is True or getattr(value, "is_error", None) is True:
        return True
    if isinstance(value, dict):  # a result already dumped to JSON-like data
        return value.get("isError") is True or value.get("is_error") is True
    return getattr(value, "status", None) == "error"


def error_result(text: str) -> Any:
    """An MCP ``CallToolResult`` marked as an error whose one text part is ``text``, on mcp 1 and mcp 2."""
    from mcp.types import CallToolResult

    # model_validate on the wire form: mcp 1 names the field isError, mcp 2 is_error with the wire alias.
    return CallToolResult.model_validate({"content": [{"type": "text", "text": text}], "isError": True})


def tool_input_schema(tool: Any) -> Mapping[str, Any] | None:
    """An MCP ``Tool``'s declared input schema (``inputSchema`` on mcp 1, ``input_schema`` on mcp 2), or None."""
    for name in ("inputSchema", "input_schema"):
        schema = getattr(tool, name, None)
        if isinstance(schema, Mapping):
            return schema
    return None


def tool_annotations(raw: Any) -> dict[str, Any] | None:
    """MCP ``ToolAnnotations`` (object or dict) as a camelCase dict (``readOnlyHint``...), or None when empty."""
    if raw is None:
        return None
    if isinstance(raw, Mapping):  # the wire form (the relay) or a dump: declared hints only
        return {_camel(k): v for k, v in raw.items() if v is not None} or None
    dump = getattr(raw, "model_dump", None)
    if not callable(dump):
        return None
    try:
        dumped = dump(by_alias=True, exclude_none=True)
    except TypeError:
        dumped = dump()
    if not isinstance(dumped, dict):
        return None
    return {_camel(k): v for k, v in dumped.items() if v is not None} or None


def _camel(name: Any) -> Any:
    # mcp 2 without aliases dumps read_only_hint: policies and audit speak the protocol's readOnlyHint.
    if not isinstance(name, str) or "_" not in name or name.startswith("_"):
        return name
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)
