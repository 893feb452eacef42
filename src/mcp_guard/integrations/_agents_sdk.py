"""What the Agents SDK adapter reads of the SDK's internals, in one place, so an SDK upgrade touches one file.

Each helper degrades to the documented behaviour when the SDK changes (no run id, the documented prefixed
tool name, no approval status), never to a failed call. The private SDK functions the adapter *replaces* are
listed in :mod:`mcp_guard.integrations._agents_private`. The adapter itself
(:mod:`mcp_guard.integrations.openai_agents`) uses only these two modules and the SDK's public objects.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("mcp_guard")


def run_id() -> str | None:
    """The Agents SDK's id for this run: its trace id, when tracing is on (the SDK has no other run id)."""
    try:
        from agents.tracing import get_current_trace

        trace = get_current_trace()
    except Exception:  # another SDK version: no run id rather than a failed call
        return None
    trace_id = getattr(trace, "trace_id", None)
    return trace_id if isinstance(trace_id, str) and trace_id != "no-op" else None


def prefixed_names(server: str, tool: str) -> tuple[str, ...]:
    """The names the SDK gives ``tool`` of ``server`` when it prefixes MCP tool names (its own naming rule)."""
    try:
        from agents.mcp._logging import get_mcp_server_log_name
        from agents.mcp.util import MCPUtil

        name = get_mcp_server_log_name(server)
        base = MCPUtil._build_prefixed_tool_base_name(name, tool)
        return (base, MCPUtil._shorten_tool_name(base, f"{name}\0{tool}"))
    except Exception:  # another SDK version: fall back to the documented shape
        return (f"mcp_{server}__{tool}",)


def approval_status(ctx: Any, tool: str, call_id: str) -> bool | None:
    """What a human said about this call through the SDK (``state.approve`` / ``state.reject``), if anything."""
    if not getattr(ctx, "_approvals", True):  # nothing was approved or rejected in this run: skip the lookup
        return None
    is_approved = getattr(ctx, "is_tool_approved", None)
    if not callable(is_approved):
        return None
    status = is_approved(tool, call_id)
    return status if isinstance(status, bool) else None


def rejections(run_context: Any) -> list[tuple[str, str, dict[str, str]]]:
    """The calls a human rejected with ``state.reject()`` in this run: (public tool name, call id, the record's
    rejection messages by call id, which the SDK then shows the model)."""
    found: list[tuple[str, str, dict[str, str]]] = []
    for key, record in list((getattr(run_context, "_approvals", None) or {}).items()):
        rejected = getattr(record, "rejected", None)
        if isinstance(rejected, list) and rejected and isinstance(key, str):
            found.extend((_approval_tool_name(key), call_id, record.rejection_messages) for call_id in rejected)
    return found


def _approval_tool_name(key: str) -> str:
    """The tool name of an SDK approval-record key (an agent-bound key object, its serialized form, or a name)."""
    tool_key = getattr(key, "tool_key", None)
    if isinstance(tool_key, str):
        return tool_key
    prefix = "__agents_function_approval__:"
    if key.startswith(prefix):
        try:
            parts = json.loads(key[len(prefix) :])
        except ValueError:
            return key
        if isinstance(parts, list) and len(parts) == 2 and isinstance(parts[1], str):
            return parts[1]
    return key


def mcp_function_tool(tool: Any, server: Any, agent: Any, name: str) -> Any:
    """The SDK's FunctionTool for MCP ``tool`` of ``server``, as the agent would build it, named ``name``."""
    from agents.mcp.util import MCPUtil

    config = getattr(agent, "mcp_config", None) or {}
    options: dict[str, Any] = {"tool_name_override": name}
    if "failure_error_function" in config:
        options["failure_error_function"] = config["failure_error_function"]
    return MCPUtil.to_function_tool(
        tool, server, bool(config.get("convert_schemas_to_strict", False)), agent, **options
    )
